"""STAC Items and a Collection for layer outputs (predictions, interactions, ...), so odc-stac and stackstac load them.

One Item per run: a ``zarr`` asset (the layer store; xarray-assets open arguments) and one single-band COG
asset per layer. When the Item holds the per-layer COGs of one variable only (predictions: ``probability``),
their asset keys are the layer labels (the species names), so ``odc.stac.load(items)`` gives one variable per
species and ``stackstac.stack(items)`` a ``band`` coordinate of species names; with several variables the
keys are ``<variable>_<layer>``. A multi-band COG whose layers all have their own asset is linked
(``rel="alternate"``, for GDAL/QGIS: one file, bands named by layer) rather than listed as an asset, since both
loaders read every COG asset they are given (and stackstac only the first band of a multi-band one); without
per-layer COGs it is the asset (key ``<variable>``), its bands named in ``eo:bands``.

The grid goes in the projection extension (``proj:code`` and ``proj:epsg``, or ``proj:wkt2``, ``proj:shape``,
``proj:transform``, ``proj:bbox``); each COG band has ``raster:bands`` (data type, nodata, scale, offset, unit:
uint8 probabilities decode as ``raw * scale + offset``) and ``eo:bands`` (its name). ``datetime``,
``start_datetime`` and ``end_datetime`` are the covariates' period (:func:`covariate_period`; the run's time
when the cube records none), ``created`` the run's time. Properties say what a value is (area of the
probability, calibration, model, interval method: :func:`geosdm.predict.cog.value_tags`).

Files: ``<stac_dir>/collection.json`` and ``<stac_dir>/<item id>/<item id>.json``. Links and asset hrefs are
relative to the file that holds them (absolute only for an asset on another host or bucket), so the output
folder can be copied, served or uploaded as a whole and still loads. :func:`read_items` reads Items back
ready for both loaders (asset hrefs made absolute, and ``proj:epsg`` restored: pystac's reader drops it, and
stackstac 0.5 reads no ``proj:code``, stackstac issue 262).
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
from geosdm.predict.cog import CogOutput, _upload_errors, value_tags

__all__ = ["StacOutput", "prediction_item", "prediction_collection", "write_stac", "read_items", "covariate_period"]


@dataclass(frozen=True)
class StacOutput:
    """Where the STAC files were written."""

    collection: str
    items: tuple[str, ...]


#: The projection extension version of the Items: the one with both ``proj:code`` and ``proj:epsg``.
PROJECTION_V1_2 = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"


def _abs(href: str) -> str:
    import os

    return href if "://" in href else os.path.abspath(href)


def period_attrs(attrs: dict[str, Any]) -> dict[str, str]:
    """``{"geosdm:period": ...}`` for a layer store derived from a cube with these attributes (empty when the cube
    records no period): the store carries its covariates' period, and its STAC Item is dated by it."""
    period = covariate_period(attrs)
    return {"geosdm:period": period} if period else {}


def covariate_period(attrs: dict[str, Any]) -> str | None:
    """The covariates' period ``'<start>/<end>'`` (UTC ISO 8601) recorded by a cube's attributes, or None.

    A cube's ``geosdm:period`` attribute if set (e.g. by hand on a cube built elsewhere), else the union of its
    build's date ranges (:class:`geosdm.cube.CubeConfig` ``datetime`` and each source's own ``datetime``, as
    ``geosdm cube build`` records them in ``geosdm:config``). Sources without dates (a DEM, climatologies)
    do not narrow it; a cube that records no dates gives None.
    """
    from geosdm.stac import datetime_range_str, datetime_range

    if attrs.get("geosdm:period"):
        return datetime_range_str(datetime_range(str(attrs["geosdm:period"])))
    config = attrs.get("geosdm:config")
    if not isinstance(config, dict):
        return None
    ranges = [datetime_range(w) for w in
              [(s.get("datetime") if isinstance(s, dict) else None) or config.get("datetime")
               for s in config.get("sources") or [{}]] if w]
    if not ranges:
        return None
    starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
    return datetime_range_str((None if None in starts else min(starts), None if None in ends else max(ends)))  # type: ignore


def _band(cog: CogOutput, resolution: float, unit: str) -> Any:
    from pystac.extensions.raster import DataType, RasterBand

    nodata: Any = cog.nodata if not math.isnan(cog.nodata) else "nan"
    return RasterBand.create(data_type=DataType(cog.dtype), nodata=nodata, scale=cog.scale, offset=cog.offset,
                             unit=unit, spatial_resolution=resolution)


def _asset_keys(cogs: Sequence[CogOutput]) -> dict[int, str]:
    """Asset key of each per-layer COG (by index): its layer label when they are all of one variable."""
    single = {i: c for i, c in enumerate(cogs) if not c.multiband}
    labels = [c.layers[0] for c in single.values()]
    multi_keys = {c.key for c in cogs if c.multiband}
    by_label = (len({c.variable for c in single.values()}) == 1 and len(set(labels)) == len(labels)
                and not set(labels) & (multi_keys | {"zarr"}))
    return {i: c.layers[0] if by_label else c.key for i, c in single.items()}


def prediction_item(
    store: str | PathLike[str],
    cogs: Sequence[CogOutput] = (),
    *,
    item_id: str,
    collection_id: str | None = None,
    when: datetime | None = None,
    period: str | None = None,
    title: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """A ``pystac.Item`` describing a layer store (e.g. predictions) and its COGs (hrefs absolute; :func:`write_stac`
    makes them relative to the Item file).

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
    period
        ``'<start>/<end>'`` of the covariates (default: the store's ``geosdm:period``, recorded from the cube).
    when
        ``datetime`` of the Item (default: the period's start, else now); ``created`` is always now (UTC).

    Example
    -------
    >>> item = prediction_item("out/probability.zarr", cogs, item_id="demo")  # doctest: +SKIP
    """
    import odc.geo.xr  # noqa: F401
    import pystac
    from pystac.extensions.eo import EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    from geosdm.io.layers import open_layers
    from geosdm.stac import datetime_range

    href = _abs(str(store).rstrip("/"))
    ds = open_layers(href, storage_options=storage_options)
    gbox = ds.odc.geobox
    footprint = gbox.extent.to_crs("EPSG:4326")
    lead = sorted({str(d) for v in ds.data_vars.values() for d in v.dims[:-2]})
    attrs = dict(ds.attrs)
    props: dict[str, Any] = {
        "title": title or f"{attrs.get('title', 'geosdm layers')} {item_id}",
        "geosdm:model_hash": attrs.get("geosdm:model_hash"),
        **{f"geosdm:{d}": [str(s) for s in ds[d].values] for d in lead if d in ds.coords},
        "geosdm:variables": sorted(map(str, ds.data_vars)),
    }
    first = next(iter(ds.data_vars), None)
    about = value_tags(attrs, dict(ds[first].attrs) if first is not None else {}, str(first), scale=1.0,
                       offset=0.0, nodata=float("nan"), packed=False)
    for key in ("area_m2", "calibration", "model", "intervals"):
        if f"geosdm_{key}" in about:
            props[f"geosdm:{key}"] = float(about["geosdm_area_m2"]) if key == "area_m2" else about[f"geosdm_{key}"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start, end = datetime_range(period or attrs.get("geosdm:period"))
    if start is not None and end is not None:
        props["start_datetime"], props["end_datetime"] = _iso(start), _iso(end)
    when = when or start or now
    item = pystac.Item(item_id, footprint.json, list(footprint.boundingbox), when, props, collection=collection_id)
    item.common_metadata.created = now
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = gbox.crs.epsg
    proj.apply(code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else gbox.crs.to_wkt(), shape=list(gbox.shape),
               transform=list(gbox.affine)[:6], bbox=list(gbox.extent.boundingbox))
    if epsg:  # proj:epsg beside proj:code: stackstac (and older clients) read only proj:epsg. Projection v1.2.0
        item.properties["proj:epsg"] = int(epsg)  # has both; v2.0.0 (pystac's default) forbids proj:epsg
        item.stac_extensions = [PROJECTION_V1_2 if u == ProjectionExtension.get_schema_uri() else u
                                for u in item.stac_extensions]
    RasterExtension.add_to(item)
    if cogs:
        EOExtension.add_to(item)
    item.add_asset("zarr", pystac.Asset(
        href, title=f"{attrs.get('title', 'layer cube')} (Zarr v3)", media_type=pystac.MediaType.ZARR, roles=["data"],
        extra_fields={"xarray:open_kwargs": {"engine": "zarr", "zarr_format": 3, "consolidated": True}},
    ))
    resolution = abs(float(gbox.resolution.x))
    keys = _asset_keys(cogs)
    covered = {(c.variable, c.layers[0]) for c in cogs if not c.multiband}
    for i, cog in enumerate(cogs):
        if tuple(cog.shape) != tuple(gbox.shape):
            raise InputError(f"COG {cog.path!r} has shape {cog.shape}, the store {tuple(gbox.shape)}; "
                             "export it from this store")
        var_attrs = dict(ds[cog.variable].attrs) if cog.variable in ds.data_vars else {}
        tags = value_tags(attrs, var_attrs, cog.variable, scale=cog.scale, offset=cog.offset, nodata=cog.nodata,
                          packed=cog.dtype == "uint8")
        what = f"{cog.variable}, one band per {cog.dim}" if cog.multiband else f"{cog.variable} of {cog.layers[0]}"
        if cog.multiband and len(cog.layers) > 1 and all((cog.variable, s) in covered for s in cog.layers):
            item.add_link(pystac.Link("alternate", _abs(cog.path), media_type=pystac.MediaType.COG,
                                      title=f"{what}: all {len(cog.layers)} in one band-interleaved COG, bands "
                                            f"named by {cog.dim} (for GDAL/QGIS)",
                                      extra_fields={f"geosdm:{cog.dim}": list(cog.layers)}))
            continue
        asset = pystac.Asset(_abs(cog.path), title=what, description=tags["long_name"],
                             media_type=pystac.MediaType.COG, roles=["data"],
                             extra_fields={f"geosdm:{cog.dim}": list(cog.layers),
                                           "geosdm:decode": tags["geosdm_decode"]})
        RasterExtension.ext(asset).bands = [_band(cog, resolution, tags["units"]) for _ in cog.layers]
        EOExtension.ext(asset).apply(bands=[_eo_band(s, tags["long_name"]) for s in cog.layers])
        item.add_asset(keys.get(i, cog.key), asset)
    return item


def _eo_band(name: str, description: str) -> Any:
    from pystac.extensions.eo import Band

    return Band.create(name=name, description=f"{description}: {name}")


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def prediction_collection(items: Sequence[Any], *, collection_id: str, description: str | None = None) -> Any:
    """A ``pystac.Collection`` holding ``items``, its extent their union."""
    import pystac

    if not items:
        raise InputError("a collection needs at least one Item; write the layers (e.g. predictions) first")
    boxes = [i.bbox for i in items]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    times = [t for i in items for t in (i.common_metadata.start_datetime or i.datetime,
                                         i.common_metadata.end_datetime or i.datetime)]
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
    period: str | None = None,
    description: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> StacOutput:
    """Write the Item of one run (a layer store and its COGs) and its Collection under ``stac_dir`` (folder or URL).

    Links and asset hrefs are written relative to the file holding them (an asset on another host or bucket
    keeps its absolute URL), so the folder holding the store, COGs and ``stac_dir`` can be moved as a whole.
    ``when``/``period``: as in :func:`prediction_item`.

    Example
    -------
    >>> write_stac("out/probability.zarr", cogs, "out/stac", collection_id="demo-predictions")  # doctest: +SKIP
    """
    import fsspec

    from pystac.utils import make_relative_href

    item = prediction_item(store, cogs, item_id=item_id or collection_id, collection_id=collection_id, when=when,
                           period=period, storage_options=storage_options)
    coll = prediction_collection([item], collection_id=collection_id, description=description)
    root = _abs(str(stac_dir).rstrip("/"))
    coll.normalize_hrefs(root)
    start = item.get_self_href()
    for asset in item.assets.values():  # same host/bucket: relative; elsewhere: kept absolute
        asset.href = make_relative_href(asset.href, start)
    for link in item.links:
        if link.rel == "alternate":
            link.target = make_relative_href(link.get_href(), start)
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


def read_items(href: str | PathLike[str], *, storage_options: dict[str, Any] | None = None) -> list[Any]:
    """The Items of a STAC output (a ``collection.json``, an Item file, or the folder holding ``collection.json``),
    wherever it was copied, ready for ``odc.stac.load(items)`` and ``stackstac.stack(items)`` with no arguments.

    Asset hrefs are made absolute (they are relative to the Item file, which stackstac does not resolve) and
    ``proj:epsg`` is put back beside ``proj:code`` (pystac's reader drops it when it migrates the projection
    extension, and stackstac 0.5 reads only ``proj:epsg``).

    Example
    -------
    >>> import stackstac
    >>> stackstac.stack(read_items("copy/stac"))  # doctest: +SKIP
    """
    import pystac
    from pystac.utils import make_absolute_href

    path = str(href).rstrip("/")
    if not path.endswith(".json"):
        path = f"{path}/collection.json"
    path = _abs(path)
    data = _read_json(path, storage_options)
    if data.get("type") == "Feature":
        found = [(path, data)]
    else:
        hrefs = [make_absolute_href(link["href"], path) for link in data.get("links", []) if link.get("rel") == "item"]
        found = [(h, _read_json(h, storage_options)) for h in hrefs]
    items = []
    for where, d in found:
        item = pystac.Item.from_dict(d, href=where)
        item.set_self_href(where)
        for asset in item.assets.values():
            asset.href = make_absolute_href(asset.href, where)
        code = str(item.properties.get("proj:code") or "")
        if code.upper().startswith("EPSG:") and "proj:epsg" not in item.properties:
            item.properties["proj:epsg"] = int(code.split(":", 1)[1])
            item.stac_extensions = [PROJECTION_V1_2 if "/projection/" in u else u for u in item.stac_extensions]
        items.append(item)
    return items


def _read_json(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    import fsspec

    opts = (storage_options or {}) if "://" in path else {}
    try:
        with fsspec.open(path, "r", **opts) as f:
            return dict(json.load(f))
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"cannot read STAC file {redact(path)}: {type(exc).__name__}: {redact(str(exc))}; "
                              "give a collection.json, an Item file or the folder holding collection.json") from exc
