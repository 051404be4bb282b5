"""Predicted probability cubes against a known truth (the demo region's, or any simulation's).

The truth holds, per species and cell, the true occurrence probability (``probability``) and optionally one
realised occurrence (``occurrence``, 0/1). Every cell with a finite prediction and truth counts, for every
species; pooled ("micro") figures pool all (cell, species) pairs, "macro" figures average the species.

* ``ece``: expected calibration error against the true probability with 10 uniform probability bins
  (:mod:`geosdm.evaluate.reliability`): ``sum_b (n_b / N) |mean predicted_b - mean true probability_b|``;
  ``ece_quantile``: the same with 10 equal-count bins (finer where most predictions lie);
  ``ece_occurrence``: against the realised occurrence;
* ``mae``: mean absolute error ``|predicted - true probability|`` per cell (no averaging within bins);
* ``brier``: mean squared error against the true probability;
* ``roc_auc``: discrimination of the realised occurrence;
* ``coverage_90`` / ``interval_width``: share of cells whose true probability lies within the uncertainty
  layers' interval (``q05``..``q95``) and its mean width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError
from geosdm.evaluate.metrics import roc_auc
from geosdm.evaluate.reliability import expected_calibration_error, reliability_curve

__all__ = ["TruthEvaluation", "compare_with_truth"]


@dataclass
class TruthEvaluation:
    """Per-species and pooled agreement of a probability cube with the truth, and the pooled reliability curve."""

    species: pd.DataFrame
    pooled: dict[str, float]
    reliability: pd.DataFrame
    extra: dict[str, Any] = field(default_factory=dict)


def _metrics(p: np.ndarray, t: np.ndarray, occ: np.ndarray | None, lo: np.ndarray | None, hi: np.ndarray | None,
             n_bins: int) -> dict[str, float]:
    ok = np.isfinite(p) & np.isfinite(t)
    p, t = p[ok], t[ok]
    out: dict[str, float] = {"n_cells": float(p.size)}
    if p.size == 0:
        return out
    out |= {"mean_predicted": float(p.mean()), "mean_true": float(t.mean()),
            "ece": expected_calibration_error(t, p, n_bins=n_bins),
            "ece_quantile": expected_calibration_error(t, p, n_bins=n_bins, strategy="quantile"),
            "mae": float(np.abs(p - t).mean()), "brier": float(((p - t) ** 2).mean())}
    if occ is not None:
        o = occ[ok]
        out |= {"ece_occurrence": expected_calibration_error(o, p, n_bins=n_bins), "roc_auc": roc_auc(o, p)}
    if lo is not None and hi is not None:
        a, b = lo[ok], hi[ok]
        out |= {"coverage_90": float(((t >= a) & (t <= b)).mean()), "interval_width": float((b - a).mean())}
    return out


def compare_with_truth(prediction: xr.DataArray, truth: xr.Dataset, *, uncertainty: xr.Dataset | None = None,
                       interval: Sequence[str] = ("q05", "q95"), n_bins: int = 10,
                       species: Sequence[str] | None = None) -> TruthEvaluation:
    """Calibration, error and discrimination of a probability cube ``(species, y, x)`` against the truth.

    Reduces its inputs to numbers: Dask-backed inputs are loaded (sized for demo regions and simulations; the
    truth of a real country does not exist).

    Parameters
    ----------
    prediction
        Predicted probabilities on the truth's grid (e.g. ``predict(model, cube).probability``).
    truth
        ``probability`` (and optionally ``occurrence``) on ``(species, y, x)``.
    uncertainty
        Uncertainty layers (:func:`geosdm.predict.uncertainty.predict_uncertainty`) for interval coverage.
    interval
        Lower and upper layer names of the interval.
    n_bins
        Probability bins of the ECE.
    species
        Species to evaluate (default: those in both).

    Raises
    ------
    MissingVariableError
        The truth lacks ``probability`` or the uncertainty lacks the interval layers.
    InputError
        No common species, or grids that do not match.

    Example
    -------
    >>> ev = compare_with_truth(predict(model, "cube.zarr", area=1e4).probability, xr.open_zarr("truth.zarr"))  # doctest: +SKIP
    >>> ev.pooled["ece"]  # doctest: +SKIP
    """
    if "probability" not in truth.data_vars:
        raise MissingVariableError(f"truth lacks 'probability'; it has {sorted(map(str, truth.data_vars))}")
    if uncertainty is not None and any(n not in uncertainty.data_vars for n in interval):
        raise MissingVariableError(f"uncertainty lacks the interval layers {list(interval)}; it has "
                                   f"{sorted(map(str, uncertainty.data_vars))}")
    names = [str(s) for s in prediction["species"].values if str(s) in set(map(str, truth["species"].values))]
    if species is not None:
        names = [s for s in species if s in names]
    if not names:
        raise InputError("prediction and truth share no species; check the species names")
    pred = prediction.sel(species=names)
    tru = truth["probability"].sel(species=names)
    if pred.sizes["y"] != tru.sizes["y"] or pred.sizes["x"] != tru.sizes["x"] or not (
            np.allclose(pred["x"].values, tru["x"].values) and np.allclose(pred["y"].values, tru["y"].values)):
        raise InputError("prediction and truth are on different grids; predict over a cube on the truth's grid")
    dims = ("species", "y", "x")
    P = np.asarray(pred.transpose(*dims).values, dtype="float64")
    T = np.asarray(tru.transpose(*dims).values, dtype="float64")
    O = (np.asarray(truth["occurrence"].sel(species=names).transpose(*dims).values, dtype="float64")
         if "occurrence" in truth.data_vars else None)
    L = H = None
    if uncertainty is not None:
        u = uncertainty[list(interval)].sel(species=names).transpose(*dims).load()  # one pass over the samples
        L = np.asarray(u[interval[0]].values, dtype="float64")
        H = np.asarray(u[interval[1]].values, dtype="float64")
    rows = []
    for i, s in enumerate(names):
        rows.append({"species": s, **_metrics(P[i].ravel(), T[i].ravel(), None if O is None else O[i].ravel(),
                                              None if L is None else L[i].ravel(),
                                              None if H is None else H[i].ravel(), n_bins)})
    table = pd.DataFrame(rows)
    pooled = _metrics(P.ravel(), T.ravel(), None if O is None else O.ravel(), None if L is None else L.ravel(),
                      None if H is None else H.ravel(), n_bins)
    macro = {f"macro_{k}": float(table[k].mean()) for k in table.columns if k not in ("species", "n_cells")}
    ok = np.isfinite(P) & np.isfinite(T)
    curve = reliability_curve(T[ok], P[ok], n_bins=n_bins)
    return TruthEvaluation(table, pooled | macro, curve)
