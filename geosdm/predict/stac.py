"""STAC Items and a Collection for layer outputs (predictions, interactions, ...), so odc-stac loads them back.

One Item per run (one datetime): a ``zarr`` asset (the layer store; xarray-assets open arguments), one COG
asset per layer (key ``<variable>_<layer>``, e.g. one per species) and the multi-band COG (key
``<variable>``). The grid goes in the projection extension (``proj:code``/``proj:wkt2``, ``proj:shape``,
``proj:transform``, ``proj:bbox``); each COG band has ``raster:bands`` with data type, nodata, scale and
offset (uint8 probabilities decode as ``raw * scale + offset``). The Collection's extent covers its Items.
Files: ``<stac_dir>/collection.json`` and ``<stac_dir>/<item id>/<item id>.json`` (relative links, absolute
asset hrefs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from os import PathLike
from typing import Any

from geosdm._secrets import redact
from geosdm.errors import DataSourceError, InputError
from geosdm.predict.cog import CogOutput, _upload_errors

__all__ = ["StacOutput", "prediction_item", "prediction_collection", "write_stac"]


@dataclass(frozen=True)
class StacOutput:
    """Where the STAC files were written."""

    collection: str
    items: tuple[str, ...]


def _abs(href: str) -> str:
    import os

    return href if "://" in href else os.path.abspath(href)


def _band(cog: CogOutput, resolution: float) -> Any:
    from pystac.extensions.raster import DataType, RasterBand

    nodata: Any = cog.nodata if not math.isnan(cog.nodata) else "nan"
    return RasterBand.create(data_type=DataType(cog.dtype), nodata=nodata, scale=cog.scale, offset=cog.offset,
                             unit="1", spatial_resolution=resolution)


def prediction_item(
    store: str | PathLike[str],
    cogs: Sequence[CogOutput] = (),
    *,
    item_id: str,
    collection_id: str | None = None,
    when: datetime | None = None,
    title: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """A ``pystac.Item`` describing a layer store (e.g. predictions) and its COGs (hrefs made absolute).

    Parameters
    ----------
    store
        The Zarr store from :func:`geosdm.io.write_layers` (its grid, layer labels and provenance are read).
    cogs
        COGs from :func:`geosdm.predict.export_cogs` of that store.
    title
        Item title (default: the store's ``title`` attribute).
    item_id, collection_id
        Identifiers of the Item and of its Collection.
    when
        Datetime of the prediction (default: now, UTC).

    Example
    -------
    >>> item = prediction_item("out/probability.zarr", cogs, item_id="demo")  # doctest: +SKIP
    """
    import odc.geo.xr  # noqa: F401
    import pystac
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    from geosdm.io.layers import open_layers

    href = _abs(str(store).rstrip("/"))
    ds = open_layers(href, storage_options=storage_options)
    gbox = ds.odc.geobox
    footprint = gbox.extent.to_crs("EPSG:4326")
    lead = sorted({str(d) for v in ds.data_vars.values() for d in v.dims[:-2]})
    props = {
        "title": title or f"{ds.attrs.get('title', 'geosdm layers')} {item_id}",
        "geosdm:model_hash": ds.attrs.get("geosdm:model_hash"),
        **{f"geosdm:{d}": [str(s) for s in ds[d].values] for d in lead if d in ds.coords},
        "geosdm:variables": sorted(map(str, ds.data_vars)),
    }
    area = (ds.attrs.get("geosdm:config") or {}).get("area_m2")
    if area is not None:
        props["geosdm:area_m2"] = area
    when = when or datetime.now(timezone.utc).replace(microsecond=0)
    item = pystac.Item(item_id, footprint.json, list(footprint.boundingbox), when, props, collection=collection_id)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = gbox.crs.epsg
    proj.apply(code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else gbox.crs.to_wkt(), shape=list(gbox.shape),
               transform=list(gbox.affine)[:6], bbox=list(gbox.extent.boundingbox))
    if epsg:  # projection v1's key beside v2's proj:code: stackstac (and older clients) read only proj:epsg
        item.properties["proj:epsg"] = int(epsg)
    RasterExtension.add_to(item)
    item.add_asset("zarr", pystac.Asset(
        href, title=f"{ds.attrs.get('title', 'layer cube')} (Zarr v3)", media_type=pystac.MediaType.ZARR, roles=["data"],
        extra_fields={"xarray:open_kwargs": {"engine": "zarr", "zarr_format": 3, "consolidated": True}},
    ))
    resolution = abs(float(gbox.resolution.x))
    for cog in cogs:
        if tuple(cog.shape) != tuple(gbox.shape):
            raise InputError(f"COG {cog.path!r} has shape {cog.shape}, the store {tuple(gbox.shape)}; "
                             "export it from this store")
        what = f"{cog.variable}, one band per {cog.dim}" if cog.multiband else f"{cog.variable} of {cog.layers[0]}"
        asset = pystac.Asset(_abs(cog.path), title=what, media_type=pystac.MediaType.COG, roles=["data"],
                             extra_fields={f"geosdm:{cog.dim}": list(cog.layers)})
        RasterExtension.ext(asset).bands = [_band(cog, resolution) for _ in cog.layers]
        item.add_asset(cog.key, asset)
    return item


def prediction_collection(items: Sequence[Any], *, collection_id: str, description: str | None = None) -> Any:
    """A ``pystac.Collection`` holding ``items``, its extent their union."""
    import pystac

    if not items:
        raise InputError("a collection needs at least one Item; write the layers (e.g. predictions) first")
    boxes = [i.bbox for i in items]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    times = [i.datetime for i in items]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(times), max(times)]]))
    coll = pystac.Collection(collection_id, description or "geosdm maps", extent,
                             license="other", title=collection_id, catalog_type=pystac.CatalogType.SELF_CONTAINED)
    coll.stac_extensions = sorted({e for i in items for e in i.stac_extensions})
    for item in items:
        coll.add_item(item)
    return coll


def write_stac(
    store: str | PathLike[str],
    cogs: Sequence[CogOutput],
    stac_dir: str | PathLike[str],
    *,
    collection_id: str,
    item_id: str | None = None,
    when: datetime | None = None,
    description: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> StacOutput:
    """Write the Item of one run (a layer store and its COGs) and its Collection under ``stac_dir`` (folder or URL).

    Example
    -------
    >>> write_stac("out/probability.zarr", cogs, "out/stac", collection_id="demo-predictions")  # doctest: +SKIP
    """
    import fsspec

    item = prediction_item(store, cogs, item_id=item_id or collection_id, collection_id=collection_id, when=when,
                           storage_options=storage_options)
    coll = prediction_collection([item], collection_id=collection_id, description=description)
    root = _abs(str(stac_dir).rstrip("/"))
    coll.normalize_hrefs(root)
    opts = (storage_options or {}) if "://" in root else {}
    paths = []
    for obj in (item, coll):  # the Item first: the Collection never links to an Item that was not written
        href = obj.get_self_href()
        text = json.dumps(obj.to_dict(include_self_link=False, transform_hrefs=True), indent=1)
        try:
            with fsspec.open(href, "w", **opts) as f:
                f.write(text)
        except _upload_errors() as exc:
            raise DataSourceError(
                f"cannot write STAC file {redact(href)}: {type(exc).__name__}: {redact(str(exc))}. On an object "
                "store nothing new is visible at that key; check the endpoint, credentials and bucket, then rerun "
                "the export (write_stac)"
            ) from exc
        paths.append(href)
    return StacOutput(paths[1], tuple(paths[:1]))
