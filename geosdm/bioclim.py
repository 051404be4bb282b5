"""Bioclimatic variables (bio1-bio19, WorldClim/ANUCLIM definitions) from a monthly climate cube.

Works lazily: dask-backed inputs give dask-backed outputs (``xr.apply_ufunc`` with ``dask="parallelized"``).
Quarters are the 12 running (circular) three-month windows, as in WorldClim and ``dismo::biovars``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from geosdm.errors import InputError, MissingVariableError

__all__ = ["BIOCLIM_META", "bioclim", "biovars_numpy"]

#: name -> (long_name, units)
BIOCLIM_META: dict[str, tuple[str, str]] = {
    "bio01": ("annual mean temperature", "degC"),
    "bio02": ("mean diurnal range", "degC"),
    "bio03": ("isothermality (bio02/bio07 x 100)", "percent"),
    "bio04": ("temperature seasonality (sd x 100)", "degC"),
    "bio05": ("max temperature of warmest month", "degC"),
    "bio06": ("min temperature of coldest month", "degC"),
    "bio07": ("temperature annual range", "degC"),
    "bio08": ("mean temperature of wettest quarter", "degC"),
    "bio09": ("mean temperature of driest quarter", "degC"),
    "bio10": ("mean temperature of warmest quarter", "degC"),
    "bio11": ("mean temperature of coldest quarter", "degC"),
    "bio12": ("annual precipitation", "mm"),
    "bio13": ("precipitation of wettest month", "mm"),
    "bio14": ("precipitation of driest month", "mm"),
    "bio15": ("precipitation seasonality (coefficient of variation)", "percent"),
    "bio16": ("precipitation of wettest quarter", "mm"),
    "bio17": ("precipitation of driest quarter", "mm"),
    "bio18": ("precipitation of warmest quarter", "mm"),
    "bio19": ("precipitation of coldest quarter", "mm"),
}


def _quarters(a: np.ndarray) -> np.ndarray:
    """Circular running 3-month sums along the last axis (window starting at each month)."""
    return a + np.roll(a, -1, axis=-1) + np.roll(a, -2, axis=-1)


def _pick(q: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(q, idx[..., None], axis=-1)[..., 0]


def biovars_numpy(tmin: np.ndarray, tmax: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """bio1..bio19 from monthly arrays with months on the last axis (length 12) -> (..., 19) float32."""
    tavg = (tmin + tmax) / 2.0
    out = np.empty(tavg.shape[:-1] + (19,), dtype=np.float32)
    out[..., 0] = tavg.mean(-1)
    out[..., 1] = (tmax - tmin).mean(-1)
    out[..., 4] = tmax.max(-1)
    out[..., 5] = tmin.min(-1)
    out[..., 6] = out[..., 4] - out[..., 5]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[..., 2] = 100.0 * out[..., 1] / out[..., 6]
    out[..., 3] = 100.0 * tavg.std(-1, ddof=1)
    tq = _quarters(tavg) / 3.0
    pq = _quarters(prec)
    wet = np.nanargmax(np.where(np.isnan(pq), -np.inf, pq), axis=-1)
    dry = np.nanargmin(np.where(np.isnan(pq), np.inf, pq), axis=-1)
    warm = np.nanargmax(np.where(np.isnan(tq), -np.inf, tq), axis=-1)
    cold = np.nanargmin(np.where(np.isnan(tq), np.inf, tq), axis=-1)
    out[..., 7] = _pick(tq, wet)
    out[..., 8] = _pick(tq, dry)
    out[..., 9] = _pick(tq, warm)
    out[..., 10] = _pick(tq, cold)
    out[..., 11] = prec.sum(-1)
    out[..., 12] = prec.max(-1)
    out[..., 13] = prec.min(-1)
    out[..., 14] = 100.0 * prec.std(-1, ddof=1) / (1.0 + prec.mean(-1))
    out[..., 15] = _pick(pq, wet)
    out[..., 16] = _pick(pq, dry)
    out[..., 17] = _pick(pq, warm)
    out[..., 18] = _pick(pq, cold)
    nan = np.isnan(tavg).any(-1) | np.isnan(prec).any(-1)
    out[nan] = np.nan
    return out


def bioclim(monthly: xr.Dataset, *, tmin: str = "tmin", tmax: str = "tmax", prec: str = "prec", month_dim: str = "month") -> xr.Dataset:
    """Compute bio01..bio19 from a monthly climate Dataset (temperatures in °C, precipitation in mm).

    Parameters
    ----------
    monthly
        Dataset with ``tmin``, ``tmax``, ``prec`` variables sharing a ``month`` dimension of length 12.

    Returns
    -------
    xr.Dataset with variables ``bio01``..``bio19`` (float32, attrs ``long_name`` and ``units``) on the
    remaining dimensions; lazy when the input is.
    """
    for name in (tmin, tmax, prec):
        if name not in monthly:
            raise MissingVariableError(
                f"monthly climate lacks variable {name!r}; it has {sorted(monthly.data_vars)}. "
                "Pass tmin=/tmax=/prec= to name the variables."
            )
    if monthly.sizes.get(month_dim) != 12:
        raise InputError(f"monthly climate needs a '{month_dim}' dimension of length 12, got sizes {dict(monthly.sizes)}")
    stacked = xr.apply_ufunc(
        biovars_numpy,
        monthly[tmin],
        monthly[tmax],
        monthly[prec],
        input_core_dims=[[month_dim]] * 3,
        output_core_dims=[["bioclim"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"bioclim": 19}},
    )
    ds = xr.Dataset()
    for i, (name, (long_name, units)) in enumerate(BIOCLIM_META.items()):
        ds[name] = stacked.isel(bioclim=i, drop=True).assign_attrs(long_name=long_name, units=units)
    return ds
