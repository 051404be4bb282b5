"""COG writing and STAC Item construction (projection, raster, eo, classification extensions) for the demo."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

__all__ = ["write_cog", "make_item", "add_asset", "make_collection"]


def write_cog(
    path: Path,
    data: np.ndarray,
    gbox: GeoBox,
    *,
    nodata: float | int | None,
    categorical: bool = False,
    band_names: list[str] | None = None,
) -> Path:
    """Write a (bands, y, x) or (y, x) array as a Cloud-Optimized GeoTIFF (deflate, 256 px tiles, overviews).

    Written to a temporary name and renamed, so a partially written file is never left under ``path``.
    """
    arr = data[None] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    profile: dict[str, Any] = dict(
        driver="COG",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        crs=gbox.crs.to_wkt(),
        transform=gbox.affine,
        nodata=nodata,
        compress="zstd",  # fast to write and to decode; GDAL >= 2.3 everywhere (rasterio wheels include it)
        level=1,
        predictor="NO" if categorical else "YES",  # YES: horizontal (ints) or floating-point predictor
        blocksize=256,
        overview_resampling="nearest" if categorical else "average",
        BIGTIFF="IF_SAFER",
    )
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr)
        if band_names:
            dst.descriptions = tuple(band_names)
    tmp.replace(path)
    return path


def _footprint(gbox: GeoBox) -> tuple[dict[str, Any], list[float]]:
    geom = gbox.extent.to_crs("EPSG:4326")
    return geom.json, list(geom.boundingbox)


def make_item(
    item_id: str,
    collection: str,
    gbox: GeoBox,
    datetime: dt.datetime | None,
    *,
    properties: dict[str, Any] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> pystac.Item:
    """An Item whose footprint and projection fields (``proj:code``, ``proj:shape``, ``proj:transform``,
    ``proj:bbox``) describe ``gbox``; assets with another grid override them per asset."""
    geometry, bbox = _footprint(gbox)
    props = dict(properties or {})
    if start is not None:
        props["start_datetime"] = start.isoformat().replace("+00:00", "Z")
        props["end_datetime"] = end.isoformat().replace("+00:00", "Z") if end else None
    item = pystac.Item(item_id, geometry, bbox, datetime, props, collection=collection)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    _set_proj(proj, gbox)
    return item


def _set_proj(proj: Any, gbox: GeoBox) -> None:
    epsg = gbox.crs.epsg
    proj.code = f"EPSG:{epsg}" if epsg else None
    if epsg is None:
        proj.wkt2 = gbox.crs.to_wkt()
    proj.shape = [int(gbox.shape[0]), int(gbox.shape[1])]
    proj.transform = [float(v) for v in list(gbox.affine)[:6]]
    proj.bbox = [float(v) for v in gbox.boundingbox]


def add_asset(
    item: pystac.Item,
    key: str,
    href: str,
    *,
    dtype: str,
    nodata: float | int | None,
    title: str,
    roles: tuple[str, ...] = ("data",),
    scale: float | None = None,
    offset: float | None = None,
    unit: str | None = None,
    resolution: float | None = None,
    eo_band: tuple[str, float] | None = None,
    classes: dict[int, str] | None = None,
    gbox: GeoBox | None = None,
) -> pystac.Asset:
    """Add a COG asset with raster:bands (dtype, nodata, scale/offset, unit) and optional eo:bands / classes."""
    asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=list(roles), title=title)
    item.add_asset(key, asset)
    band = RasterBand.create(
        nodata=None if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)) else nodata,
        data_type=DataType(dtype),
        scale=scale,
        offset=offset,
        unit=unit,
        spatial_resolution=resolution,
    )
    if nodata is not None and isinstance(nodata, float) and np.isnan(nodata):
        band.nodata = "nan"
    RasterExtension.ext(asset, add_if_missing=True).bands = [band]
    if eo_band is not None:
        EOExtension.ext(asset, add_if_missing=True).bands = [
            Band.create(name=key, common_name=eo_band[0], center_wavelength=eo_band[1])
        ]
    if classes is not None:
        ClassificationExtension.ext(asset, add_if_missing=True).classes = [
            Classification.create(value=v, description=name, name=name.replace(" ", "-")) for v, name in classes.items()
        ]
    if gbox is not None:
        _set_proj(ProjectionExtension.ext(asset), gbox)
    return asset


def make_collection(collection_id: str, description: str, items: list[pystac.Item], *, license: str = "CC-BY-4.0") -> pystac.Collection:
    """A Collection whose extent covers ``items``."""
    bboxes = np.array([it.bbox for it in items])
    bbox = [float(bboxes[:, 0].min()), float(bboxes[:, 1].min()), float(bboxes[:, 2].max()), float(bboxes[:, 3].max())]
    times = sorted(
        t
        for it in items
        for t in (it.datetime, it.common_metadata.start_datetime, it.common_metadata.end_datetime)
        if t is not None
    )
    extent = pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[times[0], times[-1]]]))
    coll = pystac.Collection(collection_id, description, extent, license=license, title=collection_id)
    coll.add_items(items)
    return coll
