"""Regions for explanations: polygons (GeoDataFrame / GeoJSON) or square spatial blocks, at points and on grids.

* :func:`point_regions` labels table rows (points) by the polygon that contains them or the spatial block
  they fall in, for per-region permutation importance.
* :func:`region_raster` is the same labelling as a lazy ``(y, x)`` integer raster on a cube's grid (one
  rasterisation task per tile; a cell belongs to the polygon containing its centre, later polygons win).
* :func:`aggregate_regions` reduces any lazy layer Dataset (attribution cube, extrapolation map, predictions)
  to one value per region and layer (mean of ``|value|`` by default), lazily: one partial sum per tile, summed.

Spatial blocks are squares of ``block_size`` CRS units aligned to the grid's top-left corner (as
:class:`geosdm.records.SpatialBlockKFold` with a ``geobox``); they are labelled ``"r<row>c<col>"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from geosdm.errors import DataSourceError, InputError, MissingVariableError

__all__ = ["Regions", "aggregate_regions", "point_regions", "read_regions", "region_raster"]

log = logging.getLogger(__name__)

#: A region definition: polygons (GeoDataFrame or a vector file path) or a spatial block side (CRS units).
Regions = Any


def read_regions(regions: Any, *, field: str | None = None) -> Any:
    """A GeoDataFrame of polygons from a GeoDataFrame or a vector file (GeoJSON, GeoPackage, Shapefile...).

    ``field`` names the column holding region names (default: ``name`` if present, else the row number).

    Raises
    ------
    DataSourceError
        The file cannot be read.
    InputError
        No polygon, or no CRS.
    MissingVariableError
        ``field`` is not a column.
    """
    import geopandas as gpd

    if isinstance(regions, (str, PathLike)):
        try:
            gdf = gpd.read_file(regions)
        except Exception as err:  # noqa: BLE001  (fiona/pyogrio raise many types)
            raise DataSourceError(f"cannot read regions from {str(regions)!r} ({err}); give a GeoJSON, GeoPackage or "
                                  "Shapefile path, or a GeoDataFrame") from None
    elif isinstance(regions, gpd.GeoDataFrame):
        gdf = regions
    else:
        raise InputError(f"regions must be a GeoDataFrame, a vector file path or a block size; got "
                         f"{type(regions).__name__}")
    gdf = gdf[gdf.geometry.notna() & gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    if gdf.empty:
        raise InputError("regions hold no polygon; give (multi)polygons")
    if gdf.crs is None:
        raise InputError("regions have no CRS; set one (gdf.set_crs(...)) or write it in the file")
    if field is not None and field not in gdf.columns:
        raise MissingVariableError(f"regions lack the field {field!r}; columns are {list(gdf.columns)}")
    col = field or ("name" if "name" in gdf.columns else None)
    names = gdf[col].astype(str).to_numpy() if col else np.array([str(i) for i in range(len(gdf))])
    if len(set(names)) != len(names):
        raise InputError(f"region names in {col!r} are not unique; choose another field= or dissolve them first")
    out = gdf[["geometry"]].copy()
    out["region"] = names
    return out.reset_index(drop=True)


def _block_size(regions: Any) -> float | None:
    if isinstance(regions, (int, float, np.integer, np.floating)) and not isinstance(regions, bool):
        if not regions > 0:
            raise InputError(f"a block size must be > 0 CRS units, got {regions}")
        return float(regions)
    return None


def point_regions(x: np.ndarray, y: np.ndarray, regions: Regions, *, crs: Any, geobox: Any = None,
                  field: str | None = None) -> np.ndarray:
    """Region label (str, ``""`` outside every polygon) of each point ``(x, y)`` given in ``crs``.

    Parameters
    ----------
    x, y
        Point coordinates in ``crs``.
    regions
        Polygons (GeoDataFrame / vector file) or a spatial block side in CRS units.
    crs
        CRS of the points (blocks are measured in it; polygons are reprojected to it).
    geobox
        Grid whose top-left corner anchors the blocks (default: the points' min x / max y).
    field
        Region name column of the polygons.

    Example
    -------
    >>> labels = point_regions(t.x.values, t.y.values, 5_000, crs="EPSG:2154")  # doctest: +SKIP
    """
    x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
    size = _block_size(regions)
    if size is not None:
        x0 = float(geobox.affine.c) if geobox is not None else float(np.nanmin(x))
        y0 = float(geobox.affine.f) if geobox is not None else float(np.nanmax(y))
        r = np.floor((y0 - y) / size).astype(int)
        c = np.floor((x - x0) / size).astype(int)
        return np.char.add(np.char.add("r", r.astype(str)), np.char.add("c", c.astype(str)))
    import geopandas as gpd

    gdf = read_regions(regions, field=field).to_crs(crs)
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=crs)
    hit = gpd.sjoin(pts, gdf, how="left", predicate="within")
    hit = hit[~hit.index.duplicated(keep="last")]
    return hit["region"].fillna("").astype(str).to_numpy()


def _rasterize(block: np.ndarray, *, shapes: Sequence[tuple[Any, int]], geobox: Any,
               block_info: dict[Any, Any] | None = None) -> np.ndarray:
    from rasterio.features import rasterize

    (y0, y1), (x0, x1) = block_info[None]["array-location"]  # type: ignore[index]
    sub = geobox[y0:y1, x0:x1]
    if not shapes:
        return np.full((y1 - y0, x1 - x0), -1, dtype=np.int32)
    return rasterize(shapes, out_shape=(y1 - y0, x1 - x0), transform=sub.affine, fill=-1, dtype="int32")


def region_raster(ds: xr.Dataset | xr.DataArray, regions: Regions, *, field: str | None = None,
                  tile_shape: tuple[int, int] | None = None) -> tuple[xr.DataArray, list[str]]:
    """Lazy ``(y, x)`` int32 region index on ``ds``'s grid (-1 outside every region) and the region names.

    Parameters
    ----------
    ds
        Anything on the grid (its ``odc`` GeoBox and y/x chunks are used).
    regions
        Polygons (GeoDataFrame / vector file) or a spatial block side in CRS units.
    field
        Region name column of the polygons.
    tile_shape
        Chunks (y, x) (default: ``ds``'s).

    Example
    -------
    >>> labels, names = region_raster(attr, "departements.geojson", field="code")  # doctest: +SKIP
    """
    import odc.geo.xr  # noqa: F401

    gbox = ds.odc.geobox
    if gbox is None or gbox.crs is None:
        raise InputError("ds has no georeferencing (spatial_ref / CRS); keep the cube's spatial_ref coordinate")
    ny, nx = gbox.shape
    if tile_shape is None:
        var = ds if isinstance(ds, xr.DataArray) else next(iter(ds.data_vars.values()))
        chunks = var.chunks
        yx = ((max(chunks[-2]), max(chunks[-1])) if chunks else (ny, nx))
    else:
        yx = tile_shape
    chunks = (da.core.normalize_chunks(int(yx[0]), (ny,))[0], da.core.normalize_chunks(int(yx[1]), (nx,))[0])
    size = _block_size(regions)
    if size is not None:
        res = abs(float(gbox.resolution.x)), abs(float(gbox.resolution.y))
        by, bx = max(1, round(size / res[1])), max(1, round(size / res[0]))
        nby, nbx = -(-ny // by), -(-nx // bx)
        rows = da.arange(ny, chunks=chunks[0], dtype=np.int32) // by
        cols = da.arange(nx, chunks=chunks[1], dtype=np.int32) // bx
        index = rows[:, None] * np.int32(nbx) + cols[None, :]
        names = [f"r{r}c{c}" for r in range(nby) for c in range(nbx)]
    else:
        gdf = read_regions(regions, field=field).to_crs(gbox.crs.to_wkt())
        shapes = tuple((geom, i) for i, geom in enumerate(gdf.geometry))
        token = dask.base.tokenize(gdf.to_wkb().to_numpy().tolist(), gbox, chunks)
        index = da.map_blocks(_rasterize, da.empty((ny, nx), chunks=chunks, dtype=np.int32), shapes=shapes,
                              geobox=gbox, dtype=np.int32, name=f"geosdm-regions-{token}")
        names = list(gdf["region"])
    coords = {"y": ds["y"], "x": ds["x"]}
    return xr.DataArray(index, dims=("y", "x"), coords=coords, name="region"), names


def _zonal(values: np.ndarray, labels: np.ndarray, n_regions: int, stat: str) -> np.ndarray:
    """``(2, R, L)``: per region and layer, the sum of (|)values(|) and the count of finite cells in one tile."""
    v = np.asarray(values, dtype=np.float64)
    lead = v.shape[:-2]
    v = v.reshape(-1, labels.size)
    lab = np.asarray(labels).ravel()
    out = np.zeros((2, n_regions, v.shape[0]), dtype=np.float64)
    inside = lab >= 0
    if not inside.any():
        return out.reshape(2, n_regions, *lead) if lead else out[..., 0]
    lab = lab[inside]
    v = v[:, inside]
    for i in range(v.shape[0]):
        ok = np.isfinite(v[i])
        w = np.abs(v[i, ok]) if stat == "mean_abs" else v[i, ok]
        out[0, :, i] = np.bincount(lab[ok], weights=w, minlength=n_regions)[:n_regions]
        out[1, :, i] = np.bincount(lab[ok], minlength=n_regions)[:n_regions]
    return out.reshape(2, n_regions, *lead) if lead else out[..., 0]


def aggregate_regions(ds: xr.Dataset, regions: Regions, *, field: str | None = None,
                      stat: Literal["mean_abs", "mean"] = "mean_abs") -> xr.Dataset:
    """Per region, the mean (of ``|value|`` by default) of every layer of ``ds``, lazily.

    Parameters
    ----------
    ds
        Lazy layers ``(*lead, y, x)`` or ``(y, x)`` with the grid's ``spatial_ref`` (e.g. an attribution cube:
        one ``(variable, y, x)`` variable per species).
    regions
        Polygons (GeoDataFrame / vector file) or a spatial block side in CRS units.
    field
        Region name column of the polygons.
    stat
        ``"mean_abs"`` (mean absolute attribution: how much each variable moves the prediction there) or
        ``"mean"`` (signed).

    Returns
    -------
    xarray.Dataset
        Each variable ``(region, *lead)`` (Dask-backed, one partial sum per tile), plus ``n_cells``
        ``(region,)``: the finite cells of the first layer counted.

    Example
    -------
    >>> per = aggregate_regions(attr, 5_000).compute()  # doctest: +SKIP
    >>> per["plant_01"].to_pandas()  # regions x variables  # doctest: +SKIP
    """
    if stat not in ("mean_abs", "mean"):
        raise InputError(f"stat={stat!r} must be 'mean_abs' or 'mean'")
    names_v = [str(n) for n, v in ds.data_vars.items() if v.dims[-2:] == ("y", "x")]
    if not names_v:
        raise InputError("ds has no (…, y, x) variable to aggregate")
    first = ds[names_v[0]]
    labels, names = region_raster(ds, regions, field=field)
    ychunks = first.chunks[-2] if first.chunks else (ds.sizes["y"],)
    xchunks = first.chunks[-1] if first.chunks else (ds.sizes["x"],)
    lab = labels.data.rechunk((ychunks, xchunks))
    lab_blocks = lab.to_delayed()
    n_reg = len(names)
    zonal = dask.delayed(_zonal, pure=True)
    out = xr.Dataset(coords={"region": names})
    count = None
    for name in names_v:
        var = ds[name]
        data = var.data if isinstance(var.data, da.Array) else da.from_array(var.data, chunks=(*var.shape[:-2], ychunks, xchunks))
        data = data.rechunk((*[-1] * (var.ndim - 2), ychunks, xchunks))
        blocks = data.to_delayed().reshape(-1, len(ychunks), len(xchunks))[0]
        lead = tuple(var.shape[:-2])
        parts = [da.from_delayed(zonal(blocks[i, j], lab_blocks[i, j], n_reg, stat), shape=(2, n_reg, *lead),
                                 dtype=np.float64)
                 for i in range(len(ychunks)) for j in range(len(xchunks))]
        total = da.stack(parts).sum(axis=0)
        mean = total[0] / da.where(total[1] > 0, total[1], np.nan)
        dims = ("region", *var.dims[:-2])
        out[name] = xr.DataArray(mean.astype(np.float32), dims=dims, attrs={
            **{k: v for k, v in var.attrs.items() if k != "grid_mapping"}, "geosdm:stat": stat})
        for d in var.dims[:-2]:
            if d in ds.coords and d not in out.coords:
                out = out.assign_coords({d: ds[d].values})
        if count is None:
            count = total[1].reshape(n_reg, -1)[:, 0]
    out["n_cells"] = xr.DataArray(count.astype(np.int64), dims=("region",))  # type: ignore[union-attr]
    out.attrs["geosdm:regions"] = f"blocks of {regions:g} CRS units" if _block_size(regions) else "polygons"
    return out
