"""Plain rasters as cube sources: GeoTIFF/COG files (``kind: raster``) and NetCDF/Zarr datasets (``kind: dataset``).

Each asset of such a source is one :class:`RasterLayer`: a lazily indexed ``(time, y, x)`` array (rioxarray for
GeoTIFF, xarray for NetCDF/Zarr) and the :class:`~odc.geo.geobox.GeoBox` of its pixels. A tile reads only the
source window that covers it (``odc.geo.overlap.compute_reproject_roi``), pastes it when the grids align and
warps it with GDAL (``odc.geo.warp.rio_reproject``) otherwise, and hands the same :class:`Observations` to the
tile pipeline as the STAC path does, so masks, categorical fractions, composites, terrain, resume markers and
the tile = one task design are shared.

Why lazy indexing rather than Dask chunks inside a tile: a tile task needs one window of each file, and
windowed reads fetch exactly that window; Dask chunks of the file would over-read every chunk the window
touches and add a graph per tile. :func:`open_source` still returns the layers with Dask chunks for users who
want the whole raster lazily.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from odc.geo import CRS
from odc.geo.geobox import GeoBox

from geosdm._secrets import redact_url
from geosdm.cube._load import Observations
from geosdm.errors import DataSourceError, GridError, InputError, MissingVariableError
from geosdm.sources import AssetConfig, SourceConfig

__all__ = ["RASTER_KINDS", "RasterLayer", "open_layers", "open_source", "check_layers", "load_raster_observations",
           "raster_geobox", "read_layers"]

log = logging.getLogger(__name__)

#: Source kinds read by this module (everything else is read from STAC Items).
RASTER_KINDS = ("raster", "dataset")
#: one lock per opened file or dataset: tiles built in threads never read one handle at the same time
_READ_LOCKS: collections.defaultdict[str, threading.Lock] = collections.defaultdict(threading.Lock)
_X_NAMES = ("x", "lon", "longitude", "easting")
_Y_NAMES = ("y", "lat", "latitude", "northing")


@dataclass(frozen=True, eq=False)
class RasterLayer:
    """One asset of a raster/dataset source: lazy ``(time, y, x)`` values, their grid and how to decode them.

    ``data`` holds stored values (GeoTIFF DN, or what xarray decodes a NetCDF/Zarr variable to); physical value
    = ``data * scale + offset``, with ``nodata`` (and NaN) masked. ``times`` is empty for layers without time.
    """

    asset: str
    data: xr.DataArray
    geobox: GeoBox
    nodata: float | None
    scale: float
    offset: float
    times: tuple[dt.datetime, ...] = ()
    source: str = ""  # the file or dataset it is read from (one read lock each)


# --------------------------------------------------------------------------------------------------- opening


def _storage_options(src: SourceConfig) -> str:
    """The source's fsspec options as canonical JSON: a cache key even when they nest (``client_kwargs``)."""
    return json.dumps(dict(src.storage_options or {}), sort_keys=True)


def _dataset_format(url: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    path = url.rstrip("/")
    if path.endswith(".zarr") or path.endswith(".zarr.zip"):
        return "zarr"
    if path.lower().endswith((".nc", ".nc4", ".netcdf", ".h5", ".hdf5", ".cdf")):
        return "netcdf"
    if "://" not in url and os.path.isdir(url):
        return "zarr"
    raise InputError(
        f"cannot tell whether dataset {url!r} is NetCDF or Zarr from its name; add `format: netcdf` or "
        "`format: zarr` to the source definition"
    )


def _stamp(path: str) -> tuple[int, int, int] | None:
    """Identity of a local file or folder (inode, mtime, size); None for URLs. Part of the open-handle caches'
    keys, so a file rewritten in place is opened again instead of read through a stale handle."""
    if "://" in path and not path.startswith("file://"):
        return None
    try:
        st = os.stat(path.removeprefix("file://"))
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _source_stamps(src: SourceConfig, keys: Sequence[str]) -> tuple[tuple[int, int, int] | None, ...]:
    paths = [src.url or ""] if src.kind == "dataset" else [src.assets[k].href or "" for k in keys]
    return tuple(_stamp(p) for p in paths)


@functools.lru_cache(maxsize=32)
def _open_dataset(url: str, fmt: str, options: str = "{}", stamp: tuple[int, int, int] | None = None) -> xr.Dataset:
    """The dataset at ``url``, lazily indexed (no Dask), coordinates decoded (CF ``grid_mapping`` included).

    ``options``: fsspec storage options as JSON (hashable for the cache, nested mappings included); ``stamp``:
    :func:`_stamp` of ``url`` (cache key only).
    """
    storage_options = json.loads(options)
    try:
        if fmt == "zarr":
            return xr.open_dataset(url, engine="zarr", chunks=None, decode_coords="all",
                                   storage_options=storage_options or None)
        if "://" in url and not url.startswith("file://"):
            import fsspec

            handle = fsspec.open(url, mode="rb", **storage_options).open()
            return xr.open_dataset(handle, engine="h5netcdf", chunks=None, decode_coords="all")
        return xr.open_dataset(url.removeprefix("file://"), engine="h5netcdf", chunks=None, decode_coords="all")
    except FileNotFoundError:
        raise InputError(f"dataset {url!r} does not exist; check the source's `url`") from None
    except (OSError, ValueError, KeyError) as err:
        raise DataSourceError(f"cannot open dataset {url!r} as {fmt} ({type(err).__name__}: {err}); check the "
                              "URL, the `format:` and the credentials") from None


@functools.lru_cache(maxsize=64)
def _open_raster(href: str, stamp: tuple[int, int, int] | None = None) -> xr.DataArray:
    """A GeoTIFF/COG (local path, ``https://``, ``s3://``) as a lazily indexed ``(band, y, x)`` DataArray.

    ``stamp``: :func:`_stamp` of ``href`` (cache key only)."""
    import rasterio
    import rioxarray

    try:
        return rioxarray.open_rasterio(href, mask_and_scale=False, chunks=None, cache=False)  # type: ignore[return-value]
    except rasterio.errors.RasterioIOError as err:
        missing = "://" not in href and not os.path.exists(href)
        hint = ("the file does not exist; check the asset's `href`" if missing else
                f"{err}; the file is corrupt, truncated or not a GeoTIFF: check the `href`, copy the file again")
        raise InputError(f"cannot open raster {href!r}: {hint}") from None


def _cf_crs(data: xr.DataArray, ds: xr.Dataset | None) -> CRS | None:
    """CRS of a NetCDF/Zarr variable from its CF ``grid_mapping`` (or a ``spatial_ref``/``crs`` coordinate)."""
    import pyproj

    name = data.attrs.get("grid_mapping") or data.encoding.get("grid_mapping")
    candidates = [name] if name else []
    candidates += [c for c in ("spatial_ref", "crs") if c not in candidates]
    for cand in candidates:
        var = data.coords.get(cand)
        if var is None and ds is not None and cand in ds.variables:
            var = ds[cand]
        if var is None:
            continue
        attrs = var.attrs
        wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
        try:
            if wkt:
                return CRS(wkt)
            if "grid_mapping_name" in attrs:
                return CRS(pyproj.CRS.from_cf(dict(attrs)).to_wkt())
        except Exception as err:  # noqa: BLE001 - reported as a clear input error
            raise InputError(f"grid mapping {cand!r} of variable {data.name!r} is not a valid CRS ({err}); give "
                             "`crs:` in the source definition") from None
    return None


def _placeable(crs: CRS, src: SourceConfig, what: str) -> CRS:
    """``crs`` if it relates to longitude/latitude (so a grid can be placed); an engineering or unknown CRS
    (``LOCAL_CS``, an unnamed datum) is an :class:`InputError` naming the file and the fix."""
    import pyproj

    try:
        pyproj.Transformer.from_crs(crs.proj, pyproj.CRS("EPSG:4326"), always_xy=True)
    except pyproj.exceptions.ProjError:
        raise InputError(f"source {src.name!r}: {what} has CRS {crs.to_wkt()[:80]!r}, which cannot be related to "
                         "longitude/latitude (an unknown or local CRS), so its pixels cannot be placed; add "
                         "`crs: EPSG:NNNN` (the data's real CRS) to the source definition") from None
    return crs


def _xy_dims(data: xr.DataArray, what: str) -> tuple[str, str]:
    ydim = next((d for d in data.dims if str(d).lower() in _Y_NAMES), None)
    xdim = next((d for d in data.dims if str(d).lower() in _X_NAMES), None)
    if ydim is None or xdim is None:
        raise InputError(f"{what} has dimensions {list(data.dims)}; expected a y dimension (one of {_Y_NAMES}) "
                         f"and an x dimension (one of {_X_NAMES}); rename them in the file")
    return str(ydim), str(xdim)


def _degrees(data: xr.DataArray, ydim: str, xdim: str) -> bool:
    units = (str(data[ydim].attrs.get("units", "")), str(data[xdim].attrs.get("units", "")))
    return units[0].startswith("degree") and units[1].startswith("degree")


def _axis_geobox(data: xr.DataArray, ydim: str, xdim: str, crs: CRS, what: str) -> GeoBox:
    from odc.geo.math import affine_from_axis

    xx, yy = data[xdim].values.astype(np.float64), data[ydim].values.astype(np.float64)
    if xx.size < 2 or yy.size < 2:
        raise InputError(f"{what} has fewer than 2 cells along x or y; a grid needs at least 2 x 2 cells")
    for axis, name in ((xx, xdim), (yy, ydim)):
        step = np.diff(axis)
        if not np.allclose(step, step[0], rtol=1e-6, atol=0):
            raise InputError(f"{what}: coordinate {name!r} is not evenly spaced, so it is no regular grid; "
                             "resample it to a regular grid first")
    return GeoBox((yy.size, xx.size), affine_from_axis(xx, yy), crs)


def _times(data: xr.DataArray, time_dim: str) -> tuple[dt.datetime, ...]:
    import pandas as pd

    values = pd.to_datetime(data[time_dim].values)
    return tuple(t.to_pydatetime().replace(tzinfo=dt.timezone.utc) for t in values)


def _select_time(data: xr.DataArray, time_dim: str, when: str | None) -> xr.DataArray:
    if not when or time_dim not in data.dims:
        return data
    import pandas as pd

    start, _, end = str(when).partition("/")
    lo = None if start in ("", "..") else pd.Timestamp(start)
    hi = None if end in ("", "..") else pd.Timestamp(end or start) + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    times = pd.to_datetime(data[time_dim].values)
    keep = np.ones(times.size, bool)
    if lo is not None:
        keep &= times >= lo
    if hi is not None:
        keep &= times <= hi
    return data.isel({time_dim: np.flatnonzero(keep)})


def _dataset_layer(src: SourceConfig, key: str, asset: AssetConfig, when: str | None) -> RasterLayer:
    assert src.url is not None
    ds = _open_dataset(src.url, _dataset_format(src.url, src.format), _storage_options(src), _stamp(src.url))
    var = asset.variable or key
    if var not in ds.data_vars:
        raise MissingVariableError(f"source {src.name!r}: dataset {src.url!r} has no variable {var!r} (asset "
                                   f"{key!r}); it has {sorted(map(str, ds.data_vars))}. Set the asset's `variable:`")
    data = ds[var]
    what = f"variable {var!r} of {src.url!r}"
    ydim, xdim = _xy_dims(data, what)
    extra = [d for d in data.dims if d not in (ydim, xdim, src.time_dim)]
    if extra:
        raise InputError(f"{what} has dimensions {extra} besides time, y and x; select one level first "
                         "(one variable per level)")
    crs = _cf_crs(data, ds)
    if src.crs:
        if crs is not None and crs != CRS(src.crs):
            log.warning("source %s: %s declares %s; using the definition's crs %s", src.name, what, crs, src.crs)
        crs = CRS(src.crs)
    if crs is None and _degrees(data, ydim, xdim):
        crs = CRS("EPSG:4326")  # CF latitude/longitude coordinates without a grid mapping
    if crs is None:
        raise InputError(f"source {src.name!r}: {what} has no CRS (no CF `grid_mapping`, no `spatial_ref`, no "
                         "latitude/longitude units); add `crs: EPSG:NNNN` to the source definition")
    gbox = _axis_geobox(data, ydim, xdim, _placeable(crs, src, what), what)
    if src.time_dim in data.dims:
        data = _select_time(data, src.time_dim, when).transpose(src.time_dim, ydim, xdim)
        times = _times(data, src.time_dim)
    else:
        data = data.transpose(ydim, xdim).expand_dims("time")
        times = ()
    nodata = asset.nodata
    if nodata is None:
        fill = data.encoding.get("_FillValue", data.attrs.get("_FillValue"))
        nodata = None if fill is None or data.dtype.kind == "f" else float(fill)
    return RasterLayer(key, data, gbox, nodata, asset.scale, asset.offset, times, src.url)


def _band_index(da: xr.DataArray, asset: AssetConfig, key: str, href: str) -> int:
    """0-based index of the asset's band: ``band: N`` (1-based, as GDAL) or ``band: name`` (band description)."""
    n = da.sizes.get("band", 1)
    if asset.band is None:
        if n > 1:
            names = list(da.attrs.get("long_name", ())) if isinstance(da.attrs.get("long_name"), tuple) else []
            raise InputError(f"raster {href!r} has {n} bands; give asset {key!r} a `band:` (1..{n}"
                             + (f" or one of {names}" if names else "") + ")")
        return 0
    if isinstance(asset.band, int):
        if not 1 <= asset.band <= n:
            raise InputError(f"asset {key!r}: band {asset.band} is outside 1..{n} of {href!r}")
        return asset.band - 1
    names = da.attrs.get("long_name")
    names = list(names) if isinstance(names, (tuple, list)) else [names] if names else []
    if asset.band not in names:
        raise InputError(f"asset {key!r}: {href!r} has no band named {asset.band!r}; its bands are "
                         f"{names or 'unnamed (give the band number)'}")
    return names.index(asset.band)


def _raster_layer(src: SourceConfig, key: str, asset: AssetConfig) -> RasterLayer:
    assert asset.href is not None
    da = _open_raster(asset.href, _stamp(asset.href))
    band = _band_index(da, asset, key, asset.href)
    crs = da.rio.crs
    if src.crs:
        if crs is not None and CRS(crs.to_wkt()) != CRS(src.crs):
            log.warning("source %s: %s declares %s; using the definition's crs %s", src.name, asset.href, crs, src.crs)
        crs = src.crs
    if crs is None:
        raise InputError(f"source {src.name!r}: raster {asset.href!r} has no CRS; add `crs: EPSG:NNNN` to the "
                         "source definition")
    crs = _placeable(CRS(str(crs) if isinstance(crs, str) else crs.to_wkt()), src, f"raster {asset.href!r}")
    gbox = GeoBox(da.shape[-2:], da.rio.transform(), crs)
    nodata = asset.nodata
    if nodata is None:
        nd = da.rio.nodata
        nodata = None if nd is None or (isinstance(nd, float) and np.isnan(nd)) else float(nd)
    scale, offset = asset.scale, asset.offset
    data = da.isel(band=slice(band, band + 1)).rename(band="time")
    return RasterLayer(key, data, gbox, nodata, scale, offset, source=asset.href)


def open_layers(src: SourceConfig, assets: Sequence[str] | None = None, *, when: str | None = None) -> dict[str, RasterLayer]:
    """The lazily indexed layers of a ``raster`` or ``dataset`` source, one per data asset (nothing is read).

    Raises
    ------
    InputError, MissingVariableError
        A file that does not exist, a missing variable or band, no CRS anywhere, an irregular grid.
    """
    if src.kind not in RASTER_KINDS:
        raise InputError(f"source {src.name!r} is of kind {src.kind!r}; open_layers reads {RASTER_KINDS}")
    keys = list(assets or src.data_assets)
    if src.kind == "dataset":
        return {k: _dataset_layer(src, k, src.assets[k], when) for k in keys}
    return {k: _raster_layer(src, k, src.assets[k]) for k in keys}


def open_source(src: SourceConfig, *, chunks: Mapping[str, int] | None = None, when: str | None = None) -> xr.Dataset:
    """All data assets of a raster/dataset source as one lazy, Dask-chunked Dataset of physical values.

    Each variable keeps its own grid (dims ``time``, ``y_<band>``, ``x_<band>`` would differ between files),
    so this is for looking at a source, not for building: :func:`geosdm.cube.build_cube` reprojects tile by tile.
    """
    chunks = dict(chunks or {"y": 1024, "x": 1024})
    out = {}
    for key, layer in open_layers(src, when=when).items():
        da = layer.data
        ydim, xdim = da.dims[-2:]
        da = da.chunk({ydim: chunks.get("y", 1024), xdim: chunks.get("x", 1024)})
        vals = da.astype("float32")
        if layer.nodata is not None:
            vals = vals.where(da != layer.nodata)
        out[src.band_name(key)] = vals * np.float32(layer.scale) + np.float32(layer.offset)
    return xr.Dataset(out)


def raster_geobox(path: str, *, crs: str | None = None) -> GeoBox:
    """The grid of a raster file or dataset (``GridConfig.like``): its CRS, transform and shape, exactly."""
    if path.rstrip("/").endswith(".zarr") or path.lower().endswith((".nc", ".nc4", ".h5", ".cdf")) or (
        "://" not in path and os.path.isdir(path)
    ):
        ds = _open_dataset(path, _dataset_format(path, None), "{}", _stamp(path))
        var = next((v for v in ds.data_vars if len(ds[v].dims) >= 2), None)
        if var is None:
            raise InputError(f"dataset {path!r} has no 2-D variable to take a grid from")
        cfg = SourceConfig(name="grid", collection="grid", kind="dataset", url=path, crs=crs,
                           assets={str(var): AssetConfig(long_name=str(var), dtype=None)})
        gbox = _dataset_layer(cfg, str(var), cfg.assets[str(var)], None).geobox
        return gbox.flipy() if gbox.affine.e > 0 else gbox  # cubes are north-up (y decreasing)
    da = _open_raster(path, _stamp(path))
    file_crs = da.rio.crs
    if file_crs is None and crs is None:
        raise InputError(f"raster {path!r} has no CRS; give the grid's `crs:` beside `like:`")
    return GeoBox(da.shape[-2:], da.rio.transform(), CRS(crs) if crs else CRS(file_crs.to_wkt()))


def check_layers(src: SourceConfig, target: GeoBox, assets: Sequence[str] | None = None, *,
                 when: str | None = None) -> dict[str, RasterLayer]:
    """Open the layers and check they can fill ``target``: the grids overlap and time steps remain.

    Raises
    ------
    GridError
        No layer overlaps the cube's grid (the message gives both extents in lon/lat).
    """
    layers = open_layers(src, assets, when=when)
    target_ll = target.extent.to_crs("EPSG:4326")
    for key, layer in layers.items():
        extent = layer.geobox.extent.to_crs(target.crs)
        if not extent.intersects(target.extent):
            ll = tuple(round(v, 4) for v in layer.geobox.extent.to_crs("EPSG:4326").boundingbox)
            raise GridError(
                f"source {src.name!r}: asset {key!r} covers {ll} (lon/lat), outside the cube's grid "
                f"{tuple(round(v, 4) for v in target_ll.boundingbox)}; check the grid's bbox/CRS and the file's CRS"
            )
        if layer.data.shape[0] == 0:
            raise InputError(f"source {src.name!r}: asset {key!r} has no time steps in {when!r}; widen `datetime`")
    return layers


# --------------------------------------------------------------------------------------------------- reading


def _decode(raw: np.ndarray, layer: RasterLayer) -> np.ndarray:
    out = raw.astype(np.float32)
    invalid = ~np.isfinite(out)
    if layer.nodata is not None:
        invalid |= raw == layer.nodata
    if layer.scale != 1.0 or layer.offset != 0.0:
        out = out * np.float32(layer.scale) + np.float32(layer.offset)
    out[invalid] = np.nan
    return out


def _window(layer: RasterLayer, gbox: GeoBox, resampling: str) -> tuple[Any, np.ndarray | None]:
    """The reprojection plan of ``layer`` onto ``gbox`` and the decoded source window (None: no overlap)."""
    from odc.geo.overlap import compute_reproject_roi

    roi = compute_reproject_roi(layer.geobox, gbox, padding=0)
    if not (roi.paste_ok and roi.read_shrink == 1) and resampling != "nearest":
        roi = compute_reproject_roi(layer.geobox, gbox, padding=2)  # a warp's kernel reaches past the tile
    ys, xs = roi.roi_src
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return roi, None  # the tile lies outside this layer
    import rasterio

    with _READ_LOCKS[layer.source]:  # one open file handle is not safe for concurrent reads (GDAL, HDF5)
        try:
            raw = np.asarray(layer.data[:, ys, xs].values)
        except (rasterio.errors.RasterioIOError, OSError, RuntimeError) as err:
            raise DataSourceError(
                f"cannot read asset {layer.asset!r} from {redact_url(layer.source)!r} at rows {ys.start}:{ys.stop}, columns "
                f"{xs.start}:{xs.stop} ({type(err).__name__}: {err}): the file is truncated or corrupt there, or "
                "its host failed; check it (gdalinfo -checksum), copy or download it again, and rebuild"
            ) from err
    return roi, _decode(raw, layer)


def read_layers(layers: Sequence[RasterLayer], gbox: GeoBox, resampling: Sequence[str], *,
                threads: int = 1) -> list[np.ndarray]:
    """Physical values of each layer on ``gbox``: ``(time, y, x)`` float32, NaN where nodata or not covered.

    Windows that align with ``gbox`` pixel for pixel are pasted (bit-exact). The others are warped by GDAL one
    layer at a time: a multi-band warp would decide a pixel's validity from all bands together, so one band's
    gaps would change another band's edges.
    """
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = []
    for layer, method in zip(layers, resampling):
        dst = np.full((layer.data.shape[0], *gbox.shape), np.nan, np.float32)
        roi, window = _window(layer, gbox, method)
        if window is not None and roi.paste_ok and roi.read_shrink == 1:
            dy, dx = roi.roi_dst
            dst[:, dy, dx] = window[:, : dy.stop - dy.start, : dx.stop - dx.start]
        elif window is not None:
            src_box = layer.geobox[roi.roi_src]
            # XSCALE/YSCALE=1: GDAL's scale-dependent kernel radius blurs rotated grids (odc-geo does the same)
            # and is 3x slower for bilinear
            reproject(window, dst, src_transform=src_box.transform, src_crs=str(src_box.crs),
                      dst_transform=gbox.transform, dst_crs=str(gbox.crs), resampling=Resampling[method],
                      src_nodata=np.nan, dst_nodata=np.nan, num_threads=max(1, threads), XSCALE=1, YSCALE=1)
        out.append(dst)
    return out


def _check_classes(values: np.ndarray, asset: AssetConfig, key: str, src: SourceConfig) -> None:
    seen = np.unique(values[np.isfinite(values)])
    unknown = sorted({int(v) for v in seen} - set(asset.classes))
    if unknown:
        raise InputError(
            f"source {src.name!r}: categorical asset {key!r} holds class values {unknown[:20]} that its legend "
            f"(`classes`) does not list; add them to `classes:` (or set them as `nodata`)"
        )


@functools.lru_cache(maxsize=16)
def _cached_layers(src: SourceConfig, keys: tuple[str, ...], when: str | None,
                   stamps: tuple[tuple[int, int, int] | None, ...] = ()) -> dict[str, RasterLayer]:
    """:func:`open_layers`, once per process, source and file version (tiles of a build share the opened files;
    ``stamps``, from :func:`_source_stamps`, only key the cache)."""
    return open_layers(src, keys, when=when)


def load_raster_observations(src: SourceConfig, gbox: GeoBox, *, assets: Sequence[str] | None = None,
                             when: str | None = None, threads: int = 1) -> Observations:
    """A raster/dataset source's values over one tile, as :class:`Observations` (no clear mask: NaN is not observed).

    Static layers give one time step; a dataset with a time dimension gives its time steps (composited by the
    source's ``composite`` rule). Class values missing from a categorical asset's legend are an error.
    """
    keys = list(assets or src.data_assets)
    layers = _cached_layers(src, tuple(keys), when, _source_stamps(src, keys))
    arrays = read_layers([layers[k] for k in keys], gbox, [src.assets[k].resampling_method for k in keys],
                         threads=threads)
    values: dict[str, np.ndarray] = {}
    times: tuple[dt.datetime, ...] = ()
    for key, vals in zip(keys, arrays):
        layer, asset = layers[key], src.assets[key]
        if asset.categorical:
            _check_classes(vals, asset, key, src)
        if src.composite is not None:
            if not layer.times:
                raise InputError(f"source {src.name!r} has a `composite:` rule but asset {key!r} has no "
                                 f"{src.time_dim!r} dimension; drop `composite:` or set `time_dim:`")
            if times and layer.times != times:
                raise InputError(f"source {src.name!r}: assets have different time steps; split them into sources")
            times = layer.times
        values[src.band_name(key)] = vals
    if src.composite is None:  # static: the tile pipeline mosaics the steps, first valid value wins
        n = max(v.shape[0] for v in values.values())
        times = (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),) * n
    return Observations(values, None, list(times), [[src.name]])
