"""Metric tables of many species: per species, macro (mean over species), micro (pooled), per fold.

Inputs are wide ``(sites, species)`` frames: observed outcomes (0/1, NaN where a species was not surveyed) and
predicted probabilities on the same index and columns, plus an optional fold label per site. Tables are tidy
(one row per fold and species; ``fold="all"`` for every site, ``species="macro"``/``"micro"`` for the
summaries) so they filter, pivot and plot without reshaping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import InputError
from geosdm.evaluate.metrics import (
    boyce_index,
    brier_score,
    f1_top_k,
    log_loss,
    pr_auc,
    roc_auc,
    threshold_at_sensitivity,
    threshold_max_tss,
)
from geosdm.evaluate.reliability import expected_calibration_error

__all__ = ["METRICS", "boyce_table", "species_metrics", "summary", "top_k_table"]

#: Columns of :func:`species_metrics` besides ``fold``, ``species``, ``n``, ``n_presence``, ``prevalence``.
METRICS = ("roc_auc", "pr_auc", "tss_max", "threshold_max_tss", "tss_sens90", "threshold_sens90", "brier",
           "log_loss", "ece", "mean_predicted")


def _frames(y_true: Any, y_prob: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    y = y_true if isinstance(y_true, pd.DataFrame) else pd.DataFrame(np.asarray(y_true, dtype="float64"))
    p = y_prob if isinstance(y_prob, pd.DataFrame) else pd.DataFrame(np.asarray(y_prob, dtype="float64"),
                                                                     index=y.index, columns=y.columns)
    if list(y.columns) != list(p.columns) or len(y) != len(p):
        raise InputError(f"y_true {y.shape} and y_prob {p.shape} must have the same sites and species columns; "
                         "align them first (y_prob = y_prob.loc[y_true.index, y_true.columns])")
    return y.astype("float64"), p.astype("float64")


def _row(y: np.ndarray, p: np.ndarray, *, n_bins: int, sensitivity: float) -> dict[str, float]:
    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok], p[ok]
    n, pos = int(y.size), float(y.sum())
    out: dict[str, float] = {"n": n, "n_presence": pos, "prevalence": pos / n if n else np.nan}
    if n == 0:
        return out | {m: np.nan for m in METRICS}
    best = threshold_max_tss(y, p)
    sens = threshold_at_sensitivity(y, p, sensitivity=sensitivity)
    return out | {
        "roc_auc": roc_auc(y, p), "pr_auc": pr_auc(y, p), "tss_max": best.tss, "threshold_max_tss": best.threshold,
        "tss_sens90": sens.tss, "threshold_sens90": sens.threshold, "brier": brier_score(y, p),
        "log_loss": log_loss(y, p), "ece": expected_calibration_error(y, p, n_bins=n_bins),
        "mean_predicted": float(p.mean()),
    }


def _block(y: pd.DataFrame, p: pd.DataFrame, fold: Any, *, n_bins: int, sensitivity: float) -> list[dict[str, Any]]:
    rows = [{"fold": fold, "species": str(s), **_row(y[s].to_numpy(), p[s].to_numpy(), n_bins=n_bins,
                                                     sensitivity=sensitivity)} for s in y.columns]
    per = pd.DataFrame(rows)
    macro = {"fold": fold, "species": "macro", "n": float(per["n"].sum()), "n_presence": float(per["n_presence"].sum()),
             "prevalence": float(per["prevalence"].mean())}
    macro |= {m: float(per[m].mean()) if per[m].notna().any() else np.nan for m in METRICS}
    micro = {"fold": fold, "species": "micro", **_row(y.to_numpy().ravel(), p.to_numpy().ravel(), n_bins=n_bins,
                                                      sensitivity=sensitivity)}
    return rows + [macro, micro]


def species_metrics(y_true: Any, y_prob: Any, *, folds: Any = None, n_bins: int = 10,
                    sensitivity: float = 0.9) -> pd.DataFrame:
    """ROC AUC, PR AUC, TSS (max-TSS and fixed-sensitivity thresholds), Brier, log loss and ECE per species,
    macro-averaged, micro-averaged (all site-species pairs pooled), over all sites and per fold.

    Parameters
    ----------
    y_true
        ``(sites, species)`` observed 0/1 (NaN = not surveyed).
    y_prob
        ``(sites, species)`` predicted probabilities.
    folds
        Fold label per site (e.g. the spatial CV fold of held-out predictions); adds one block per fold.
    n_bins
        Uniform bins of the ECE.
    sensitivity
        Target sensitivity of the fixed-sensitivity threshold (columns ``tss_sens90``, ``threshold_sens90``).

    Returns
    -------
    pandas.DataFrame
        Columns ``fold`` (``"all"`` or the fold), ``species`` (names, ``"macro"``, ``"micro"``), ``n``,
        ``n_presence``, ``prevalence`` and :data:`METRICS`.

    Example
    -------
    >>> t = species_metrics(observed, held_out_probability, folds=sites["fold"])  # doctest: +SKIP
    >>> t.query("fold == 'all' and species == 'macro'")[["roc_auc", "tss_max", "ece"]]  # doctest: +SKIP
    """
    y, p = _frames(y_true, y_prob)
    rows = _block(y, p, "all", n_bins=n_bins, sensitivity=sensitivity)
    if folds is not None:
        f = pd.Series(np.asarray(folds), index=y.index)
        if len(f) != len(y):
            raise InputError(f"folds has {len(f)} labels for {len(y)} sites; give one fold per site")
        for k in sorted(pd.unique(f.dropna())):
            sel = (f == k).to_numpy()
            rows += _block(y[sel], p[sel], k if isinstance(k, str) else int(k), n_bins=n_bins,
                           sensitivity=sensitivity)
    out = pd.DataFrame(rows)
    out["fold"] = out["fold"].astype(str)
    out[["n", "n_presence"]] = out[["n", "n_presence"]].astype("int64")
    return out


def top_k_table(y_true: Any, y_score: Any, *, k: Sequence[int] = (1, 5, 10, 25), folds: Any = None) -> pd.DataFrame:
    """Samples-averaged F1 of the top-K species (:func:`~geosdm.evaluate.metrics.f1_top_k`) for each ``k``,
    over all sites and per fold: columns ``fold``, ``k``, ``f1``, ``n_sites`` (sites with an observed species).

    Example
    -------
    >>> top_k_table(observed, held_out_probability, k=[5, 25])  # doctest: +SKIP
    """
    y, s = _frames(y_true, y_score)
    groups: list[tuple[Any, np.ndarray]] = [("all", np.ones(len(y), dtype=bool))]
    if folds is not None:
        f = np.asarray(folds)
        if len(f) != len(y):
            raise InputError(f"folds has {len(f)} labels for {len(y)} sites; give one fold per site")
        groups += [(k_, f == k_) for k_ in sorted(pd.unique(f[pd.notna(f)]))]
    rows = []
    for fold, sel in groups:
        yy, ss = y.to_numpy()[sel], s.to_numpy()[sel]
        n_sites = int((np.nan_to_num(yy) > 0).any(axis=1).sum())
        for kk in k:
            rows.append({"fold": str(fold if isinstance(fold, str) else int(fold)), "k": int(kk),
                         "f1": f1_top_k(yy, ss, k=int(kk)), "n_sites": n_sites})
    return pd.DataFrame(rows)


def boyce_table(presence: pd.DataFrame, background: pd.DataFrame, *, species: Sequence[str] | None = None,
                fold_column: str = "fold") -> pd.DataFrame:
    """Continuous Boyce index per species (and its mean), over all points and per fold.

    Parameters
    ----------
    presence
        Long table of presence-only records: ``species``, ``score`` (predicted intensity or probability at the
        record) and optionally ``fold``.
    background
        Wide table of background points: one score column per species (and ``fold``); the expected
        distribution of scores over the study area.

    Returns
    -------
    pandas.DataFrame
        Columns ``fold``, ``species`` (names and ``"macro"``), ``boyce``, ``n_presence``.

    Example
    -------
    >>> boyce_table(po_scores, background_scores)  # doctest: +SKIP
    """
    for name, frame, need in (("presence", presence, ("species", "score")), ("background", background, ())):
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise InputError(f"{name} table lacks column(s) {missing}")
    names = list(species) if species is not None else sorted(map(str, pd.unique(presence["species"])))
    absent = [s for s in names if s not in background.columns]
    if absent:
        raise InputError(f"background table lacks score columns for species {absent[:5]}")
    groups: list[Any] = ["all"]
    if fold_column in presence.columns and fold_column in background.columns:
        groups += sorted(pd.unique(presence[fold_column].dropna()))
    rows = []
    for fold in groups:
        po = presence if fold == "all" else presence[presence[fold_column] == fold]
        bg = background if fold == "all" else background[background[fold_column] == fold]
        label = str(fold if isinstance(fold, str) else int(fold))
        block = []
        for s in names:
            scores = po.loc[po["species"].astype(str) == s, "score"].to_numpy(dtype="float64")
            b = boyce_index(scores, bg[s].to_numpy(dtype="float64")) if scores.size else np.nan
            block.append({"fold": label, "species": s, "boyce": b, "n_presence": int(scores.size)})
        values = [r["boyce"] for r in block if np.isfinite(r["boyce"])]
        rows += block + [{"fold": label, "species": "macro", "boyce": float(np.mean(values)) if values else np.nan,
                          "n_presence": int(sum(r["n_presence"] for r in block))}]
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, *, metrics: Sequence[str] | None = None,
            rows: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A compact view of a :func:`species_metrics` table: macro and micro rows over all sites plus the mean and
    standard deviation of the macro values across folds.

    Example
    -------
    >>> summary(species_metrics(observed, probability, folds=folds))  # doctest: +SKIP
    """
    cols = [m for m in (metrics or METRICS) if m in table.columns]
    out = {}
    for name in ("macro", "micro"):
        sel = table[(table["fold"] == "all") & (table["species"] == name)]
        if len(sel):
            out[name] = sel[cols].iloc[0]
    per_fold = table[(table["fold"] != "all") & (table["species"] == "macro")]
    if len(per_fold) > 1:
        out["macro fold mean"] = per_fold[cols].mean()
        out["macro fold sd"] = per_fold[cols].std(ddof=1)
    frame = pd.DataFrame(out).T
    return frame.rename(index=dict(rows or {}))
