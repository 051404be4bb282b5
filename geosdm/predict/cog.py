"""Cloud Optimized GeoTIFFs from a layer store: one per layer (species, edge, ...) and one multi-band, with overviews.

Each COG is one task: it reads the store shard by shard into a tiled GeoTIFF on local scratch disk (one shard
window in memory at a time), then GDAL's COG driver translates it (overviews, tiles in COG order) under a
temporary name that is renamed (local) or uploaded (object store: one PUT, or a multipart upload that S3 shows
only once completed, see :func:`upload_file`) only when complete, so readers never see a partial file. uint8
COGs carry the store's scale/offset and nodata 255 in their band metadata, band descriptions are the layer
labels (species, edge or variable names), and tags say what a value is (:func:`value_tags`: unit, area of the
probability, calibration, model, decoding, interval method). Multi-band COGs are band-interleaved (each tile
holds one band), so reading one species reads and decompresses that band only: GDAL 3.10's COG driver writes
pixel interleaving only, so they are written by the GTiff driver with ``COPY_SRC_OVERVIEWS`` (tiled, internal
overviews before the data, valid per rio-cogeo; GDAL >= 3.11 uses the COG driver's ``INTERLEAVE=BAND``). Valid
per rio-cogeo (checked for local outputs). A store that lacks shards its writer wrote (markers list them) is
refused rather than exported with nodata holes.

``odc.geo.cog.save_cog_with_dask`` would skip the scratch file but needs ``tifffile`` (not installed) and
cannot write band scale/offset; hence tiles-then-translate (docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np

from geosdm.errors import DataSourceError, InputError, MissingVariableError
from geosdm.io.tasks import connect, run_tasks

__all__ = ["CogOutput", "export_cogs", "cog_name", "upload_file", "value_tags"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CogOutput:
    """One written COG: where, which layers (band order, labels along ``dim``) and how to decode its values."""

    path: str
    variable: str
    layers: tuple[str, ...]
    dtype: str
    nodata: float
    scale: float
    offset: float
    shape: tuple[int, int]
    valid: bool | None  # rio-cogeo validation (None: remote, not checked)
    multiband: bool = False  # the one-band-per-layer COG (else a single layer)
    dim: str = "species"  # the store variable's leading dim the layers are labels of

    @property
    def key(self) -> str:
        """STAC asset key: ``<variable>`` (multi-band) or ``<variable>_<layer>``."""
        return cog_name(self.variable, None if self.multiband else self.layers[0])[:-4]


def cog_name(variable: str, layer: str | None = None) -> str:
    """File name of a COG: ``<variable>.tif`` (all layers) or ``<variable>_<layer>.tif`` (safe characters)."""
    if layer is None:
        return f"{variable}.tif"
    return f"{variable}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}.tif"


def _partial_suffix() -> str:
    """``.partial-<host>-<pid>-<random>``: a file being written, and by which process (to tell orphans)."""
    from geosdm._owner import host_name

    return f".partial-{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_orphan_partials(folder: str, name: str) -> list[str]:
    """Delete ``.<name>.partial-*`` files left in ``folder`` by writers on this host that no longer run (a
    killed export); files of live processes or other hosts are kept. Returns the removed paths."""
    from geosdm._owner import host_name, process_alive

    pattern = re.compile(rf"^\.{re.escape(name)}\.partial-{re.escape(host_name())}-(\d+)-[0-9a-f]+$")
    removed = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else ():
        m = pattern.match(entry)
        if not m or process_alive(int(m.group(1))):
            continue  # not a partial of this host, or its writer still runs
        path = os.path.join(folder, entry)
        try:
            os.remove(path)
            removed.append(path)
            log.warning("removed %s, left by an export that was killed", path)
        except FileNotFoundError:
            pass
    return removed


def _layer_dim(var: Any) -> str | None:
    """The leading dim of a ``(lead, y, x)`` variable (None for a single ``(y, x)`` map)."""
    if var.ndim == 2:
        return None
    if var.ndim != 3:
        raise InputError(f"variable {var.name!r} has dims {var.dims}; COGs need (layer, y, x) or (y, x)")
    return str(var.dims[0])


def _labels(var: Any) -> list[str]:
    dim = _layer_dim(var)
    if dim is None:
        return [str(var.name)]
    return [str(s) for s in var[dim].values] if dim in var.coords else [str(i) for i in range(var.sizes[dim])]


def _open_raw(src: str, storage_options: dict[str, Any] | None) -> Any:
    import xarray as xr

    from geosdm.io.zarr import quiet_zarr

    with quiet_zarr():
        return xr.open_zarr(src, storage_options=storage_options, zarr_format=3, mask_and_scale=False, chunks=None)


def _upload_errors() -> tuple[type[BaseException], ...]:
    """What a failed upload raises: OS/network errors, s3fs's translations of S3 errors, botocore's own."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        pass
    return tuple(errors)


def upload_file(local: str, dst: str, storage_options: dict[str, Any] | None = None) -> None:
    """Upload the finished file ``local`` to the object-store URL ``dst`` so that readers see all of it or nothing.

    One PUT, or for files over twice the file system's block size (s3fs: storage option ``default_block_size``,
    50 MiB by default) a multipart upload in parts of that size, which S3 makes visible only once completed;
    s3fs retries throttled and failed requests and aborts the multipart upload when a part still fails.

    Raises
    ------
    DataSourceError
        The upload failed after the retries: names the object; what was at ``dst`` before is left as it was.
    """
    import fsspec

    from geosdm._secrets import redact

    fs, path = fsspec.core.url_to_fs(dst, **(storage_options or {}))
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    part = getattr(fs, "default_block_size", None) if {"s3", "s3a"} & set(protocols) else None
    kwargs = {"chunksize": int(part)} if part else {}  # not fs.blocksize: fsspec's 4 MiB, below S3's 5 MiB parts
    try:
        fs.put_file(local, path, **kwargs)
    except _upload_errors() as exc:
        raise DataSourceError(
            f"cannot upload {redact(dst)} ({os.path.getsize(local)} bytes): {type(exc).__name__}: "
            f"{redact(str(exc))}. Nothing new is visible at that key (a multipart upload is aborted); check the "
            "endpoint, credentials and bucket, then rerun the export (retries: storage option "
            "config_kwargs={'retries': {'max_attempts': N}})"
        ) from exc


def value_tags(attrs: dict[str, Any], var_attrs: dict[str, Any], variable: str, *, scale: float, offset: float,
               nodata: float, packed: bool) -> dict[str, str]:
    """What a value of ``variable`` is, from the layer store's attributes: COG tags (``geosdm_*``) and the
    STAC Item's ``geosdm:*`` properties say the same.

    Keys: ``units``, ``long_name``, ``geosdm_variable``, ``geosdm_decode`` (how a stored value becomes the
    quantity), ``geosdm_area_m2`` (the area a probability refers to), ``geosdm_calibration``,
    ``geosdm_model``/``geosdm_model_hash``, and for uncertainty layers ``geosdm_intervals``.
    """
    model = attrs.get("geosdm:model") or {}
    config = attrs.get("geosdm:config") or {}
    net = model.get("network") or {}
    area = var_attrs.get("geosdm:area_m2", config.get("area_m2", attrs.get("geosdm:area_m2")))
    tags = {
        "units": str(var_attrs.get("units", "1")),
        "long_name": str(var_attrs.get("long_name", variable)),
        "geosdm_variable": variable,
        "geosdm_decode": (f"value = raw * {scale:g} + {offset:g}; raw {nodata:g} = nodata" if packed
                          else "value as stored; NaN = nodata"),
        "geosdm_model_hash": str(attrs.get("geosdm:model_hash", "")),
    }
    if area is not None:
        tags["geosdm_area_m2"] = f"{float(area):g}"
    calibration = attrs.get("geosdm:calibration", config.get("calibration"))
    if calibration is not None:
        tags["geosdm_calibration"] = str(calibration)
    if model:
        what = net.get("name") if isinstance(net, dict) else net
        tags["geosdm_model"] = " ".join(str(v) for v in (model.get("class"), what, model.get("loss"),
                                                          model.get("link")) if v)
    intervals = attrs.get("geosdm:intervals", config.get("intervals"))
    if intervals is not None:
        tags["geosdm_intervals"] = str(intervals)
    return tags


def _overview_levels(shape: tuple[int, int], blocksize: int) -> list[int]:
    """Decimation factors as GDAL's COG driver picks with ``OVERVIEWS=AUTO``: halve until one tile holds it."""
    levels, f = [], 2
    while max(shape) > blocksize:
        levels.append(f)
        if max(-(-shape[0] // f), -(-shape[1] // f)) <= blocksize:
            break
        f *= 2
    return levels


def _translate(tiles: str, dst: str, count: int, dtype: str, *, blocksize: int, resampling: str,
               compress: str) -> None:
    """Tiled GeoTIFF ``tiles`` -> COG ``dst``: GDAL's COG driver for one band; for several, band-interleaved."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.env import GDALVersion
    from rasterio.shutil import copy as gdal_copy

    if count == 1 or GDALVersion.runtime().at_least("3.11"):
        extra = {"INTERLEAVE": "BAND"} if count > 1 else {}
        gdal_copy(tiles, dst, driver="COG", COMPRESS=compress.upper(), BLOCKSIZE=blocksize, PREDICTOR="YES",
                  OVERVIEW_RESAMPLING=resampling.upper(), OVERVIEWS="AUTO", BIGTIFF="IF_SAFER", **extra)
        return
    with rasterio.open(tiles, "r+") as ds:  # the overviews inside the scratch file, then copied before the data
        levels = _overview_levels(ds.shape, blocksize)
        if levels:
            with rasterio.Env(COMPRESS_OVERVIEW="ZSTD"):
                ds.build_overviews(levels, Resampling[resampling.lower()])
    gdal_copy(tiles, dst, driver="GTiff", COPY_SRC_OVERVIEWS="YES", TILED="YES", BLOCKXSIZE=blocksize,
              BLOCKYSIZE=blocksize, COMPRESS=compress.upper(), PREDICTOR=3 if dtype.startswith("float") else 2,
              INTERLEAVE="BAND", BIGTIFF="IF_SAFER")


def _write_cog(src: str, storage_options: dict[str, Any] | None, variable: str, bands: Sequence[int], dst: str,
               multiband: bool, *, blocksize: int, resampling: str, compress: str, scratch: str | None) -> CogOutput:
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
    import rasterio
    from rasterio.windows import Window

    ds = _open_raw(src, storage_options)
    var = ds[variable]
    dim = _layer_dim(var)
    labels = tuple(_labels(var)[i] for i in bands)
    var = var.expand_dims("_layer") if dim is None else var.isel({dim: list(bands)})
    gbox = ds.odc.geobox
    packed = var.dtype == np.uint8
    dtype = "uint8" if packed else "float32"
    nodata = float(var.attrs.get("_FillValue", var.encoding.get("_FillValue", 255))) if packed else float("nan")
    scale = float(var.attrs.get("scale_factor", 1.0)) if packed else 1.0
    offset = float(var.attrs.get("add_offset", 0.0)) if packed else 0.0
    shards = var.encoding.get("shards") or var.encoding.get("chunks") or (1, 512, 512)
    ty, tx = int(shards[-2]), int(shards[-1])
    ny, nx = gbox.shape
    work = tempfile.mkdtemp(prefix="geosdm-cog-", dir=scratch)
    try:
        tiles = os.path.join(work, "tiles.tif")
        profile = {"driver": "GTiff", "width": nx, "height": ny, "count": len(bands), "dtype": dtype, "nodata": nodata,
                   "crs": gbox.crs.to_wkt(), "transform": gbox.affine, "tiled": True, "blockxsize": blocksize,
                   "blockysize": blocksize, "compress": "zstd", "interleave": "band", "BIGTIFF": "IF_SAFER"}
        with rasterio.Env(GDAL_CACHEMAX=256):
            with rasterio.open(tiles, "w", **profile) as out:
                for y0 in range(0, ny, ty):
                    for x0 in range(0, nx, tx):
                        h, w = min(ty, ny - y0), min(tx, nx - x0)
                        block = np.asarray(var[:, y0 : y0 + h, x0 : x0 + w].values, dtype=dtype)
                        out.write(block, window=Window(x0, y0, w, h))
                out.descriptions = labels
                out.scales, out.offsets = (scale,) * len(bands), (offset,) * len(bands)
                tags = value_tags(dict(ds.attrs), dict(var.attrs), variable, scale=scale, offset=offset,
                                  nodata=nodata, packed=packed)
                out.update_tags(**tags)
                for i, label in enumerate(labels, start=1):
                    out.update_tags(i, **{f"geosdm_{dim or 'layer'}": label})
                    out.set_band_unit(i, tags["units"])
            remote = "://" in dst
            final_dir = work if remote else os.path.dirname(os.path.abspath(dst))
            if not remote:
                remove_orphan_partials(final_dir, os.path.basename(dst))
            tmp = os.path.join(final_dir, f".{os.path.basename(dst)}{_partial_suffix()}")
            try:
                _translate(tiles, tmp, len(bands), dtype, blocksize=blocksize, resampling=resampling,
                           compress=compress)
                if remote:
                    upload_file(tmp, dst, storage_options)
                else:
                    os.replace(tmp, dst)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    valid = None
    if "://" not in dst:
        from rio_cogeo.cogeo import cog_validate

        valid, errors, _ = cog_validate(dst, quiet=True)
        if not valid:
            log.warning("COG %s failed rio-cogeo validation: %s", dst, errors)
    return CogOutput(dst, variable, labels, dtype, nodata, scale, offset, (int(ny), int(nx)), valid, multiband,
                     dim or variable)


def _check_shards(src: str, variable: str, storage_options: dict[str, Any] | None) -> None:
    """Refuse a store whose writer wrote shards of ``variable`` that are gone (deleted, lost in a copy): reading
    them gives the fill value, so the COGs would show nodata there with no error."""
    from geosdm.io.zarr import missing_shards

    lost = missing_shards(src, [variable], storage_options=storage_options)
    if lost:
        _, (iy, ix) = lost[0]
        raise DataSourceError(
            f"store {src!r} lacks {len(lost)} shard(s) of {variable!r} that its writer wrote (first: tile {iy}, {ix}: "
            f"{src}/{variable}/c/.../{iy}/{ix}); its COGs would be nodata there. Rewrite those tiles: delete "
            f"{src}.progress/tile_{iy:04d}_{ix:04d}.json (and the other lost tiles' markers) and rerun the "
            "prediction (it resumes the missing tiles), or rerun it with overwrite"
        )


def export_cogs(
    store: str | PathLike[str],
    out_dir: str | PathLike[str],
    *,
    variable: str = "probability",
    layers: Sequence[str] | None = None,
    per_layer: bool = True,
    multiband: bool = True,
    storage_options: dict[str, Any] | None = None,
    blocksize: int = 512,
    overview_resampling: str = "average",
    compress: str = "deflate",
    scratch_dir: str | PathLike[str] | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    compute: bool = True,
) -> list[CogOutput] | Any:
    """Write COGs of ``variable`` from the layer store ``store`` (predictions, interactions, ...) into ``out_dir``.

    Parameters
    ----------
    store
        Store written by :func:`geosdm.io.write_layers` (e.g. :func:`geosdm.predict.write_predictions`).
    out_dir
        Output folder or ``s3://`` prefix (same ``storage_options`` as the store).
    variable
        A ``(layer, y, x)`` or ``(y, x)`` variable, e.g. ``"probability"`` (layers = species).
    layers
        Labels along the variable's leading dim to export (species names for predictions; default: all).
    per_layer, multiband
        One single-band COG per layer (``<variable>_<layer>.tif``) and/or one band per layer
        (``<variable>.tif``); a ``(y, x)`` variable gives one COG.
    blocksize, overview_resampling, compress
        COG tile side in pixels, GDAL overview resampling, GDAL compression.
    scratch_dir
        Local folder for the intermediate tiled GeoTIFFs (default: the system temp folder).
    client
        ``dask.distributed.Client`` or scheduler address: one task per COG on its workers. None: threads here.
    progress
        Show a progress bar over COGs.
    compute
        False: return a ``dask.delayed`` list of the COG tasks instead of running them.

    Returns
    -------
    list of CogOutput, per-layer COGs first, then the multi-band one (Delayed when ``compute=False``).

    Raises
    ------
    MissingVariableError
        ``store`` has no ``variable`` or lacks a requested layer.

    Example
    -------
    >>> export_cogs("out/probability.zarr", "out/cogs", layers=["plant_01"], multiband=False)  # doctest: +SKIP
    """
    import dask
    import fsspec

    src = str(store).rstrip("/")
    ds = _open_raw(src, storage_options)
    if variable not in ds.data_vars:
        raise MissingVariableError(
            f"store {src!r} has no variable {variable!r}; it has {sorted(map(str, ds.data_vars))}")
    _check_shards(src, variable, storage_options)
    names = _labels(ds[variable])
    if _layer_dim(ds[variable]) is None:
        per_layer, multiband = False, True
    wanted = list(layers) if layers is not None else names
    unknown = [s for s in wanted if s not in names]
    if unknown:
        more = "..." if len(names) > 10 else ""
        raise MissingVariableError(f"store {src!r} lacks {_layer_dim(ds[variable])} {unknown}; it has {names[:10]}{more}")
    if not (per_layer or multiband):
        raise InputError("per_layer=False and multiband=False export nothing; enable one of them")
    out = str(out_dir).rstrip("/")
    if len({cog_name(variable, s) for s in wanted}) != len(wanted):
        raise InputError(f"layer names {wanted} collide once made file-safe; export them in separate calls")
    fs, root = fsspec.core.url_to_fs(out, **((storage_options or {}) if "://" in out else {}))
    fs.makedirs(root, exist_ok=True)
    jobs: list[tuple[list[int], str, bool]] = []
    if per_layer:
        jobs += [([names.index(s)], f"{out}/{cog_name(variable, s)}", False) for s in wanted]
    if multiband:
        jobs.append(([names.index(s) for s in wanted], f"{out}/{cog_name(variable)}", True))
    opts = {"blocksize": int(blocksize), "resampling": overview_resampling, "compress": compress,
            "scratch": str(scratch_dir) if scratch_dir else None}
    tasks = [dask.delayed(_write_cog, pure=False)(src, storage_options, variable, idx, dst, mb, **opts)
             for idx, dst, mb in jobs]
    if not compute:
        return dask.delayed(list)(tasks)
    with connect(client) as c:
        return run_tasks(tasks, client=c, progress=progress, total=len(tasks), desc="cogs", unit="cog")
