"""Covariates at points from a Zarr cube: vectorised and chunk-aware.

Points are mapped to cells with the grid's affine transform, grouped by the cube chunk (Zarr shard / dask block)
that holds them, and each needed chunk is read once as numpy and gathered with ``np.take``: memory stays at one
chunk per thread plus the output, and nothing goes through a dask graph or a pandas index lookup.

Categorical layers (attr ``categorical="fraction"`` or ``"class"``) are always read at the nearest cell, never
interpolated; ``class`` layers come back as pandas ``category`` columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from os import PathLike
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike

from geosdm.errors import InputError
from geosdm.records.coords import cell_index, pixel_coords, records_xy, transform_xy
from geosdm.records._cube import CubeSource, categorical_kind, group_by_block, cube_source
from geosdm.records.schema import check_records, crs_string

__all__ = ["extract_at", "extract_bias", "extract_covariates"]

log = logging.getLogger(__name__)

Method = Literal["nearest", "bilinear"]


def _gather_into(
    src: CubeSource,
    targets: Sequence[tuple[str, int]],
    rows: np.ndarray,
    cols: np.ndarray,
    out: np.ndarray,
    positions: np.ndarray,
) -> None:
    """Write variable ``name`` at cell (rows[i], cols[i]) to ``out[k, positions[i]]`` for each (name, k)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    layouts: dict[tuple[bytes, bytes], list[tuple[str, int]]] = {}
    for name, k in targets:
        re_, ce_ = src.blocks[name]
        layouts.setdefault((re_.tobytes(), ce_.tobytes()), []).append((name, k))
    tasks: list[tuple[str, int, slice, slice, np.ndarray, np.ndarray]] = []
    for group in layouts.values():
        row_edges, col_edges = src.blocks[group[0][0]]
        for bi, bj, idx in group_by_block(rows, cols, row_edges, col_edges):
            r0, r1, c0, c1 = row_edges[bi], row_edges[bi + 1], col_edges[bj], col_edges[bj + 1]
            flat = (rows[idx] - r0) * (c1 - c0) + (cols[idx] - c0)
            dest = positions[idx]
            tasks += [(name, k, slice(r0, r1), slice(c0, c1), dest, flat) for name, k in group]

    def take(task: tuple[str, int, slice, slice, np.ndarray, np.ndarray]) -> None:
        name, k, rs, cs, dest, flat = task
        out[k, dest] = np.take(src.read(name, rs, cs).reshape(-1), flat)  # disjoint (k, dest): thread-safe

    src.map_threads(take, tasks)


def gather_cells(src: CubeSource, names: Sequence[str], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values of ``names`` at cells (rows, cols), all inside the grid, reading each needed chunk once.

    Points are grouped by the chunk that holds them; each chunk of each variable is read once (numpy) and
    its points gathered with ``np.take``.

    Returns
    -------
    numpy.ndarray
        ``(len(names), n_points)``; float32 (float64 if a variable is float64).
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    ny, nx = src.geobox.shape
    if len(rows) and (rows.min() < 0 or rows.max() >= ny or cols.min() < 0 or cols.max() >= nx):
        raise InputError(f"cells outside the grid {tuple(src.geobox.shape)}; keep 0 <= row < {ny}, 0 <= col < {nx}")
    dtype = np.result_type(np.float32, *(src.ds[n].dtype for n in names))
    out = np.empty((len(names), len(rows)), dtype=dtype)
    _gather_into(src, [(n, k) for k, n in enumerate(names)], rows, cols, out, np.arange(len(rows)))
    return out


def _as_categorical(values: np.ndarray, var: xr.DataArray) -> pd.Categorical:
    ints = pd.array(np.where(np.isfinite(values), values, np.nan), dtype="Float64").astype("Int64")
    classes = var.attrs.get("class_values")
    categories = sorted(int(c) for c in classes) if classes is not None else sorted(ints.dropna().unique().tolist())
    return pd.Categorical(ints, categories=categories)


def _extract(src: CubeSource, gx: np.ndarray, gy: np.ndarray, method: Method) -> pd.DataFrame:
    if method not in ("nearest", "bilinear"):
        raise InputError(f"method={method!r} must be 'nearest' or 'bilinear'")
    n = len(gx)
    names = list(src.variables)
    kinds = {v: categorical_kind(src.ds[v]) for v in names}
    row, col, inside = cell_index(src.geobox, gx, gy)
    idx_in = np.flatnonzero(inside)
    if n and not len(idx_in):
        lo, hi = (float(np.nanmin(gx)), float(np.nanmin(gy))), (float(np.nanmax(gx)), float(np.nanmax(gy)))
        raise InputError(
            f"none of the {n} points falls inside the cube's grid (points span x {lo[0]:.6g}..{hi[0]:.6g}, "
            f"y {lo[1]:.6g}..{hi[1]:.6g} in {crs_string(src.geobox.crs)}; the grid covers "
            f"{tuple(round(float(b), 6) for b in src.geobox.boundingbox)}); check the records' CRS and "
            "coordinate order (lon/lat swapped?) or use the cube of their region"
        )
    if len(idx_in) < n:
        log.info("%d of %d points lie outside the cube grid; their covariates are NaN", n - len(idx_in), n)
    dtype = np.result_type(np.float32, *(src.ds[v].dtype for v in names))
    values = np.full((len(names), n), np.nan, dtype=dtype)  # one block: the DataFrame below wraps it, no copy
    nearest = [(v, k) for k, v in enumerate(names) if method == "nearest" or kinds[v] is not None]
    linear = [k for k, v in enumerate(names) if (v, k) not in nearest]
    if nearest:
        _gather_into(src, nearest, row[idx_in], col[idx_in], values, idx_in)
    if linear:
        values[linear] = _bilinear(src, [names[k] for k in linear], gx, gy, idx_in)
    frame = pd.DataFrame(values.T, columns=names, copy=False)
    for v in names:
        if kinds[v] == "class":
            frame[v] = _as_categorical(frame[v].to_numpy(), src.ds[v])
    return frame


def _bilinear(src: CubeSource, names: list[str], gx: np.ndarray, gy: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Bilinear interpolation between the 4 nearest cell centres; NaN corners are left out (weights renormalised)."""
    ny, nx = src.geobox.shape
    rowf, colf = pixel_coords(src.geobox, gx[idx], gy[idx])
    rowf, colf = rowf - 0.5, colf - 0.5  # relative to cell centres
    r0, c0 = np.floor(rowf).astype(np.int64), np.floor(colf).astype(np.int64)
    fr, fc = rowf - r0, colf - c0
    rr = np.clip(np.concatenate([r0, r0, r0 + 1, r0 + 1]), 0, ny - 1)
    cc = np.clip(np.concatenate([c0, c0 + 1, c0, c0 + 1]), 0, nx - 1)
    w = np.concatenate([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc]).reshape(4, -1)
    got = gather_cells(src, names, rr, cc)
    out = np.full((len(names), len(gx)), np.nan, dtype=got.dtype)
    for k in range(len(names)):
        corners = got[k].reshape(4, -1).astype("float64")
        ok = np.isfinite(corners)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k, idx] = (np.where(ok, corners, 0.0) * w).sum(axis=0) / (w * ok).sum(axis=0)
    return out


def extract_at(
    cube: xr.Dataset | str | PathLike[str],
    x: ArrayLike,
    y: ArrayLike,
    *,
    crs: Any | None = None,
    variables: Iterable[str] | None = None,
    method: Method = "nearest",
    n_threads: int | None = None,
) -> pd.DataFrame:
    """Covariate values at points.

    Parameters
    ----------
    cube
        Covariate cube (``xr.Dataset``) or the path/URL of its Zarr store (fastest: read with zarr directly).
    x, y
        Point coordinates in ``crs``.
    crs
        CRS of x/y (default: the cube's CRS).
    variables
        Covariates to read (default: every 2-D variable except QA ``s2_count_*``).
    method
        ``"nearest"`` (cell containing the point) or ``"bilinear"`` (continuous layers only; categorical layers
        always use the nearest cell).
    n_threads
        Threads decoding chunks (default ``min(4, cpu_count)``).

    Returns
    -------
    pandas.DataFrame
        One row per point, one column per variable (float32, NaN outside the grid or on nodata; ``class``
        layers as ``category``).

    Example
    -------
    >>> extract_at("cube.zarr", [3.87], [43.61], crs="EPSG:4326", variables=["elevation"])  # doctest: +SKIP
    """
    src = cube_source(cube, variables=variables, n_threads=n_threads)
    gx, gy = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    if gx.shape != gy.shape or gx.ndim != 1:
        raise InputError(f"x and y must be 1-D arrays of equal length; got shapes {gx.shape} and {gy.shape}")
    if crs is not None:
        gx, gy = transform_xy(gx, gy, crs, src.geobox.crs)
    return _extract(src, gx, gy, method)


def extract_covariates(
    cube: CubeSource | xr.Dataset | str | PathLike[str],
    records: pd.DataFrame,
    *,
    variables: Iterable[str] | None = None,
    method: Method = "nearest",
    n_threads: int | None = None,
) -> pd.DataFrame:
    """Copy of ``records`` with one column per cube covariate, read at each record's point.

    Parameters
    ----------
    cube
        Covariate cube, the path/URL of its Zarr store, or an opened :class:`CubeSource`.
    records
        Records table (any CRS per row; reprojected to the cube's CRS).
    variables, method, n_threads
        See :func:`extract_at`.

    Returns
    -------
    pandas.DataFrame
        ``records`` (same index) plus the covariate columns; existing columns of the same names are replaced.

    Example
    -------
    >>> table = extract_covariates("cube.zarr", valid_records)  # doctest: +SKIP
    """
    check_records(records)
    src = cube_source(cube, variables=variables, n_threads=n_threads)
    gx, gy = records_xy(records, src.geobox.crs)
    values = _extract(src, gx, gy, method)
    values.index = records.index
    out = records.drop(columns=[c for c in values.columns if c in records.columns])
    return pd.concat([out, values], axis=1)


def extract_bias(source: xr.Dataset | str | PathLike[str] | None, table: pd.DataFrame, names: Sequence[str], *,
                 log: bool = False) -> pd.DataFrame:
    """Observer-bias layers ``names`` at the table's sites, read from ``source`` (None: already in the table),
    as their log when ``log`` (bias layers are relative intensities; floored at 1e-12 before the log).

    Example
    -------
    >>> table = extract_bias("truth.zarr", table, ["bias"], log=True)  # doctest: +SKIP
    """
    if source is not None:
        table = extract_covariates(source, table, variables=list(names))
    if log:
        for b in names:
            table[b] = np.log(np.maximum(table[b].to_numpy(dtype="float64"), 1e-12))
    return table
