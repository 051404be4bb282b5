"""Coordinate helpers shared by the records modules: reprojection and point -> grid cell lookup."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.records.schema import crs_string

__all__ = ["apply_affine", "cell_centres", "cell_index", "pixel_coords", "records_xy", "transform_xy"]


def transform_xy(x: np.ndarray, y: np.ndarray, src: Any, dst: Any) -> tuple[np.ndarray, np.ndarray]:
    """Reproject coordinate arrays from ``src`` to ``dst`` (always x/lon first); no copy when CRSs are equal."""
    src_s, dst_s = crs_string(src), crs_string(dst)
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    if src_s == dst_s:
        return x, y
    from pyproj import Transformer

    tr = Transformer.from_crs(src_s, dst_s, always_xy=True)
    xo, yo = tr.transform(x, y, errcheck=False)
    return np.asarray(xo, dtype="float64"), np.asarray(yo, dtype="float64")


def records_xy(records: pd.DataFrame, crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """x/y of every record in ``crs`` (each row reprojected from its own ``crs`` column value)."""
    for col in ("x", "y", "crs"):
        if col not in records.columns:
            raise InputError(f"records table lacks column {col!r}; read it with geosdm.records.read_records(...)")
    x = records["x"].to_numpy(dtype="float64", na_value=np.nan)
    y = records["y"].to_numpy(dtype="float64", na_value=np.nan)
    crs_col = records["crs"]
    if crs_col.isna().any():
        raise InputError(
            f"{int(crs_col.isna().sum())} record(s) have no CRS; set the `crs` column (e.g. 'EPSG:4326') "
            "or pass crs= when reading the file"
        )
    groups = pd.unique(crs_col)
    if len(groups) == 1:
        return transform_xy(x, y, groups[0], crs)
    xo, yo = np.empty_like(x), np.empty_like(y)
    for value in groups:
        sel = (crs_col == value).to_numpy()
        xo[sel], yo[sel] = transform_xy(x[sel], y[sel], value, crs)
    return xo, yo


def apply_affine(aff: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine transform to coordinate arrays (non-finite inputs give non-finite outputs)."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    with np.errstate(invalid="ignore", over="ignore"):
        return aff.a * x + aff.b * y + aff.c, aff.d * x + aff.e * y + aff.f


def pixel_coords(geobox: GeoBox, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, col) pixel coordinates of grid-CRS points; cell (i, j) spans [i, i+1) x [j, j+1)."""
    col, row = apply_affine(~geobox.affine, x, y)
    return row, col


def cell_index(geobox: GeoBox, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row/column of the cell containing each point (x/y in the grid CRS) and a mask of points inside the grid.

    Cells are half-open ``[edge, edge + res)``; rows and columns of outside points are set to -1.
    """
    rowf, colf = pixel_coords(geobox, x, y)
    ny, nx = geobox.shape
    with np.errstate(invalid="ignore"):
        inside = (rowf >= 0) & (rowf < ny) & (colf >= 0) & (colf < nx)
    row = np.full(rowf.shape, -1, dtype=np.int64)
    col = np.full(colf.shape, -1, dtype=np.int64)
    row[inside] = np.floor(rowf[inside]).astype(np.int64)
    col[inside] = np.floor(colf[inside]).astype(np.int64)
    return row, col, inside


def cell_centres(geobox: GeoBox, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid-CRS coordinates of the centres of cells (row, col)."""
    return apply_affine(geobox.affine, np.asarray(col, dtype="float64") + 0.5, np.asarray(row, dtype="float64") + 0.5)
