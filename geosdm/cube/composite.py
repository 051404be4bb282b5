"""Temporal composites over clear observations: per-period median/mean/quantiles plus a valid-count QA layer.

Plain numpy on one tile (time, y, x); the tile loop makes it scale. Pixels with fewer than ``min_count`` clear
observations in a period are NaN and their count is reported, never filled.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["composite_periods", "period_index"]


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected (reported gaps)
            for stat in statistics:
                if sub.shape[0] == 0:
                    out = np.full(shape, np.nan, np.float32)
                elif stat == "median":
                    out = np.nanmedian(sub, axis=0)
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
                out = np.nanquantile(sub, q, axis=0) if sub.shape[0] else np.full(shape, np.nan, np.float32)
                stats[(label, f"q{round(q * 100):02d}")] = np.where(enough, out, np.nan).astype(np.float32)
    return stats, counts
