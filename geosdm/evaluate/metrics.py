"""Binary and multi-label metrics of species distribution models, in NumPy (no scikit-learn needed).

Discrimination: :func:`roc_auc`, :func:`pr_auc` (average precision), :func:`tss` and the threshold rules
:func:`threshold_max_tss` / :func:`threshold_at_sensitivity`; presence-only data: :func:`boyce_index` (the
continuous Boyce index); probabilities: :func:`brier_score`, :func:`log_loss` (calibration metrics live in
:mod:`geosdm.evaluate.reliability`); multi-label: :func:`f1_top_k` (samples-averaged F1 of the top-K species,
the GeoPlant / GeoLifeCLEF metric).

Conventions: ``y_true`` holds 0/1 outcomes (Brier score and log loss also accept probabilities in [0, 1], e.g. a
known true probability); ``y_score`` is any score that ranks sites (probability, intensity, log-intensity); pairs
where either is NaN are left out. Metrics that are undefined on the data (an AUC with one class only) are NaN.
The definitions match scikit-learn's ``roc_auc_score``, ``average_precision_score``, ``brier_score_loss``,
``log_loss`` and ``f1_score(average="samples")`` (checked in the tests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from geosdm.errors import InputError

__all__ = [
    "Threshold",
    "binary_curve",
    "boyce_index",
    "brier_score",
    "f1_top_k",
    "log_loss",
    "pr_auc",
    "roc_auc",
    "threshold_at_sensitivity",
    "threshold_max_tss",
    "tss",
]


def _pairs(y_true: Any, y_score: Any, sample_weight: Any = None, *, binary: bool = True,
           name: str = "y_true") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D float arrays without NaN pairs; checks that ``y_true`` is 0/1 (``binary``) or within [0, 1]."""
    y = np.asarray(y_true, dtype="float64").ravel()
    s = np.asarray(y_score, dtype="float64").ravel()
    if y.shape != s.shape:
        raise InputError(f"{name} has {y.size} values but y_score has {s.size}; pass aligned arrays")
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype="float64").ravel()
    if w.shape != y.shape:
        raise InputError(f"sample_weight has {w.size} values for {y.size} pairs; pass one weight per pair")
    ok = np.isfinite(y) & ~np.isnan(s) & np.isfinite(w)
    y, s, w = y[ok], s[ok], w[ok]
    if binary and not np.isin(y, (0.0, 1.0)).all():
        raise InputError(f"{name} must hold 0/1 outcomes (NaN = not observed); got values such as "
                         f"{sorted(set(np.unique(y)) - {0.0, 1.0})[:3]}")
    if not binary:
        if ((y < -1e-6) | (y > 1 + 1e-6)).any():
            raise InputError(f"{name} must hold outcomes or probabilities in [0, 1]")
        y = np.clip(y, 0.0, 1.0)  # float32 rounding (e.g. -4e-20)
    if (w < 0).any():
        raise InputError("sample_weight must be >= 0")
    return y, s, w


def binary_curve(y_true: Any, y_score: Any, *, sample_weight: Any = None) -> dict[str, np.ndarray]:
    """Cumulative true/false positives at each distinct score, from the highest score down.

    Returns ``{"threshold", "tp", "fp", "positives", "negatives"}``: predicting presence where
    ``y_score >= threshold[k]`` gives ``tp[k]`` true and ``fp[k]`` false positives (weighted counts).

    Example
    -------
    >>> binary_curve([0, 1, 1], [0.1, 0.4, 0.8])["tp"].tolist()
    [1.0, 2.0, 2.0]
    """
    y, s, w = _pairs(y_true, y_score, sample_weight)
    order = np.argsort(-s, kind="mergesort")
    y, s, w = y[order], s[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1] if y.size else np.array([], dtype=int)
    tp = np.cumsum(y * w)[last]
    fp = np.cumsum((1.0 - y) * w)[last]
    return {"threshold": s[last], "tp": tp, "fp": fp, "positives": float((y * w).sum()),
            "negatives": float(((1.0 - y) * w).sum())}


def roc_auc(y_true: Any, y_score: Any, *, sample_weight: Any = None) -> float:
    """Area under the ROC curve (ties count one half; NaN with a single class).

    Example
    -------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    c = binary_curve(y_true, y_score, sample_weight=sample_weight)
    if c["positives"] <= 0 or c["negatives"] <= 0:
        return float("nan")
    tpr = np.r_[0.0, c["tp"] / c["positives"]]
    fpr = np.r_[0.0, c["fp"] / c["negatives"]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def pr_auc(y_true: Any, y_score: Any, *, sample_weight: Any = None) -> float:
    """Area under the precision-recall curve as average precision, ``sum_k (R_k - R_{k-1}) P_k`` (no
    interpolation, scikit-learn's ``average_precision_score``); NaN without positives.

    Example
    -------
    >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    c = binary_curve(y_true, y_score, sample_weight=sample_weight)
    if c["positives"] <= 0:
        return float("nan")
    precision = c["tp"] / np.maximum(c["tp"] + c["fp"], 1e-300)
    recall = c["tp"] / c["positives"]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class Threshold:
    """A presence threshold (predict presence where ``score >= threshold``) and what it gives."""

    threshold: float
    tss: float
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _rates(y_true: Any, y_score: Any, sample_weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    c = binary_curve(y_true, y_score, sample_weight=sample_weight)
    if c["positives"] <= 0 or c["negatives"] <= 0:
        return None
    return c["threshold"], c["tp"] / c["positives"], 1.0 - c["fp"] / c["negatives"]


_NAN_THRESHOLD = Threshold(float("nan"), float("nan"), float("nan"), float("nan"))


def tss(y_true: Any, y_score: Any, *, threshold: float, sample_weight: Any = None) -> float:
    """True skill statistic (sensitivity + specificity - 1) of predicting presence where ``score >= threshold``.

    Example
    -------
    >>> tss([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.35)
    0.5
    """
    y, s, w = _pairs(y_true, y_score, sample_weight)
    pos, neg = (y * w).sum(), ((1 - y) * w).sum()
    if pos <= 0 or neg <= 0:
        return float("nan")
    pred = s >= float(threshold)
    return float((pred * y * w).sum() / pos + ((~pred) * (1 - y) * w).sum() / neg - 1.0)


def threshold_max_tss(y_true: Any, y_score: Any, *, sample_weight: Any = None) -> Threshold:
    """The threshold that maximises the TSS (the highest such threshold on ties).

    Example
    -------
    >>> threshold_max_tss([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).threshold
    0.8
    """
    r = _rates(y_true, y_score, sample_weight)
    if r is None:
        return _NAN_THRESHOLD
    thr, sens, spec = r
    k = int(np.argmax(sens + spec - 1.0))
    return Threshold(float(thr[k]), float(sens[k] + spec[k] - 1.0), float(sens[k]), float(spec[k]))


def threshold_at_sensitivity(y_true: Any, y_score: Any, *, sensitivity: float = 0.9,
                             sample_weight: Any = None) -> Threshold:
    """The highest threshold that keeps at least ``sensitivity`` of the presences (e.g. 0.9: 10% omission).

    Example
    -------
    >>> threshold_at_sensitivity([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], sensitivity=1.0).threshold
    0.35
    """
    if not 0 < float(sensitivity) <= 1:
        raise InputError(f"sensitivity={sensitivity} must be in (0, 1]")
    r = _rates(y_true, y_score, sample_weight)
    if r is None:
        return _NAN_THRESHOLD
    thr, sens, spec = r
    k = int(np.flatnonzero(sens >= float(sensitivity) - 1e-12)[0])
    return Threshold(float(thr[k]), float(sens[k] + spec[k] - 1.0), float(sens[k]), float(spec[k]))


def threshold_sens_eq_spec(y_true: Any, y_score: Any, *, sample_weight: Any = None) -> Threshold:
    """The threshold where sensitivity equals specificity (the one minimising their difference; the higher on
    ties), Liu et al. (2005)'s ``sens = spec`` rule.

    Example
    -------
    >>> threshold_sens_eq_spec([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).threshold
    0.4
    """
    r = _rates(y_true, y_score, sample_weight)
    if r is None:
        return _NAN_THRESHOLD
    thr, sens, spec = r
    gap = np.abs(sens - spec)
    k = int(np.flatnonzero(gap <= gap.min() + 1e-12)[0])
    return Threshold(float(thr[k]), float(sens[k] + spec[k] - 1.0), float(sens[k]), float(spec[k]))


def threshold_fixed_cumulative(map_values: Any, *, percent: float = 10.0) -> float:
    """Maxent's "fixed cumulative value" rule on a probability map: the value below which the map's lowest cells
    hold ``percent`` % of its summed probability (cells with lower values are called absent).

    Example
    -------
    >>> threshold_fixed_cumulative([0.0, 0.1, 0.1, 0.2, 0.6], percent=10.0)
    0.1
    """
    if not 0 < float(percent) < 100:
        raise InputError(f"percent={percent} must be in (0, 100), e.g. 10 (Maxent's fixed cumulative value 10)")
    v = np.sort(np.asarray(map_values, dtype="float64").ravel())
    v = v[np.isfinite(v)]
    if v.size == 0 or v.sum() <= 0:
        return float("nan")
    cum = np.cumsum(v) / v.sum()
    return float(v[min(int(np.searchsorted(cum, float(percent) / 100.0)), v.size - 1)])


def boyce_index(presence_score: Any, background_score: Any, *, n_points: int = 101, window: float | None = None,
                drop_duplicates: bool = True) -> float:
    """Continuous Boyce index (Hirzel et al. 2006) of presence-only data, computed as ``ecospat.boyce``.

    A closed window ``[l, l + window]`` (default width: 1/10 of the background scores' range) slides over
    ``n_points`` left edges ``l`` evenly spaced from the lowest score to the highest score minus the width
    (presences and background together); in each window the predicted-to-expected ratio is
    ``F = (share of presences in it) / (share of background in it)``. The index is the Spearman correlation
    between window position and ``F`` over the windows holding background points; with ``drop_duplicates``
    a run of equal successive ``F`` values counts once (its last window, as ecospat's ``rm.duplicate``).
    Ranges from -1 to 1; > 0 means presences fall more often than expected where the score is high.

    Parameters
    ----------
    presence_score
        Scores at the presence records.
    background_score
        Scores over the study area (background points or every cell).

    Example
    -------
    >>> round(boyce_index(np.linspace(0, 1, 50) ** 0.5, np.linspace(0, 1, 101)), 2)
    0.98
    """
    from scipy.stats import spearmanr

    pres = np.asarray(presence_score, dtype="float64").ravel()
    bg = np.asarray(background_score, dtype="float64").ravel()
    pres, bg = pres[np.isfinite(pres)], bg[np.isfinite(bg)]
    if pres.size == 0 or bg.size == 0:
        return float("nan")
    lo, hi = float(min(pres.min(), bg.min())), float(max(pres.max(), bg.max()))
    w = (float(bg.max()) - float(bg.min())) / 10.0 if window is None else float(window)
    if window is not None and w <= 0:
        raise InputError(f"window={window} must be > 0 (score units)")
    if hi <= lo or w <= 0 or int(n_points) < 2:
        return float("nan")
    left = np.linspace(lo, max(hi - w, lo), int(n_points))
    ps, bs = np.sort(pres), np.sort(bg)

    def share(sorted_scores: np.ndarray) -> np.ndarray:
        n = np.searchsorted(sorted_scores, left + w, side="right") - np.searchsorted(sorted_scores, left, side="left")
        return n / sorted_scores.size

    expected = share(bs)
    keep = expected > 0
    f = np.round(share(ps)[keep] / expected[keep], 10)
    x = left[keep]
    if drop_duplicates and f.size:
        last = np.r_[np.diff(f) != 0, True]
        f, x = f[last], x[last]
    if f.size < 2 or np.all(f == f[0]):
        return float("nan")
    return float(spearmanr(x, f)[0])


def brier_score(y_true: Any, y_prob: Any, *, sample_weight: Any = None) -> float:
    """Mean squared difference between probability and outcome (or true probability); lower is better.

    Example
    -------
    >>> round(brier_score([0, 1], [0.2, 0.6]), 4)
    0.1
    """
    y, p, w = _pairs(y_true, y_prob, sample_weight, binary=False)
    if w.sum() <= 0:
        return float("nan")
    return float(np.average((p - y) ** 2, weights=w))


def log_loss(y_true: Any, y_prob: Any, *, sample_weight: Any = None, eps: float | None = None) -> float:
    """Mean negative log-likelihood ``-[y log p + (1 - y) log(1 - p)]`` with ``p`` clipped to ``[eps, 1 - eps]``
    (default: float64 machine epsilon, as scikit-learn); ``y`` may be a probability (cross-entropy).

    Example
    -------
    >>> round(log_loss([0, 1], [0.2, 0.6]), 4)
    0.367
    """
    y, p, w = _pairs(y_true, y_prob, sample_weight, binary=False)
    if w.sum() <= 0:
        return float("nan")
    e = float(np.finfo("float64").eps) if eps is None else float(eps)
    p = np.clip(p, e, 1.0 - e)
    return float(np.average(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)), weights=w))


def f1_top_k(y_true: Any, y_score: Any, *, k: int = 25, empty: str = "skip") -> float:
    """Samples-averaged F1 of the top-``k`` species: per site, the ``k`` highest-scored species against the
    observed ones, ``F1 = 2 |top-k ∩ observed| / (k' + |observed|)`` (``k'`` = species ranked, at most ``k``),
    averaged over sites (the GeoPlant / GeoLifeCLEF 2024 metric).

    Parameters
    ----------
    y_true
        ``(sites, species)`` 0/1; NaN = species not surveyed at the site (neither observed nor ranked).
    y_score
        ``(sites, species)`` scores; NaN scores are never ranked.
    k
        Species predicted per site.
    empty
        Sites without an observed species: ``"skip"`` (left out of the average) or ``"zero"`` (count F1 = 0).

    Example
    -------
    >>> f1_top_k([[1, 0, 1], [0, 1, 0]], [[0.9, 0.5, 0.1], [0.2, 0.8, 0.3]], k=1)
    0.8333333333333333
    """
    y = np.asarray(y_true, dtype="float64")
    s = np.asarray(y_score, dtype="float64")
    if y.ndim != 2 or y.shape != s.shape:
        raise InputError(f"y_true {y.shape} and y_score {s.shape} must be the same (sites, species) shape")
    if int(k) < 1:
        raise InputError(f"k={k} must be >= 1 species per site")
    if empty not in ("skip", "zero"):
        raise InputError(f"empty={empty!r} must be 'skip' or 'zero'")
    observed = np.nan_to_num(y, nan=0.0) > 0
    rankable = np.isfinite(y) & ~np.isnan(s)
    score = np.where(rankable, s, -np.inf)
    kk = min(int(k), s.shape[1])
    top = np.argsort(-score, axis=1, kind="stable")[:, :kk]
    hit = np.take_along_axis(observed, top, axis=1) & np.take_along_axis(rankable, top, axis=1)
    n_pred = np.take_along_axis(rankable, top, axis=1).sum(axis=1)
    n_obs = observed.sum(axis=1)
    denom = n_pred + n_obs
    f1 = np.where(denom > 0, 2.0 * hit.sum(axis=1) / np.maximum(denom, 1), 0.0)
    sites = n_obs > 0 if empty == "skip" else np.ones(len(f1), dtype=bool)
    return float(f1[sites].mean()) if sites.any() else float("nan")
