"""Cloud Optimized GeoTIFFs from a prediction store: one per species and one multi-band, with overviews.

Each COG is one task: it reads the store shard by shard into a tiled GeoTIFF on local scratch disk (one shard
window in memory at a time), then GDAL's COG driver translates it (overviews, tiles in COG order) under a
temporary name that is renamed (local) or uploaded in one PUT (object store) only when complete, so readers
never see a partial file. uint8 COGs carry the store's scale/offset and nodata 255 in their band metadata,
band descriptions are species names. Valid per rio-cogeo (checked for local outputs).

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

from geosdm.errors import InputError, MissingVariableError
from geosdm.predict._tasks import connect, run_tasks

__all__ = ["CogOutput", "export_cogs", "cog_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CogOutput:
    """One written COG: where, which species (band order) and how to decode its values."""

    path: str
    variable: str
    species: tuple[str, ...]
    dtype: str
    nodata: float
    scale: float
    offset: float
    shape: tuple[int, int]
    valid: bool | None  # rio-cogeo validation (None: remote, not checked)
    multiband: bool = False  # the one-band-per-species COG (else a single species)

    @property
    def key(self) -> str:
        """STAC asset key: ``<variable>`` (multi-band) or ``<variable>_<species>``."""
        return cog_name(self.variable, None if self.multiband else self.species[0])[:-4]


def cog_name(variable: str, species: str | None = None) -> str:
    """File name of a COG: ``<variable>.tif`` (all species) or ``<variable>_<species>.tif`` (safe characters)."""
    if species is None:
        return f"{variable}.tif"
    return f"{variable}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', species)}.tif"


def _open_raw(src: str, storage_options: dict[str, Any] | None) -> Any:
    import xarray as xr

    from geosdm.io.zarr import quiet_zarr

    with quiet_zarr():
        return xr.open_zarr(src, storage_options=storage_options, zarr_format=3, mask_and_scale=False, chunks=None)


def _write_cog(src: str, storage_options: dict[str, Any] | None, variable: str, bands: Sequence[int], dst: str,
               multiband: bool, *, blocksize: int, resampling: str, compress: str, scratch: str | None) -> CogOutput:
    import fsspec
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
    import rasterio
    from rasterio.shutil import copy as gdal_copy
    from rasterio.windows import Window

    ds = _open_raw(src, storage_options)
    var = ds[variable].isel(species=list(bands))
    gbox = ds.odc.geobox
    species = tuple(str(s) for s in var["species"].values)
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
                out.descriptions = species
                out.scales, out.offsets = (scale,) * len(bands), (offset,) * len(bands)
                out.update_tags(geosdm_model_hash=str(ds.attrs.get("geosdm:model_hash", "")), geosdm_variable=variable,
                                units=str(var.attrs.get("units", "1")))
            remote = "://" in dst
            final_dir = work if remote else os.path.dirname(os.path.abspath(dst))
            tmp = os.path.join(final_dir, f".{os.path.basename(dst)}.partial-{uuid.uuid4().hex[:8]}")
            try:
                gdal_copy(tiles, tmp, driver="COG", COMPRESS=compress.upper(), BLOCKSIZE=blocksize, PREDICTOR="YES",
                          OVERVIEW_RESAMPLING=resampling.upper(), OVERVIEWS="AUTO", BIGTIFF="IF_SAFER")
                if remote:
                    fs, path = fsspec.core.url_to_fs(dst, **(storage_options or {}))
                    fs.put_file(tmp, path)
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
    return CogOutput(dst, variable, species, dtype, nodata, scale, offset, (int(ny), int(nx)), valid, multiband)


def export_cogs(
    store: str | PathLike[str],
    out_dir: str | PathLike[str],
    *,
    variable: str = "probability",
    species: Sequence[str] | None = None,
    per_species: bool = True,
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
    """Write COGs of ``variable`` from the prediction store ``store`` into ``out_dir``.

    Parameters
    ----------
    store
        Prediction store written by :func:`geosdm.predict.write_predictions` (path or URL).
    out_dir
        Output folder or ``s3://`` prefix (same ``storage_options`` as the store).
    variable
        ``"probability"`` or ``"log_intensity"``.
    species
        Species to export (default: all).
    per_species, multiband
        One single-band COG per species (``<variable>_<species>.tif``) and/or one band per species
        (``<variable>.tif``).
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
    list of CogOutput, per-species COGs first, then the multi-band one (Delayed when ``compute=False``).

    Raises
    ------
    MissingVariableError
        ``store`` has no ``variable`` or lacks a requested species.

    Example
    -------
    >>> export_cogs("out/probability.zarr", "out/cogs", species=["plant_01"], multiband=False)  # doctest: +SKIP
    """
    import dask
    import fsspec

    src = str(store).rstrip("/")
    ds = _open_raw(src, storage_options)
    if variable not in ds.data_vars:
        raise MissingVariableError(
            f"store {src!r} has no variable {variable!r}; it has {sorted(map(str, ds.data_vars))}")
    names = [str(s) for s in ds["species"].values]
    wanted = list(species) if species is not None else names
    unknown = [s for s in wanted if s not in names]
    if unknown:
        more = "..." if len(names) > 10 else ""
        raise MissingVariableError(f"store {src!r} lacks species {unknown}; it has {names[:10]}{more}")
    if not (per_species or multiband):
        raise InputError("per_species=False and multiband=False export nothing; enable one of them")
    out = str(out_dir).rstrip("/")
    if len({cog_name(variable, s) for s in wanted}) != len(wanted):
        raise InputError(f"species names {wanted} collide once made file-safe; export them in separate calls")
    fs, root = fsspec.core.url_to_fs(out, **((storage_options or {}) if "://" in out else {}))
    fs.makedirs(root, exist_ok=True)
    jobs: list[tuple[list[int], str, bool]] = []
    if per_species:
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
