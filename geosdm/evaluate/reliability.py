"""Reliability (calibration) curves and the expected calibration error, for tables and for whole cubes.

Binning follows scikit-learn's ``calibration_curve``: ``"uniform"`` bins split [0, 1] into ``n_bins`` equal
widths, ``"quantile"`` bins hold equal numbers of predictions; a prediction equal to an inner edge falls in the
lower bin. The **expected calibration error** is

    ECE = sum_b (n_b / N) * | mean predicted probability in b - mean outcome in b |

over the non-empty bins ``b`` (``n_b`` = predictions, or summed weights, in ``b``). The outcome may be 0/1
(observed presence/absence, realised occurrence) or a probability (a known true probability, as in the demo),
in which case the ECE measures how far the predicted probabilities are from the true ones on average within
each bin.

For cubes, :func:`reliability_sums` reduces prediction and outcome cubes ``(species, y, x)`` tile by tile to
per-species bin sums lazily (a Dask array of shape ``(species, 3, n_bins)``: counts, summed predictions,
summed outcomes), from which :func:`curve_from_sums` and :func:`ece_from_sums` give curves and ECEs.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from geosdm.errors import InputError

__all__ = ["bin_edges", "curve_from_sums", "ece_from_sums", "expected_calibration_error", "reliability_curve",
           "reliability_sums"]

Strategy = Literal["uniform", "quantile"]
#: Rounding tolerance of probabilities (float32 arithmetic gives e.g. -4e-20); values within it are clipped.
_TOL = 1e-6


def bin_edges(y_prob: Any = None, *, n_bins: int = 10, strategy: Strategy = "uniform") -> np.ndarray:
    """``n_bins + 1`` bin edges on [0, 1]: equal widths, or quantiles of ``y_prob`` (NaN ignored).

    Example
    -------
    >>> bin_edges(n_bins=4).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if int(n_bins) < 1:
        raise InputError(f"n_bins={n_bins} must be >= 1")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, int(n_bins) + 1)
    if strategy == "quantile":
        if y_prob is None:
            raise InputError("strategy='quantile' needs y_prob to place the bin edges")
        p = np.asarray(y_prob, dtype="float64").ravel()
        p = p[np.isfinite(p)]
        if p.size == 0:
            raise InputError("y_prob has no finite values to place quantile bin edges")
        return np.percentile(p, np.linspace(0.0, 1.0, int(n_bins) + 1) * 100)
    raise InputError(f"strategy={strategy!r} must be 'uniform' or 'quantile'")


def _sums(y: np.ndarray, p: np.ndarray, w: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(3, n_bins)``: summed weights, weighted predictions and weighted outcomes per bin (NaN pairs left out)."""
    ok = np.isfinite(y) & np.isfinite(p) & np.isfinite(w)
    y, p, w = y[ok], p[ok], w[ok]
    n = len(edges) - 1
    ids = np.searchsorted(edges[1:-1], p)
    return np.stack([np.bincount(ids, weights=w, minlength=n), np.bincount(ids, weights=w * p, minlength=n),
                     np.bincount(ids, weights=w * y, minlength=n)])


def _checked(y_true: Any, y_prob: Any, sample_weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype="float64").ravel()
    p = np.asarray(y_prob, dtype="float64").ravel()
    if y.shape != p.shape:
        raise InputError(f"y_true has {y.size} values but y_prob has {p.size}; pass aligned arrays")
    w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, dtype="float64").ravel()
    if w.shape != p.shape:
        raise InputError(f"sample_weight has {w.size} values for {p.size} predictions")
    fin = np.isfinite(p)
    if ((p[fin] < -_TOL) | (p[fin] > 1 + _TOL)).any():
        raise InputError("y_prob must be probabilities in [0, 1]; apply the model's link (predict_proba) first")
    fy = np.isfinite(y)
    if ((y[fy] < -_TOL) | (y[fy] > 1 + _TOL)).any():
        raise InputError("y_true must be 0/1 outcomes or probabilities in [0, 1]")
    return np.clip(y, 0.0, 1.0), np.clip(p, 0.0, 1.0), w


def curve_from_sums(sums: Any, edges: Any) -> pd.DataFrame:
    """The reliability curve from bin sums ``(3, n_bins)`` (or ``(species, 3, n_bins)``, summed over species).

    Returns a DataFrame with one row per non-empty bin: ``bin``, ``lower``, ``upper``, ``count`` (predictions
    or summed weights), ``mean_predicted``, ``mean_observed``.
    """
    s = np.asarray(sums, dtype="float64")
    if s.ndim == 3:
        s = s.sum(axis=0)
    e = np.asarray(edges, dtype="float64")
    n = s[0]
    keep = n > 0
    idx = np.flatnonzero(keep)
    return pd.DataFrame({
        "bin": idx, "lower": e[idx], "upper": e[idx + 1], "count": n[keep],
        "mean_predicted": s[1][keep] / n[keep], "mean_observed": s[2][keep] / n[keep],
    })


def ece_from_sums(sums: Any) -> np.ndarray | float:
    """ECE from bin sums: a float for ``(3, n_bins)``, one value per species for ``(species, 3, n_bins)``."""
    s = np.asarray(sums, dtype="float64")
    n, sp, sy = s[..., 0, :], s[..., 1, :], s[..., 2, :]
    total = n.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ece = np.abs(sp - sy).sum(axis=-1) / total  # sum_b n_b |sp_b/n_b - sy_b/n_b| / N
    return float(ece) if np.ndim(ece) == 0 else np.where(total > 0, ece, np.nan)


def reliability_curve(y_true: Any, y_prob: Any, *, n_bins: int = 10, strategy: Strategy = "uniform",
                      sample_weight: Any = None) -> pd.DataFrame:
    """Mean predicted probability against mean outcome per probability bin (non-empty bins only).

    ``mean_observed`` and ``mean_predicted`` equal scikit-learn's ``calibration_curve`` ``(prob_true,
    prob_pred)`` for 0/1 outcomes; ``y_true`` may also be a true probability.

    Example
    -------
    >>> reliability_curve([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], n_bins=2)[["mean_predicted", "mean_observed"]].values.tolist()
    [[0.15000000000000002, 0.0], [0.8, 1.0]]
    """
    y, p, w = _checked(y_true, y_prob, sample_weight)
    edges = bin_edges(p, n_bins=n_bins, strategy=strategy)
    return curve_from_sums(_sums(y, p, w, edges), edges)


def expected_calibration_error(y_true: Any, y_prob: Any, *, n_bins: int = 10, strategy: Strategy = "uniform",
                               sample_weight: Any = None) -> float:
    """ECE: bin-count-weighted mean of ``|mean predicted - mean outcome|`` over the probability bins.

    Example
    -------
    >>> round(expected_calibration_error([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], n_bins=2), 4)
    0.175
    """
    y, p, w = _checked(y_true, y_prob, sample_weight)
    if not (np.isfinite(p) & np.isfinite(y)).any():
        return float("nan")
    edges = bin_edges(p, n_bins=n_bins, strategy=strategy)
    return float(ece_from_sums(_sums(y, p, w, edges)))


def _block_sums(p: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(species, 3, n_bins)`` sums of one block ``(species, ...)``."""
    p = np.asarray(p, dtype="float64")
    y = np.asarray(y, dtype="float64")
    flat_p, flat_y = p.reshape(p.shape[0], -1), y.reshape(y.shape[0], -1)
    return np.stack([_sums(flat_y[i], flat_p[i], np.ones(flat_p.shape[1]), edges) for i in range(p.shape[0])])


def reliability_sums(y_true: Any, y_prob: Any, *, n_bins: int = 10, dim: str = "species") -> Any:
    """Per-layer bin sums ``(layer, 3, n_bins)`` of two aligned cubes ``(layer, y, x)`` (uniform bins), lazily.

    Parameters
    ----------
    y_true
        Outcomes or true probabilities, e.g. the demo truth's ``probability`` or ``occurrence``.
    y_prob
        Predicted probabilities on the same grid and layers (dims in any order; aligned by name).
    n_bins
        Uniform probability bins.
    dim
        The layer dim (kept whole within each block).

    Returns
    -------
    dask.array.Array or numpy.ndarray
        Dask when either input is Dask-backed (nothing is computed), else NumPy. Feed to
        :func:`ece_from_sums` / :func:`curve_from_sums` after computing.

    Example
    -------
    >>> sums = reliability_sums(truth.probability, pred.probability).compute()  # doctest: +SKIP
    >>> ece_from_sums(sums.sum(0))  # doctest: +SKIP
    """
    import dask
    import dask.array as da
    import xarray as xr

    if not isinstance(y_true, xr.DataArray) or not isinstance(y_prob, xr.DataArray):
        raise InputError("reliability_sums needs two xarray.DataArray cubes (layer, y, x); use "
                         "expected_calibration_error for plain arrays")
    if dim not in y_true.dims or dim not in y_prob.dims:
        raise InputError(f"both cubes need the layer dim {dim!r}; got {y_true.dims} and {y_prob.dims}")
    t, p = xr.align(y_true, y_prob, join="inner")
    dims = (dim, *[d for d in t.dims if d != dim])
    t, p = t.transpose(*dims), p.transpose(*dims)
    edges = bin_edges(n_bins=n_bins)
    n_layers = t.sizes[dim]
    if not (dask.is_dask_collection(t.data) or dask.is_dask_collection(p.data)):
        return _block_sums(p.values, t.values, edges)
    p_chunks = p.chunk({dim: -1}).data if dask.is_dask_collection(p.data) else None
    chunks = p_chunks.chunks if p_chunks is not None else t.chunk({dim: -1}).chunks
    pd_ = p.chunk(dict(zip(dims, chunks))).data
    td_ = t.chunk(dict(zip(dims, chunks))).data
    parts = [da.from_delayed(dask.delayed(_block_sums)(bp, bt, edges), shape=(n_layers, 3, len(edges) - 1),
                             dtype="float64")
             for bp, bt in zip(pd_.to_delayed().ravel(), td_.to_delayed().ravel())]
    return da.stack(parts).sum(axis=0)
