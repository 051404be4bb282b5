"""Temporal composites over clear observations: per-period median/mean/quantiles plus a valid-count QA layer.

Plain numpy on one tile (time, y, x); the tile loop makes it scale. Pixels with fewer than ``min_count`` clear
observations in a period are NaN and their count is reported, never filled.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["composite_periods", "period_index", "sorted_quantile"]


def sorted_quantile(sorted_values: np.ndarray, n_valid: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` (numpy's 'linear' method) along axis 0 of values sorted with NaN last.

    For the few observations per pixel of a composite period this is several times faster than
    ``np.nanquantile``/``np.nanmedian``, which mask and sort again for every call.
    """
    pos = q * (n_valid - 1).clip(min=0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.ceil(pos).astype(np.intp)
    frac = (pos - lo).astype(np.float32)
    a = np.take_along_axis(sorted_values, lo[None], axis=0)[0]
    b = np.take_along_axis(sorted_values, hi[None], axis=0)[0]
    out = a + (b - a) * frac
    return np.where(n_valid > 0, out, np.nan).astype(np.float32)


#: up to this many observations per period, sort with a min/max network instead of ``np.sort``
_NETWORK_MAX = 6


def _sort_nan_last(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``values`` (time, y, x) sorted along time with NaN last; ``count``: finite values per pixel.

    ``np.sort`` along the strided first axis is slow for a handful of dates (a season of one year has about 3
    to 6); an odd-even transposition network of element-wise min/max over whole (y, x) layers gives the same
    result several times faster (NaN is treated as +inf while sorting, then restored from ``count``).
    """
    n = values.shape[0]
    if n < 2 or n > _NETWORK_MAX:
        return np.sort(values, axis=0)
    s = np.where(np.isnan(values), np.float32(np.inf), values).astype(values.dtype, copy=False)
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            lo = np.minimum(s[i], s[i + 1])
            np.maximum(s[i], s[i + 1], out=s[i + 1])
            s[i] = lo
    for k in range(n):
        np.copyto(s[k], np.nan, where=count <= k)
    return s


def period_index(months: np.ndarray, periods: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Boolean selector over the time axis for each period label (months are 1..12)."""
    return {label: np.isin(months, list(ms)) for label, ms in periods.items()}


def composite_periods(
    values: np.ndarray,
    clear: np.ndarray,
    months: np.ndarray,
    periods: Mapping[str, Sequence[int]],
    *,
    statistics: Sequence[str] = ("median",),
    quantiles: Sequence[float] = (),
    min_count: int = 1,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, np.ndarray]]:
    """Composite a (time, y, x) float array over clear observations per period.

    Parameters
    ----------
    values
        Physical values (time, y, x); NaN where not observed.
    clear
        Boolean (time, y, x): True for clear observations.
    months
        Month (1..12) of each time step.
    periods
        Period label -> months.

    Returns
    -------
    ``{(period, stat_label): (y, x) float32}`` and ``{period: (y, x) int16 valid count}``.
    """
    masked = np.where(clear & np.isfinite(values), values, np.nan).astype(np.float32, copy=False)
    stats: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    shape = values.shape[1:]
    for label, sel in period_index(months, periods).items():
        sub = masked[sel]
        count = np.isfinite(sub).sum(axis=0).astype(np.int16) if sub.shape[0] else np.zeros(shape, np.int16)
        counts[label] = count
        enough = count >= min_count
        ordered = _sort_nan_last(sub, count) if sub.shape[0] else sub  # NaN sorts last
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected (reported gaps)
            for stat in statistics:
                if sub.shape[0] == 0:
                    out = np.full(shape, np.nan, np.float32)
                elif stat == "median":
                    out = sorted_quantile(ordered, count, 0.5)
                elif stat == "mean":
                    out = np.nanmean(sub, axis=0)
                elif stat == "min":
                    out = np.nanmin(sub, axis=0)
                elif stat == "max":
                    out = np.nanmax(sub, axis=0)
                elif stat == "std":
                    out = np.nanstd(sub, axis=0)
                else:
                    raise ValueError(f"unknown statistic {stat!r}")
                stats[(label, stat)] = np.where(enough, out, np.nan).astype(np.float32)
            for q in quantiles:
                out = sorted_quantile(ordered, count, q) if sub.shape[0] else np.full(shape, np.nan, np.float32)
                stats[(label, f"q{round(q * 100):02d}")] = np.where(enough, out, np.nan).astype(np.float32)
    return stats, counts
