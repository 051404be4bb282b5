"""Where a model extrapolates: the multivariate environmental similarity surface (MESS), lazily over a cube.

MESS (Elith et al. 2010) compares each cell with the training data (the *reference*), variable by variable:
with ``f`` the percentage of reference values below the cell's value ``p`` and ``min``/``max`` the reference
range, the similarity is ``100 (p - min) / (max - min)`` when ``f = 0``, ``2 f`` when ``0 < f <= 50``,
``2 (100 - f)`` when ``50 <= f < 100`` and ``100 (max - p) / (max - min)`` when ``f = 100``. It is negative
outside the training range (the model extrapolates there), 100 at the median. The MESS of a cell is its
minimum over variables and the *most dissimilar variable* the one reaching it. Categorical covariates score
100 for a training category and -100 for an unseen one.

:func:`mess` builds one task per tile from the cube's input stack (:func:`geosdm.predict.lazy.open_input`)
with the sorted reference values as one graph key; nothing is computed until written or reduced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["Reference", "mess", "mess_block", "mess_points", "reference_from"]

log = logging.getLogger(__name__)


class Reference:
    """Sorted finite reference values per numeric variable and the seen categories per categorical one.

    Example
    -------
    >>> ref = reference_from(table, model.feature_names_)  # doctest: +SKIP
    """

    def __init__(self, numeric: Mapping[str, np.ndarray], categories: Mapping[str, Sequence[Any]] | None = None):
        self.numeric = {k: np.sort(np.asarray(v, dtype=np.float64)) for k, v in numeric.items()}
        self.categories = {k: list(v) for k, v in (categories or {}).items()}
        empty = [k for k, v in self.numeric.items() if not v.size]
        if empty:
            raise InputError(f"reference has no finite value of {empty}; drop them or give other training data")

    @property
    def variables(self) -> list[str]:
        return list(self.numeric) + list(self.categories)

    def __dask_tokenize__(self) -> Any:
        return ("geosdm.Reference", {k: (v.size, float(v.sum()), float(v[0]), float(v[-1]))
                                     for k, v in self.numeric.items()}, self.categories)


def reference_from(X: pd.DataFrame | Mapping[str, Any], variables: Sequence[str], *,
                   model: MultiSpeciesSDM | None = None) -> Reference:
    """The :class:`Reference` of ``variables`` in the training data ``X`` (categorical ones from ``model``).

    ``X`` is typically the training table; duplicated sites count once per row, as the model saw them.
    """
    cats = dict(model.encoder_.categories) if model is not None else {}
    names = list(X.columns) if isinstance(X, pd.DataFrame) else list(X)
    missing = [v for v in variables if v not in names and v not in cats]
    if missing:
        raise MissingVariableError(f"training data lack {missing}; pass the training table with the model covariates")
    numeric = {}
    for v in variables:
        if v in cats:
            continue
        vals = pd.to_numeric(pd.Series(np.asarray(X[v])), errors="coerce").to_numpy(dtype="float64")
        numeric[v] = vals[np.isfinite(vals)]
    return Reference(numeric, {v: cats[v] for v in variables if v in cats})


def _similarity(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """MESS similarity (percent) of ``values`` to the sorted reference ``ref`` (NaN stays NaN)."""
    lo, hi = ref[0], ref[-1]
    span = hi - lo if hi > lo else 1.0
    f = 100.0 * np.searchsorted(ref, values, side="left") / ref.size
    out = np.where(f <= 50, 2 * f, 2 * (100 - f))
    out = np.where(values < lo, 100.0 * (values - lo) / span, out)
    out = np.where(values > hi, 100.0 * (hi - values) / span, out)
    return np.where(np.isfinite(values), out, np.nan)


def _categorical_similarity(values: np.ndarray, seen: Sequence[Any]) -> np.ndarray:
    known = np.isin(values, np.array([float(c) for c in seen if _is_number(c)]))
    return np.where(np.isfinite(values), np.where(known, 100.0, -100.0), np.nan)


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _mess_block(ref: Reference, data: np.ndarray, *, variables: tuple[str, ...], per_variable: bool) -> np.ndarray:
    """``(2 [+ V], by, bx)``: MESS, index of the most dissimilar variable [, per-variable similarity]."""
    data = np.asarray(data, dtype=np.float64)
    sim = np.empty(data.shape, dtype=np.float64)
    for i, v in enumerate(variables):
        sim[i] = (_categorical_similarity(data[i], ref.categories[v]) if v in ref.categories
                  else _similarity(data[i], ref.numeric[v]))
    bad = ~np.isfinite(sim).all(axis=0)
    filled = np.where(np.isfinite(sim), sim, np.inf)
    idx = np.argmin(filled, axis=0).astype(np.float64)
    low = np.min(filled, axis=0)
    low[bad] = np.nan
    idx[bad] = np.nan
    parts = [low[None], idx[None]] + ([sim] if per_variable else [])
    return np.concatenate(parts).astype(np.float32)


def mess_block(reference: Reference, data: np.ndarray, *, per_variable: bool = False) -> np.ndarray:
    """MESS of one in-memory block ``(V, by, bx)`` of ``reference.variables`` (in that order): float32
    ``(2 [+ V], by, bx)``, the MESS, the index of the most dissimilar variable [, per-variable similarity], as
    :func:`mess` computes per tile (for tile tasks that already hold the covariates, e.g. projections)."""
    return _mess_block(reference, data, variables=tuple(reference.variables), per_variable=per_variable)


def mess_points(reference: Reference, X: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
    """MESS, most dissimilar variable and per-variable similarity at points (eager).

    Example
    -------
    >>> mess_points(reference_from(train, cols), test_sites)["mess"].lt(0).mean()  # doctest: +SKIP
    """
    variables = tuple(reference.variables)
    data = np.stack([pd.to_numeric(pd.Series(np.asarray(X[v])), errors="coerce").to_numpy(dtype="float64")
                     for v in variables])[:, :, None]
    out = _mess_block(reference, data, variables=variables, per_variable=True)[:, :, 0]
    frame = pd.DataFrame({"mess": out[0]}, index=X.index if isinstance(X, pd.DataFrame) else None)
    idx = out[1]
    frame["most_dissimilar"] = [variables[int(i)] if np.isfinite(i) else None for i in idx]
    for i, v in enumerate(variables):
        frame[f"similarity_{v}"] = out[2 + i]
    return frame


def mess(
    reference: Reference,
    cube: xr.Dataset | str | PathLike[str],
    *,
    per_variable: bool = True,
    tile_shape: tuple[int, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Lazy MESS map of ``cube`` against the training ``reference``.

    Parameters
    ----------
    reference
        Training data per variable (:func:`reference_from`).
    cube
        Covariate cube (Dataset or Zarr path/URL) holding the reference's variables on ``(y, x)``.
    per_variable
        Add ``similarity`` ``(variable, y, x)``, each variable's similarity.
    tile_shape
        Cells (y, x) per task and chunk (default: the cube's shards).
    storage_options
        fsspec options to open a remote cube.

    Returns
    -------
    xarray.Dataset
        float32 ``mess`` ``(y, x)`` (percent; < 0: outside the training range of at least one variable),
        ``most_dissimilar`` ``(y, x)`` (index into the ``variable`` coordinate; names in its attrs), and
        optionally ``similarity`` ``(variable, y, x)``; NaN where an input is NaN.

    Example
    -------
    >>> m = mess(reference_from(table, model.feature_names_, model=model), "cube.zarr")  # doctest: +SKIP
    >>> write_layers(m, "mess.zarr")  # doctest: +SKIP
    """
    from geosdm.predict.lazy import georeferenced, open_input
    from geosdm.predict.stac import period_attrs

    if not isinstance(reference, Reference):
        raise InputError(f"reference must be a Reference (see reference_from), got {type(reference).__name__}")
    variables = tuple(reference.variables)
    stacked, ds, _ = open_input(cube, variables, tile_shape=tile_shape, storage_options=storage_options)
    token = dask.base.tokenize(reference, stacked.name, per_variable)
    ref_key = dask.delayed(reference, name=f"geosdm-mess-reference-{token}", traverse=False, pure=True)
    n_out = 2 + (len(variables) if per_variable else 0)
    block = da.map_blocks(_mess_block, ref_key, stacked, variables=variables, per_variable=bool(per_variable),
                          chunks=((n_out,), *stacked.chunks[1:]), dtype=np.float32,
                          meta=np.empty((0, 0, 0), dtype=np.float32), name=f"geosdm-mess-{token}")
    coords: dict[str, Any] = {"y": ds["y"], "x": ds["x"], "variable": list(variables)}
    if "spatial_ref" in ds.coords:
        coords["spatial_ref"] = ds["spatial_ref"]
    out = xr.Dataset(coords=coords, attrs={
        "geosdm:cube": str(cube) if not isinstance(cube, xr.Dataset) else "<xarray.Dataset>",
        "geosdm:cube_fingerprint": ds.attrs.get("geosdm:fingerprint", ""),
        "geosdm:reference_token": token, **period_attrs(ds.attrs)})
    out["mess"] = xr.DataArray(block[0], dims=("y", "x"), attrs={
        "long_name": "multivariate environmental similarity (MESS); < 0 outside the training range", "units": "%"})
    out["most_dissimilar"] = xr.DataArray(block[1], dims=("y", "x"), attrs={
        "long_name": "index of the most dissimilar variable", "flag_values": list(range(len(variables))),
        "flag_meanings": " ".join(variables)})
    if per_variable:
        out["similarity"] = xr.DataArray(block[2:], dims=("variable", "y", "x"), attrs={
            "long_name": "environmental similarity to the training data per variable", "units": "%"})
    return georeferenced(out)
