"""Temporal composites over clear observations: per-period median/mean/quantiles plus a valid-count QA layer.

Plain numpy on one tile (time, y, x); the tile loop makes it scale. Pixels with fewer than ``min_count`` clear
observations in a period are NaN and their count is reported, never filled.
"""

from __future__ import annotations

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


#: up to this many observations per period, sort with a min/max network instead of ``np.sort`` (``np.sort``
#: along the strided time axis is slow for the 3 to 6 dates of a season; the network gives the same order)
_NETWORK_MAX = 6


def period_index(months: np.ndarray, periods: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Boolean selector over the time axis for each period label (months are 1..12)."""
    return {label: np.isin(months, list(ms)) for label, ms in periods.items()}


def _sorted_layers(values: np.ndarray, ok: np.ndarray) -> list[np.ndarray]:
    """The clear values of a few dates sorted per pixel, as a list of (y, x) float32 layers, +inf last.

    An odd-even transposition network of element-wise min/max over whole layers (swapping layer references,
    not copying them); not-clear pixels enter as +inf so they sort after every clear value.
    """
    inf = np.float32(np.inf)
    s = [np.where(ok[i], values[i], inf).astype(np.float32, copy=False) for i in range(values.shape[0])]
    n = len(s)
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            lo = np.minimum(s[i], s[i + 1])
            np.maximum(s[i], s[i + 1], out=s[i + 1])
            s[i] = lo
    return s


def _layers_quantile(layers: list[np.ndarray], count: np.ndarray, q: float) -> np.ndarray:
    """:func:`sorted_quantile` of values sorted by :func:`_sorted_layers`, picking the two order statistics
    per number of clear values (same arithmetic, so the same float32 result; NaN where the count is 0)."""
    out = np.full(count.shape, np.nan, np.float32)
    for k in range(1, len(layers) + 1):
        where = count == k
        if not where.any():
            continue
        pos = q * (k - 1)
        lo, hi = int(np.floor(pos)), int(np.ceil(pos))
        frac = np.float32(pos - lo)
        if lo == hi:
            np.copyto(out, layers[lo], where=where)
        else:
            a, b = layers[lo], layers[hi]
            with np.errstate(invalid="ignore"):  # inf - inf where fewer values: not selected
                np.copyto(out, a + (b - a) * frac, where=where)
    return out


def _nanmean0(a: np.ndarray) -> np.ndarray:
    """``np.nanmean(a, axis=0)`` (its steps: same sums and division) without the "Mean of empty slice" warning."""
    missing = np.isnan(a)
    total = np.sum(np.where(missing, a.dtype.type(0), a), axis=0)
    count = np.sum(~missing, axis=0, dtype=np.intp)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(total, count, out=total, casting="unsafe")
    return total


def _nanstd0(a: np.ndarray) -> np.ndarray:
    """``np.nanstd(a, axis=0)`` (ddof 0; numpy's steps) without the "Degrees of freedom" warning."""
    missing = np.isnan(a)
    dev = np.where(missing, a.dtype.type(0), a)
    count = np.sum(~missing, axis=0, dtype=np.intp, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.sum(dev, axis=0, keepdims=True)
        np.divide(mean, count, out=mean, casting="unsafe")
        np.subtract(dev, mean, out=dev, casting="unsafe")
        np.copyto(dev, 0, where=missing)
        np.multiply(dev, dev, out=dev)
        var = np.sum(dev, axis=0)
        np.divide(var, count[0], out=var, casting="unsafe")
    var[count[0] <= 0] = np.nan
    return np.sqrt(var, out=var)


def _only(out: np.ndarray, enough: np.ndarray) -> np.ndarray:
    """``out`` (a fresh array) as float32, NaN where there are too few observations."""
    out = out.astype(np.float32, copy=False)
    np.copyto(out, np.float32(np.nan), where=~enough)
    return out


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
    ok = clear & np.isfinite(values)
    stats: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    shape = values.shape[1:]
    for label, sel in period_index(months, periods).items():
        n = int(sel.sum())
        every = n == len(sel)  # the whole series (one season's build): no copy
        sub_ok = ok if every else ok[sel]
        count = sub_ok.sum(axis=0, dtype=np.int16) if n else np.zeros(shape, np.int16)
        counts[label] = count
        enough = count >= min_count
        sub_values = values if every else values[sel]
        masked: np.ndarray | None = None
        layers: list[np.ndarray] | None = None
        ordered: np.ndarray | None = None

        def _masked() -> np.ndarray:
            nonlocal masked
            if masked is None:
                masked = np.where(sub_ok, sub_values, np.nan).astype(np.float32, copy=False)
            return masked

        def _quantile(q: float) -> np.ndarray:
            # a few dates (a season): sorting network over layers; more: np.sort with NaN last
            nonlocal layers, ordered
            if n == 0:
                return np.full(shape, np.nan, np.float32)
            if n <= _NETWORK_MAX:
                if layers is None:
                    layers = _sorted_layers(sub_values, sub_ok)
                return _layers_quantile(layers, count, q)
            if ordered is None:
                ordered = np.sort(_masked(), axis=0)
            return sorted_quantile(ordered, count, q)

        # all-NaN pixels are expected (reported gaps): the statistics below are numpy's nan-functions without
        # their warnings, so no process-wide warnings filter is needed (tiles composite bands in threads)
        for stat in statistics:
            if n == 0:
                out = np.full(shape, np.nan, np.float32)
            elif stat == "median":
                out = _quantile(0.5)
            elif stat == "mean":
                out = _nanmean0(_masked())
            elif stat == "min":
                out = np.fmin.reduce(_masked(), axis=0)  # = np.nanmin
            elif stat == "max":
                out = np.fmax.reduce(_masked(), axis=0)  # = np.nanmax
            elif stat == "std":
                out = _nanstd0(_masked())
            else:
                raise ValueError(f"unknown statistic {stat!r}")
            stats[(label, stat)] = _only(out, enough)
        for q in quantiles:
            stats[(label, f"q{round(q * 100):02d}")] = _only(_quantile(q), enough)
    return stats, counts
