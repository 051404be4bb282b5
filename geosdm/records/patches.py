"""k x k covariate patches around points (for CNNs), written to a Zarr v3 patch store.

Points are grouped by the cube chunk that holds them; for each group one window (the points' extent plus the
patch half-width) is read per variable as numpy, patches are cut with fancy indexing in batches, and written in
order to a store whose chunks hold ``chunk_points`` whole patches, so each store chunk is written once. Cells
outside the grid are NaN. Values are copied, never resampled: categorical layers stay categorical.

Store layout (one Zarr v3 group, consolidated metadata)::

    patches   float32 (sample, variable, py, px)   chunks (chunk_points, n_variables, size, size)
    x, y      float64 (sample)   centre-cell coordinates in the cube CRS
    row, col  int64   (sample)   centre cell in the cube grid
    record    int64   (sample)   row position of the point in the input records table
    attrs     variables, categorical {name: kind}, size, crs, geotransform, records (sidecar file name)
    records.parquet             the input records table (sidecar; ``record`` indexes its rows)

Samples are stored in chunk order (spatially grouped); shuffle when training.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError
from geosdm.records.coords import cell_centres
from geosdm.records._cube import CubeSource, categorical_kind, group_by_block, cube_source
from geosdm.records.gridding import assign_cells
from geosdm.records.schema import check_records, crs_string

__all__ = ["extract_patches", "open_patches"]

log = logging.getLogger(__name__)
RECORDS_FILE = "records.parquet"


def _read_window(src: CubeSource, names: list[str], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """(n_var, r1-r0, c1-c0) window, NaN where it extends past the grid."""
    ny, nx = src.geobox.shape
    win = np.full((len(names), r1 - r0, c1 - c0), np.nan, dtype=np.float32)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, ny), max(c0, 0), min(c1, nx)

    def fill(k: int) -> None:
        win[k, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = src.read(names[k], slice(rr0, rr1), slice(cc0, cc1))

    src.map_threads(fill, range(len(names)))
    return win


class _Writer:
    """Sequential writer of whole-chunk patch batches to the store."""

    def __init__(self, array: Any, chunk_points: int, shape: tuple[int, ...]) -> None:
        self.array, self.chunk_points, self.start, self.fill = array, chunk_points, 0, 0
        self.buffer = np.empty((chunk_points, *shape), dtype=np.float32)

    def add(self, patches: np.ndarray) -> None:
        i = 0
        while i < len(patches):
            take = min(self.chunk_points - self.fill, len(patches) - i)
            self.buffer[self.fill : self.fill + take] = patches[i : i + take]
            self.fill += take
            i += take
            if self.fill == self.chunk_points:
                self.flush()

    def flush(self) -> None:
        if self.fill:
            self.array[self.start : self.start + self.fill] = self.buffer[: self.fill]
            self.start += self.fill
            self.fill = 0


def extract_patches(
    cube: xr.Dataset | str | PathLike[str],
    records: pd.DataFrame,
    store: str | PathLike[str],
    *,
    size: int = 32,
    variables: Iterable[str] | None = None,
    chunk_points: int = 256,
    overwrite: bool = False,
    n_threads: int | None = None,
) -> Path:
    """Cut ``size`` x ``size`` cell patches centred on each record and write them to a Zarr v3 store.

    Parameters
    ----------
    cube
        Covariate cube or the path of its Zarr store.
    records
        Validated records table (all points inside the grid); its rows become the samples.
    store
        Output folder for the patch store (see the module docstring for the layout).
    size
        Patch side in cells; the centre cell is at index ``size // 2`` (odd sizes are centred exactly).
    variables
        Covariates (default: all except QA ``s2_count_*``).
    chunk_points
        Patches per store chunk (e.g. 256 x 30 variables x 32 x 32 x 4 B = 31 MB).
    overwrite
        Replace an existing store.
    n_threads
        Threads reading the cube.

    Returns
    -------
    Path
        The store folder; open it with :func:`open_patches`.

    Raises
    ------
    InputError
        Bad ``size``/``chunk_points``, an existing store without ``overwrite``, or points outside the grid.

    Example
    -------
    >>> extract_patches("cube.zarr", valid, "patches.zarr", size=33)  # doctest: +SKIP
    """
    import zarr

    check_records(records)
    if int(size) < 1 or int(chunk_points) < 1:
        raise InputError(f"size={size} and chunk_points={chunk_points} must be positive integers")
    size, chunk_points = int(size), int(chunk_points)
    out = Path(store)
    if out.exists():
        if not overwrite:
            raise InputError(f"patch store {str(out)!r} exists; pass overwrite=True or choose another path")
        shutil.rmtree(out)
    src = cube_source(cube, variables=variables, n_threads=n_threads)
    names = list(src.variables)
    on_grid = assign_cells(records, src.geobox)
    rows, cols = on_grid["row"].to_numpy(), on_grid["col"].to_numpy()
    n = len(rows)
    lo = size // 2
    row_edges, col_edges = src.blocks[names[0]]
    groups = list(group_by_block(rows, cols, row_edges, col_edges))
    order = np.concatenate([g[2] for g in groups]) if groups else np.array([], dtype=np.int64)

    group = zarr.open_group(os.fspath(out), mode="w", zarr_format=3)
    shape = (len(names), size, size)
    arr = group.create_array(
        "patches",
        shape=(n, *shape),
        chunks=(chunk_points, *shape),
        dtype="float32",
        fill_value=np.nan,
        dimension_names=("sample", "variable", "py", "px"),
        attributes={"long_name": "covariate patches", "grid_mapping": "none"},
    )
    x, y = cell_centres(src.geobox, rows[order], cols[order])
    for name, values in {
        "x": np.asarray(x, dtype="float64"),
        "y": np.asarray(y, dtype="float64"),
        "row": rows[order].astype("int64"),
        "col": cols[order].astype("int64"),
        "record": order.astype("int64"),
    }.items():
        a = group.create_array(name, shape=(n,), chunks=(max(n, 1),), dtype=values.dtype, dimension_names=("sample",))
        if n:
            a[:] = values
    writer = _Writer(arr, chunk_points, shape)
    offs = np.arange(size) - lo
    for _bi, _bj, idx in groups:
        r, c = rows[idx], cols[idx]
        r0, r1, c0, c1 = int(r.min()) - lo, int(r.max()) - lo + size, int(c.min()) - lo, int(c.max()) - lo + size
        win = _read_window(src, names, r0, r1, c0, c1)
        for s in range(0, len(idx), chunk_points):
            rr = (r[s : s + chunk_points] - r0)[:, None] + offs  # (m, size) window rows
            cc = (c[s : s + chunk_points] - c0)[:, None] + offs
            batch = win[:, rr[:, :, None], cc[:, None, :]]  # (n_var, m, size, size)
            writer.add(np.ascontiguousarray(batch.transpose(1, 0, 2, 3)))
    writer.flush()
    group.attrs.update(
        {
            "variables": names,
            "categorical": {v: k for v in names if (k := categorical_kind(src.ds[v])) is not None},
            "size": size,
            "crs": crs_string(src.geobox.crs),
            "geotransform": list(src.geobox.affine)[:6],
            "records": RECORDS_FILE,
        }
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(os.fspath(out))
    records.reset_index(drop=True).to_parquet(out / RECORDS_FILE, index=False)  # after consolidation: not listed
    log.info("wrote %d patches of %d x %d x %d to %s", n, len(names), size, size, out)
    return out


def open_patches(store: str | PathLike[str]) -> xr.Dataset:
    """Open a patch store lazily as an ``xr.Dataset`` with a ``variable`` coordinate (names) on ``patches``.

    The input records are in ``<store>/records.parquet``; ``ds["record"]`` indexes their rows.
    """
    p = Path(store)
    if not (p / "zarr.json").is_file():
        raise InputError(f"{str(p)!r} is not a patch store (no zarr.json); write one with extract_patches(...)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds = xr.open_zarr(os.fspath(p), consolidated=True)
    ds = ds.set_coords(["x", "y", "row", "col", "record"])
    return ds.assign_coords(variable=("variable", list(ds.attrs["variables"])))
