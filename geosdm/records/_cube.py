"""Read windows of a covariate cube chunk by chunk (numpy), for extraction, patches and background masks.

A cube is an ``xr.Dataset`` following docs/architecture.md (2-D float32 ``(y, x)`` variables, ``spatial_ref``
coordinate) or the path/URL of its Zarr store. Paths are read with zarr directly (one read per shard, no dask
graph); in-memory or dask-backed Datasets are read through their arrays (one small synchronous compute per
block). Both give the same values: variables with CF scaling are always read through xarray.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from os import PathLike
from typing import Any, Final

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import GridError, InputError, MissingVariableError

__all__ = ["CubeSource", "categorical_kind", "covariate_names", "group_by_block", "cube_source"]

#: Variable-name prefixes that are QA layers, not covariates (docs/architecture.md).
QA_PREFIXES: Final = ("s2_count_",)
_CATEGORICAL: Final = ("fraction", "class")

Reader = Callable[[str, slice, slice], np.ndarray]


def covariate_names(ds: xr.Dataset) -> list[str]:
    """Names of the 2-D ``(y, x)`` data variables that are covariates (QA counts ``s2_count_*`` excluded)."""
    return [
        str(name)
        for name, var in ds.data_vars.items()
        if var.dims == ("y", "x") and not str(name).startswith(QA_PREFIXES)
    ]


def categorical_kind(var: xr.DataArray) -> str | None:
    """``"fraction"``/``"class"`` for categorical layers (attr ``categorical``), else None."""
    kind = var.attrs.get("categorical")
    if kind is None:
        return None
    if kind not in _CATEGORICAL:
        raise InputError(f"variable {var.name!r} has categorical={kind!r}; the cube convention allows {_CATEGORICAL}")
    return str(kind)


@dataclass(frozen=True, eq=False)
class CubeSource:
    """An opened cube: the lazy Dataset (coords, attrs), its grid, and a numpy window reader per variable."""

    ds: xr.Dataset
    geobox: GeoBox
    variables: tuple[str, ...]
    read: Reader
    blocks: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (row edges, col edges) of its chunks
    n_threads: int

    def map_threads(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """Apply ``fn`` to each item in ``n_threads`` threads (zarr/numcodecs release the GIL while decoding)."""
        items = list(items)
        if self.n_threads <= 1 or len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(self.n_threads) as ex:
            return list(ex.map(fn, items))


def _edges(chunks: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def _regular_edges(size: int, step: int) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, size, step), size]).astype(np.int64)


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask")


def _needs_xarray_decoding(var: xr.DataArray) -> bool:
    enc = var.encoding
    return any(k in enc for k in ("scale_factor", "add_offset")) or var.dtype.kind not in "f"


def cube_source(
    cube: CubeSource | xr.Dataset | str | PathLike[str],
    *,
    variables: Iterable[str] | None = None,
    n_threads: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> CubeSource:
    """Open a cube for chunk-wise numpy reads (an already opened :class:`CubeSource` is reused, restricted to
    ``variables``: its store was checked once).

    Raises
    ------
    MissingVariableError
        A requested variable is absent.
    DataSourceError
        A store lacks shards its build wrote, or a variable's folder (:func:`geosdm.io.zarr.check_shards`).
    InputError
        A requested variable is not 2-D ``(y, x)``.
    GridError
        The cube has no CRS/grid (no ``spatial_ref`` coordinate).
    """
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

    if isinstance(cube, CubeSource):
        names = list(cube.variables) if variables is None else [str(v) for v in variables]
        missing = [v for v in names if v not in cube.variables]
        if missing:
            raise MissingVariableError(f"cube lacks variable(s) {missing}; it has {list(cube.variables)}")
        return replace(cube, variables=tuple(names), n_threads=n_threads if n_threads is not None else cube.n_threads)
    path: str | None = None
    if isinstance(cube, xr.Dataset):
        ds = cube
    else:
        path = os.fspath(cube)
        try:
            ds = xr.open_zarr(path, storage_options=storage_options, decode_coords="all", chunks=None)
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise InputError(f"cannot open cube {path!r} as Zarr ({err}); give the path of a cube store") from None
    geobox = ds.odc.geobox
    if not isinstance(geobox, GeoBox):
        raise GridError(
            "cube has no usable grid (no CRS / spatial_ref coordinate or non-affine coords); build it with "
            "geosdm.cube or attach one with odc.geo.xr.assign_crs(ds, crs)"
        )
    names = covariate_names(ds) if variables is None else [str(v) for v in variables]
    missing = [v for v in names if v not in ds.data_vars]
    if missing:
        raise MissingVariableError(
            f"cube lacks variable(s) {missing}; it has {covariate_names(ds)}. Pick from those or rebuild the cube"
        )
    not2d = {v: ds[v].dims for v in names if ds[v].dims != ("y", "x")}
    if not2d:
        raise InputError(f"cube variables {not2d} are not 2-D (y, x); select one slice first, e.g. cube.isel(time=0)")
    if not names:
        raise InputError("cube has no 2-D (y, x) covariate variables to read")
    if path is not None:  # a lost shard reads as NaN: covariates silently missing, rows dropped before training
        from geosdm.io.zarr import check_shards

        check_shards(path, names, storage_options=storage_options,
                     reading="reading covariates there would give NaN, and those records would be dropped or "
                             "trained on holes")
    threads = n_threads if n_threads is not None else min(4, os.cpu_count() or 1)

    blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    direct: dict[str, Any] = {}
    if path is not None:
        import zarr

        group = zarr.open_group(path, mode="r", storage_options=storage_options)
        for v in names:
            if _needs_xarray_decoding(ds[v]):
                continue
            arr = group[v]
            step = arr.shards or arr.chunks
            direct[v] = arr
            blocks[v] = (_regular_edges(arr.shape[0], step[0]), _regular_edges(arr.shape[1], step[1]))
    for v in names:
        if v in blocks:
            continue
        data = ds[v].data
        enc_step = ds[v].encoding.get("shards") or ds[v].encoding.get("chunks")
        ny, nx = ds[v].shape
        if _is_dask(data):
            blocks[v] = (_edges(data.chunks[0]), _edges(data.chunks[1]))
        elif path is not None and enc_step:  # lazily indexed store variable: read shard by shard
            blocks[v] = (_regular_edges(ny, enc_step[0]), _regular_edges(nx, enc_step[1]))
        else:  # in memory: one block
            blocks[v] = (np.array([0, ny], dtype=np.int64), np.array([0, nx], dtype=np.int64))

    def read(name: str, rows: slice, cols: slice) -> np.ndarray:
        if name in direct:
            return np.asarray(direct[name][rows, cols])
        var = ds[name]
        if _is_dask(var.data):
            return np.asarray(var.data[rows, cols].compute(scheduler="synchronous"))
        return np.asarray(var.isel(y=rows, x=cols).values)

    return CubeSource(ds, geobox, tuple(names), read, blocks, max(1, int(threads)))


def group_by_block(
    rows: np.ndarray, cols: np.ndarray, row_edges: np.ndarray, col_edges: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(block_row, block_col, point indices)`` for the chunks holding the cells (rows, cols).

    Points are sorted once by block id, so each block is visited once with all of its points.
    """
    if not len(rows):
        return
    bi = np.searchsorted(row_edges, rows, side="right") - 1
    bj = np.searchsorted(col_edges, cols, side="right") - 1
    nbj = len(col_edges) - 1
    bid = bi * nbj + bj
    order = np.argsort(bid, kind="stable")
    sorted_bid = bid[order]
    starts = np.flatnonzero(np.r_[True, sorted_bid[1:] != sorted_bid[:-1]]) if len(order) else np.array([], int)
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        b = int(sorted_bid[s])
        yield b // nbj, b % nbj, order[s:e]
