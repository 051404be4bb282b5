"""Background points on the grid: uniform over valid cells, target-group, or weighted by a bias layer.

Every sampler is seeded (``seed``: int or :class:`numpy.random.Generator`), draws distinct cells without
replacement, and returns a records table of ``kind="background"`` rows at cell centres in the grid CRS with
``row``/``col`` columns. Weighted draws use the Efraimidis-Spirakis keys (one pass, O(cells)).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from os import PathLike
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import GridError, InputError
from geosdm.records.coords import cell_centres
from geosdm.records._cube import CubeSource, cube_source
from geosdm.records.effort import record_counts
from geosdm.records.schema import conform, crs_string

__all__ = [
    "bias_background",
    "sample_background",
    "target_group_background",
    "uniform_background",
    "valid_mask",
]

Seed = int | np.random.Generator | None


def valid_mask(
    cube: CubeSource | xr.Dataset | str | PathLike[str], *, variables: Iterable[str] | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Boolean ``(y, x)`` mask of cells where every covariate is finite (reads the cube chunk by chunk).

    Parameters
    ----------
    cube
        Covariate cube, the path of its Zarr store, or an opened :class:`CubeSource`.
    variables
        Covariates that must be valid (default: all except QA ``s2_count_*``).

    Example
    -------
    >>> mask = valid_mask("cube.zarr")  # doctest: +SKIP
    """
    src = cube_source(cube, variables=variables, n_threads=n_threads)
    mask = np.ones(tuple(src.geobox.shape), dtype=bool)

    for name in src.variables:
        row_edges, col_edges = src.blocks[name]
        windows = [(r0, r1, c0, c1) for r0, r1 in pairwise(row_edges) for c0, c1 in pairwise(col_edges)]

        def update(w: tuple[int, int, int, int], name: str = name) -> None:  # blocks are disjoint: thread-safe
            r0, r1, c0, c1 = w
            mask[r0:r1, c0:c1] &= np.isfinite(src.read(name, slice(r0, r1), slice(c0, c1)))

        src.map_threads(update, windows)
    return mask


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_grid_array(values: np.ndarray | xr.DataArray, geobox: GeoBox, what: str) -> np.ndarray:
    if isinstance(values, xr.DataArray):
        import odc.geo.xr  # noqa: F401

        other = values.odc.geobox
        if other is not None and other != geobox:
            raise GridError(f"{what} is on grid {other} but the target grid is {geobox}; reproject it first")
        values = values.values
    arr = np.asarray(values)
    if arr.shape != tuple(geobox.shape):
        raise GridError(f"{what} has shape {arr.shape}; it must match the grid shape {tuple(geobox.shape)} (y, x)")
    return arr


def _draw(weights: np.ndarray, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    """Flat indices of ``n`` distinct cells drawn with probability proportional to ``weights`` (0 = never)."""
    n = int(n)
    if n <= 0:
        raise InputError(f"n={n} background points requested; ask for at least 1")
    w = np.where(np.isfinite(weights), weights, 0.0).reshape(-1).astype("float64")
    if (w < 0).any():
        raise InputError(f"{what} has negative weights; bias layers must be >= 0")
    candidates = np.flatnonzero(w > 0)
    if n > len(candidates):
        raise InputError(
            f"{n} background points requested but only {len(candidates)} cells are eligible ({what}); "
            "ask for fewer points, relax the mask, or smooth the weights (bandwidth=)"
        )
    wc = w[candidates]
    if np.all(wc == wc[0]):
        return candidates[rng.choice(len(candidates), size=n, replace=False)]
    keys = rng.exponential(size=len(candidates)) / wc  # smallest n keys = weighted draw without replacement
    pick = np.argpartition(keys, n - 1)[:n]
    return candidates[pick[np.argsort(keys[pick])]]


def _background_table(geobox: GeoBox, flat: np.ndarray, method: str) -> pd.DataFrame:
    row, col = np.divmod(flat, geobox.shape[1])
    x, y = cell_centres(geobox, row, col)
    frame = pd.DataFrame(
        {
            "species": pd.NA,
            "x": x,
            "y": y,
            "crs": crs_string(geobox.crs),
            "kind": "background",
            "value": 0.0,
            "dataset": f"background:{method}",
            "row": row.astype("int64"),
            "col": col.astype("int64"),
        }
    )
    return conform(frame)


def uniform_background(
    geobox: GeoBox, n: int, *, mask: np.ndarray | xr.DataArray | None = None, seed: Seed = None
) -> pd.DataFrame:
    """``n`` background points drawn uniformly among valid cells (distinct cells, at cell centres).

    Parameters
    ----------
    geobox
        The grid.
    n
        Number of points.
    mask
        Boolean ``(y, x)`` array on the grid, True = valid (e.g. :func:`valid_mask`); default all cells.
    seed
        Seed or Generator.

    Example
    -------
    >>> bg = uniform_background(cube.odc.geobox, 10_000, mask=valid_mask(cube), seed=0)  # doctest: +SKIP
    """
    valid = np.ones(tuple(geobox.shape), bool) if mask is None else _check_grid_array(mask, geobox, "mask").astype(bool)
    return _background_table(geobox, _draw(valid.astype("float64"), n, _rng(seed), "uniform over the mask"), "uniform")


def bias_background(
    bias: np.ndarray | xr.DataArray,
    n: int,
    *,
    geobox: GeoBox | None = None,
    mask: np.ndarray | xr.DataArray | None = None,
    seed: Seed = None,
) -> pd.DataFrame:
    """``n`` background points drawn with probability proportional to a bias layer (sampling effort).

    Parameters
    ----------
    bias
        Non-negative ``(y, x)`` weights (NaN = 0); a DataArray on the grid or a numpy array with ``geobox``.
    n
        Number of points.
    geobox
        The grid (default: the DataArray's ``.odc.geobox``).
    mask
        Boolean validity mask on the grid.
    seed
        Seed or Generator.
    """
    if geobox is None:
        if not isinstance(bias, xr.DataArray):
            raise InputError("bias is a numpy array; pass geobox= to say which grid it is on")
        import odc.geo.xr  # noqa: F401

        geobox = bias.odc.geobox
        if geobox is None:
            raise GridError("bias DataArray has no grid (spatial_ref); pass geobox=")
    w = _check_grid_array(bias, geobox, "bias").astype("float64")
    if mask is not None:
        w = np.where(_check_grid_array(mask, geobox, "mask").astype(bool), w, 0.0)
    return _background_table(geobox, _draw(w, n, _rng(seed), "bias layer > 0"), "bias")


def target_group_background(
    records: pd.DataFrame,
    geobox: GeoBox,
    n: int,
    *,
    mask: np.ndarray | xr.DataArray | None = None,
    bandwidth: float = 0.0,
    seed: Seed = None,
) -> pd.DataFrame:
    """Target-group background: cells drawn in proportion to the records of a group of species.

    The records of the target group (species surveyed the same way) stand in for sampling effort
    (Phillips et al. 2009). Cells are weighted by their number of records, optionally smoothed by a Gaussian
    kernel of ``bandwidth`` cells so nearby unsampled cells can be drawn.

    Parameters
    ----------
    records
        Validated records table of the target group (all rows inside the grid).
    geobox
        The grid.
    n
        Number of points (at most the number of cells with positive weight).
    mask
        Boolean validity mask on the grid.
    bandwidth
        Gaussian smoothing sigma, in cells (0: record cells only).
    seed
        Seed or Generator.
    """
    counts = record_counts(records, geobox, bandwidth=bandwidth)
    if mask is not None:
        counts = np.where(_check_grid_array(mask, geobox, "mask").astype(bool), counts, 0.0)
    return _background_table(geobox, _draw(counts, n, _rng(seed), "target-group cells"), "target_group")


def sample_background(
    geobox: GeoBox,
    n: int,
    *,
    method: Literal["uniform", "target_group", "bias"] = "uniform",
    mask: np.ndarray | xr.DataArray | None = None,
    records: pd.DataFrame | None = None,
    bias: np.ndarray | xr.DataArray | None = None,
    bandwidth: float = 0.0,
    seed: Seed = None,
) -> pd.DataFrame:
    """Dispatch to :func:`uniform_background`, :func:`target_group_background` (needs ``records``) or
    :func:`bias_background` (needs ``bias``) — the single entry point used by the CLI and pipeline.
    """
    if method == "uniform":
        return uniform_background(geobox, n, mask=mask, seed=seed)
    if method == "target_group":
        if records is None:
            raise InputError("method='target_group' needs records= (the target group's records)")
        return target_group_background(records, geobox, n, mask=mask, bandwidth=bandwidth, seed=seed)
    if method == "bias":
        if bias is None:
            raise InputError("method='bias' needs bias= (a non-negative (y, x) layer on the grid)")
        return bias_background(bias, n, geobox=geobox, mask=mask, seed=seed)
    raise InputError(f"method={method!r} must be 'uniform', 'target_group' or 'bias'")
