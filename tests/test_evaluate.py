"""Metrics of geosdm.evaluate: each against a hand-computed case and, where one exists, scikit-learn."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from geosdm.errors import InputError
from geosdm.evaluate import (
    boyce_index,
    boyce_table,
    brier_score,
    ece_from_sums,
    expected_calibration_error,
    f1_top_k,
    log_loss,
    pr_auc,
    reliability_curve,
    reliability_sums,
    roc_auc,
    species_metrics,
    summary,
    threshold_at_sensitivity,
    threshold_max_tss,
    top_k_table,
    tss,
)


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a lazy path computed")


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes from known probabilities, scores rounded to 2 decimals (many ties), weights."""
    rng = np.random.default_rng(0)
    p = rng.beta(1.2, 4.0, 600)
    y = (rng.uniform(size=p.size) < p).astype(float)
    s = np.round(np.clip(p + rng.normal(0, 0.1, p.size), 0, 1), 2)
    w = rng.uniform(0.5, 2.0, p.size)
    return y, s, w


# ------------------------------------------------------------------------------------ discrimination


def test_roc_and_pr_auc_hand_cases() -> None:
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # positive 0.35 beats one of two negatives, 0.8 beats both: 3 of 4 pairs
    assert roc_auc(y, s) == 0.75
    # ranks 0.8 (P=1, R=.5), 0.4 (P=.5), 0.35 (P=2/3, R=1): AP = .5 * 1 + .5 * 2/3
    assert pr_auc(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count one half
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3])) and np.isnan(pr_auc([0, 0], [0.2, 0.3]))
    assert roc_auc([0, 1, np.nan], [0.1, 0.9, 0.5]) == 1.0  # NaN pairs left out


def test_roc_and_pr_auc_match_sklearn(scores: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, w = scores
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert roc_auc(y, s, sample_weight=w) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert pr_auc(y, s, sample_weight=w) == pytest.approx(skm.average_precision_score(y, s, sample_weight=w),
                                                          abs=1e-12)


def test_tss_and_thresholds() -> None:
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert tss(y, s, threshold=0.35) == 0.5  # sensitivity 1, specificity 1/2
    assert tss(y, s, threshold=0.8) == 0.5  # sensitivity 1/2, specificity 1
    assert tss(y, s, threshold=0.4) == 0.0
    best = threshold_max_tss(y, s)
    assert (best.threshold, best.tss, best.sensitivity, best.specificity) == (0.8, 0.5, 0.5, 1.0)
    at = threshold_at_sensitivity(y, s, sensitivity=0.9)
    assert (at.threshold, at.sensitivity, at.specificity) == (0.35, 1.0, 0.5)
    with pytest.raises(InputError, match="sensitivity"):
        threshold_at_sensitivity(y, s, sensitivity=0)


def test_max_tss_matches_sklearn_roc_curve(scores: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, s, _ = scores
    fpr, tpr, thr = skm.roc_curve(y, s)
    k = int(np.argmax(tpr - fpr))
    best = threshold_max_tss(y, s)
    assert best.tss == pytest.approx(tpr[k] - fpr[k])
    assert best.threshold == pytest.approx(thr[k])
    assert tss(y, s, threshold=best.threshold) == pytest.approx(best.tss)
    at = threshold_at_sensitivity(y, s, sensitivity=0.9)
    assert at.sensitivity >= 0.9 and tss(y, s, threshold=at.threshold) == pytest.approx(at.tss)
    higher = np.unique(s)[np.unique(s) > at.threshold]  # the next higher threshold loses too many presences
    assert ((s[y == 1] >= higher[0]).mean() < 0.9) if higher.size else True


def _boyce_reference(pres: np.ndarray, bg: np.ndarray, res: int = 100) -> float:
    """ecospat.boyce written out as in R (closed windows, successive duplicates removed, Spearman)."""
    from scipy.stats import spearmanr

    w = (bg.max() - bg.min()) / 10
    mini, maxi = min(bg.min(), pres.min()), max(bg.max(), pres.max())
    starts = np.arange(res + 1) * (maxi - mini - w) / res + mini
    f = []
    for a in starts:
        pi = np.mean((pres >= a) & (pres <= a + w))
        ei = np.mean((bg >= a) & (bg <= a + w))
        f.append(round(pi / ei, 10) if ei > 0 else np.nan)
    f, x = np.array(f), starts
    keep = np.isfinite(f)
    f, x = f[keep], x[keep]
    r = f != np.r_[f[1:], np.inf]
    return float(spearmanr(f[r], x[r])[0])


def test_boyce_index_hand_case_and_reference() -> None:
    # background 0..1 in 0.1 steps, presences only above 0.5: windows (width 0.1) at the top hold presences,
    # the bottom ones F = 0 (kept once); F rises with the score: a clearly positive index
    bg = np.linspace(0, 1, 11)
    pres = np.array([0.6, 0.7, 0.8, 0.9, 0.9, 1.0, 1.0])
    b = boyce_index(pres, bg)
    assert b == pytest.approx(_boyce_reference(pres, bg), abs=1e-12)
    assert b > 0.8
    assert boyce_index(1 - pres, bg) < -0.8  # presences where the score is low
    rng = np.random.default_rng(1)
    bg = rng.uniform(size=2000)
    pres = np.sqrt(rng.uniform(size=300))  # density increasing with the score
    assert boyce_index(pres, bg) == pytest.approx(_boyce_reference(pres, bg), abs=1e-12)
    assert boyce_index(pres, bg) > 0.9
    assert np.isnan(boyce_index([], bg))


def test_brier_and_log_loss_hand_and_sklearn(scores: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    assert brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.04 + 0.16) / 2)
    assert log_loss([0, 1], [0.2, 0.6]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert brier_score([0.1, 0.5], [0.2, 0.6]) == pytest.approx(0.01)  # against a true probability
    y, s, w = scores
    p = np.clip(s, 0.01, 0.99)
    assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    assert brier_score(y, p, sample_weight=w) == pytest.approx(skm.brier_score_loss(y, p, sample_weight=w))
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p))
    assert log_loss(y, p, sample_weight=w) == pytest.approx(skm.log_loss(y, p, sample_weight=w))
    with pytest.raises(InputError, match="0/1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="aligned"):
        brier_score([0, 1, 1], [0.1, 0.2])


# ----------------------------------------------------------------------------------------- calibration


def test_reliability_and_ece_hand_case() -> None:
    y, p = [0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]
    c = reliability_curve(y, p, n_bins=2)
    assert c["mean_predicted"].tolist() == pytest.approx([0.15, 0.8])
    assert c["mean_observed"].tolist() == [0.0, 1.0]
    assert c["count"].tolist() == [2, 2]
    # ECE = 2/4 * |0.15 - 0| + 2/4 * |0.8 - 1|
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.15 + 0.5 * 0.2)
    # against a true probability: predictions 0.3 where the truth is 0.2 and 0.4 -> no error in the bin
    assert expected_calibration_error([0.2, 0.4], [0.3, 0.3], n_bins=10) == pytest.approx(0.0)
    assert expected_calibration_error([0.2, 0.4], [0.25, 0.35], n_bins=10) == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    # an edge value goes to the lower bin, as scikit-learn
    assert reliability_curve([1], [0.5], n_bins=2)["bin"].tolist() == [0]


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn(scores: tuple[np.ndarray, np.ndarray, np.ndarray], strategy: str) -> None:
    y, s, _ = scores
    prob_true, prob_pred = calibration_curve(y, s, n_bins=8, strategy=strategy)
    c = reliability_curve(y, s, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(c["mean_observed"], prob_true, atol=1e-12)
    np.testing.assert_allclose(c["mean_predicted"], prob_pred, atol=1e-12)
    ece = float(np.sum(c["count"] * np.abs(c["mean_predicted"] - c["mean_observed"])) / c["count"].sum())
    assert expected_calibration_error(y, s, n_bins=8, strategy=strategy) == pytest.approx(ece)


def test_reliability_sums_are_lazy_and_match_eager() -> None:
    rng = np.random.default_rng(2)
    t = rng.uniform(size=(3, 20, 30))
    p = np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1)
    p[:, :4, :4] = np.nan
    coords = {"species": ["a", "b", "c"], "y": np.arange(20.0), "x": np.arange(30.0)}
    truth = xr.DataArray(t, dims=("species", "y", "x"), coords=coords).chunk({"y": 10, "x": 10})
    pred = xr.DataArray(p, dims=("species", "y", "x"), coords=coords).chunk({"y": 10, "x": 15})
    with dask.config.set(scheduler=_no_compute):
        sums = reliability_sums(truth, pred)
    sums = sums.compute()
    assert sums.shape == (3, 3, 10)
    ok = np.isfinite(p)
    assert ece_from_sums(sums.sum(0)) == pytest.approx(expected_calibration_error(t[ok], p[ok]))
    per = ece_from_sums(sums)
    assert per[1] == pytest.approx(expected_calibration_error(t[1][ok[1]], p[1][ok[1]]))


# ----------------------------------------------------------------------------------------- multi-label


def test_f1_top_k_hand_case_and_sklearn() -> None:
    y = [[1, 0, 1], [0, 1, 0]]
    s = [[0.9, 0.5, 0.1], [0.2, 0.8, 0.3]]
    # site 1: top-1 {0}, observed {0, 2}: F1 = 2*1/(1+2); site 2: top-1 {1} = observed: F1 = 1
    assert f1_top_k(y, s, k=1) == pytest.approx((2 / 3 + 1) / 2)
    # top-2: site 1 {0, 1} vs {0, 2}: 2*1/4; site 2 {1, 2} vs {1}: 2*1/3
    assert f1_top_k(y, s, k=2) == pytest.approx((0.5 + 2 / 3) / 2)
    rng = np.random.default_rng(3)
    Y = (rng.uniform(size=(200, 30)) < 0.15).astype(float)
    S = rng.uniform(size=Y.shape) + Y * 0.3
    Y[Y.sum(axis=1) == 0, 0] = 1  # sklearn's samples average counts sites without observations as 0
    for k in (1, 5, 10):
        top = np.argsort(-S, axis=1, kind="stable")[:, :k]
        pred = np.zeros_like(Y)
        np.put_along_axis(pred, top, 1, axis=1)
        assert f1_top_k(Y, S, k=k) == pytest.approx(skm.f1_score(Y, pred, average="samples"))
    Y2 = Y.copy()
    Y2[:10] = 0
    assert f1_top_k(Y2, S, k=5, empty="zero") < f1_top_k(Y2, S, k=5)  # empty sites count 0 or are skipped
    ynan = np.array([[1.0, np.nan, 0.0]])
    assert f1_top_k(ynan, [[0.1, 0.9, 0.2]], k=1) == 0.0  # the unsurveyed species is never ranked: top-1 is 2


def test_species_metrics_per_species_macro_micro_and_folds() -> None:
    rng = np.random.default_rng(4)
    n, names = 300, ["sp_a", "sp_b", "sp_c"]
    P = pd.DataFrame(rng.uniform(0.01, 0.6, (n, 3)), columns=names)
    Y = pd.DataFrame((rng.uniform(size=(n, 3)) < P.to_numpy()).astype(float), columns=names)
    Y.iloc[:20, 2] = np.nan  # sp_c not surveyed at 20 sites
    folds = np.repeat([0, 1, 2], n // 3)
    t = species_metrics(Y, P, folds=folds)
    assert set(t["fold"]) == {"all", "0", "1", "2"}
    assert len(t) == 4 * 5
    a = t[t["fold"] == "all"].set_index("species")
    assert a.loc["sp_a", "roc_auc"] == pytest.approx(skm.roc_auc_score(Y["sp_a"], P["sp_a"]))
    ok = Y["sp_c"].notna()
    assert a.loc["sp_c", "n"] == n - 20
    assert a.loc["sp_c", "brier"] == pytest.approx(skm.brier_score_loss(Y["sp_c"][ok], P["sp_c"][ok]))
    assert a.loc["macro", "roc_auc"] == pytest.approx(a.loc[names, "roc_auc"].mean())
    y_all, p_all = Y.to_numpy().ravel(), P.to_numpy().ravel()
    keep = np.isfinite(y_all)
    assert a.loc["micro", "roc_auc"] == pytest.approx(skm.roc_auc_score(y_all[keep], p_all[keep]))
    assert a.loc["micro", "ece"] == pytest.approx(expected_calibration_error(y_all[keep], p_all[keep]))
    f1 = t[(t["fold"] == "1") & (t["species"] == "sp_b")].iloc[0]
    sel = folds == 1
    assert f1["log_loss"] == pytest.approx(skm.log_loss(Y["sp_b"][sel], P["sp_b"][sel]))
    s = summary(t)
    assert {"macro", "micro", "macro fold mean", "macro fold sd"} <= set(s.index)
    tk = top_k_table(Y, P, k=[1, 2], folds=folds)
    assert len(tk) == 8 and tk.loc[(tk.fold == "all") & (tk.k == 1), "f1"].iloc[0] == pytest.approx(
        f1_top_k(Y.to_numpy(), P.to_numpy(), k=1))
    with pytest.raises(InputError, match="same sites"):
        species_metrics(Y, P.iloc[:, :2])


def test_boyce_table_per_species_and_fold() -> None:
    rng = np.random.default_rng(5)
    bg = pd.DataFrame({"a": rng.uniform(size=400), "b": rng.uniform(size=400), "fold": np.repeat([0, 1], 200)})
    po = pd.DataFrame({"species": ["a"] * 60 + ["b"] * 60,
                       "score": np.r_[np.sqrt(rng.uniform(size=60)), rng.uniform(size=60) ** 2],
                       "fold": np.tile([0, 1], 60)})
    t = boyce_table(po, bg)
    a = t[t["fold"] == "all"].set_index("species")
    assert a.loc["a", "boyce"] > 0.5 and a.loc["b", "boyce"] < 0
    assert a.loc["a", "boyce"] == pytest.approx(boyce_index(po.score[:60], bg["a"]))
    assert set(t["fold"]) == {"all", "0", "1"} and a.loc["macro", "n_presence"] == 120


def test_sensitivity_equals_specificity_and_fixed_cumulative_thresholds() -> None:
    from geosdm.evaluate import threshold_fixed_cumulative, threshold_sens_eq_spec

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(500), np.zeros(500)]
    score = np.r_[rng.normal(1, 1, 500), rng.normal(0, 1, 500)]
    th = threshold_sens_eq_spec(y, score)
    assert abs(th.sensitivity - th.specificity) < 0.01 and 0.3 < th.threshold < 0.7  # halfway between the means
    values = rng.uniform(0, 1, 10_000)
    t10 = threshold_fixed_cumulative(values, percent=10.0)
    below = np.sort(values)[np.sort(values) < t10]
    assert abs(below.sum() / values.sum() - 0.10) < 0.002
    with pytest.raises(InputError, match="percent"):
        threshold_fixed_cumulative(values, percent=0)
