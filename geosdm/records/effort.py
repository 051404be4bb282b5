"""Sampling-effort surfaces a user can make from their own records: the target group's record density.

Presence-only records pile up where people look (towns, roads, reserves). Without a survey of observers, the
usual stand-in for that effort is the density of all records of the target group, species surveyed the same
way (Phillips et al. 2009; Fithian et al. 2015): counted per cell, smoothed with a Gaussian kernel so that
cells near visited ones count as visited, and floored so that no cell has zero effort. The surface feeds a model
as an observer-bias covariate (``train: bias_cube`` / ``bias_covariates: [record_density]`` / ``log_bias: true``),
where it explains the presence-only records' spatial pattern and is held constant at prediction.

Example
-------
>>> effort = record_density(records, cube.odc.geobox, bandwidth=10)   # doctest: +SKIP
>>> write_effort(effort, "records/effort.zarr")                       # doctest: +SKIP
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.records.gridding import assign_cells

__all__ = ["EFFORT_VARIABLE", "record_counts", "record_density", "write_effort"]

#: Name of the effort layer in the stores :func:`write_effort` writes.
EFFORT_VARIABLE = "record_density"


def record_counts(records: pd.DataFrame, geobox: GeoBox, *, bandwidth: float = 0.0) -> np.ndarray:
    """Records per cell on ``geobox`` (float64, ``(y, x)``), smoothed by a Gaussian of ``bandwidth`` cells."""
    if bandwidth < 0:
        raise InputError(f"bandwidth={bandwidth} must be >= 0 (cells)")
    on_grid = assign_cells(records, geobox)
    counts = np.zeros(tuple(geobox.shape), dtype="float64")
    np.add.at(counts, (on_grid["row"].to_numpy(), on_grid["col"].to_numpy()), 1.0)
    if bandwidth > 0:
        from scipy.ndimage import gaussian_filter

        counts = gaussian_filter(counts, sigma=float(bandwidth), mode="constant", truncate=3.0)
    return counts


def record_density(
    records: pd.DataFrame,
    geobox: GeoBox,
    *,
    bandwidth: float = 10.0,
    kinds: tuple[str, ...] = ("presence_only",),
    floor: float = 0.01,
) -> xr.DataArray:
    """The target group's record density on ``geobox``: an observer-effort layer made from the records alone.

    Parameters
    ----------
    records
        Records table (the records schema); rows of ``kinds`` inside the grid count, one per record.
    geobox
        The cube's grid.
    bandwidth
        Gaussian smoothing sigma in cells (e.g. 10 cells of 100 m: effort spreads about 1 km around a record).
    kinds
        Record kinds that count (default presence-only: surveys follow a design, not observers' habits).
    floor
        Added everywhere, as a share of the mean density, so no cell has zero effort (its log stays finite).

    Returns
    -------
    xarray.DataArray
        ``record_density`` ``(y, x)`` float32 in records per cell with the grid's ``spatial_ref``; mean ~ 1 + floor.
    """
    from geosdm.grid import grid_coords

    sel = records[records["kind"].astype(str).isin(kinds)]
    if sel.empty:
        raise InputError(f"no records of kind {list(kinds)} to make an effort surface from; pass records that "
                         "include them or choose other kinds=")
    if floor <= 0:
        raise InputError(f"floor={floor} must be > 0 (a zero-effort cell has no finite log)")
    counts = record_counts(sel, geobox, bandwidth=bandwidth)
    mean = float(counts.mean())
    if mean <= 0:
        raise InputError(f"none of the {len(sel)} records falls on the grid; check their CRS")
    density = counts / mean + floor
    return xr.DataArray(
        density.astype("float32"), dims=("y", "x"), coords=grid_coords(geobox), name=EFFORT_VARIABLE,
        attrs={"long_name": "target-group record density (observer effort proxy)",
               "units": "1 (relative to the mean)", "bandwidth_cells": float(bandwidth), "kinds": list(kinds),
               "n_records": int(len(sel)), "floor": float(floor)},
    )


def write_effort(effort: xr.DataArray, path: str | PathLike[str], *,
                 storage_options: dict[str, Any] | None = None) -> str:
    """Write an effort layer as a one-variable Zarr store (replacing an older one atomically per tile)."""
    from geosdm.io.layers import write_layers

    ny, nx = effort.shape
    tile = (min(ny, 1024), min(nx, 1024))
    write_layers(effort.chunk({"y": tile[0], "x": tile[1]}).to_dataset(name=EFFORT_VARIABLE), path, tile_shape=tile, dtypes="float32", attrs=effort.attrs,
                 storage_options=storage_options, overwrite=True, desc="effort")
    return str(path)
