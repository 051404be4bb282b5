"""Find STAC Items for a source and make them safe to load: search, static catalogs, COG lists, item checks.

Every entry point returns a :class:`pystac.ItemCollection` of *prepared* Items: checked (each configured asset
exists and has projection info odc-stac can use), with each configured asset's ``raster:bands[0]`` holding the
effective ``data_type``, ``nodata``, ``scale``, ``offset`` and ``unit`` (physical = DN * scale + offset,
including the per-item Sentinel-2 baseline offset), and optionally signed. Loading is left to odc-stac::

    import odc.stac
    from geosdm.sources import load_source
    from geosdm.stac import search, odc_load_kwargs, asset_scale_offset

    src = load_source("pc-sentinel-2-l2a")
    items = search(src, bbox=(3.0, 43.5, 3.5, 43.8), datetime="2023-01-01/2023-12-31", max_cloud=40)
    ds = odc.stac.load(items, geobox=gbox, chunks={"x": 2048, "y": 2048}, groupby="solar_day",
                       **odc_load_kwargs(src))          # bands, stac_cfg (dtype/nodata/units), resampling
    scale, offset = asset_scale_offset(items[0], "B04")   # varies per item (processing baseline)

Sources of Items, all applying the same collection/bbox/datetime/cloud filters:

- :func:`search` -- a STAC API with pystac-client. Cloud cover is filtered server-side with a CQL2 ``filter``
  or the ``query`` extension, whichever the API declares; otherwise client-side (logged). Also dispatches
  ``kind: static`` and ``kind: cog-urls`` sources to the two functions below.
- :func:`items_from_static_catalog` -- walks a static ``catalog.json``/``collection.json`` (pystac-client
  cannot search one) or reads an ItemCollection / item list / stac-geoparquet file (:func:`read_items`).
- :func:`items_from_cog_urls` -- wraps plain COG URLs (WorldClim, CHELSA) into Items, reading projection and
  ``raster:bands`` from each file header with rasterio.

Hooks: ``sign=`` (a callable taking an Item, or ``"module:function"`` such as
``planetary_computer:sign_inplace``; the source's own ``sign`` is used when importable) and
:func:`rewrite_hrefs` (prefix mapping or callable, e.g. to point at a local mirror).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import pystac

from geosdm._secrets import redact_url
from geosdm.errors import DataSourceError, EmptySearchError, InputError, MissingVariableError
from geosdm.sources import HarmonizeConfig, SourceConfig

if TYPE_CHECKING:
    from odc.geo.geobox import GeoBox

__all__ = [
    "SignHook",
    "search",
    "cloud_cover_search_kwargs",
    "items_from_static_catalog",
    "read_items",
    "filter_items",
    "items_from_cog_urls",
    "cog_urls",
    "prepare_items",
    "check_item",
    "asset_scale_offset",
    "sign_items",
    "rewrite_hrefs",
    "odc_stac_config",
    "resampling_config",
    "odc_load_kwargs",
    "allowed_roots",
    "check_local_hrefs",
    "http_timeouts",
]

logger = logging.getLogger(__name__)

#: Seconds to open a connection to a STAC API or asset host.
CONNECT_TIMEOUT = 10.0
#: Seconds a STAC API or asset host may stay silent before a request fails (``GEOSDM_HTTP_TIMEOUT`` overrides).
READ_TIMEOUT = 120.0


def http_timeouts() -> tuple[float, float]:
    """(connect, read) timeouts in seconds for STAC API requests and GDAL's HTTP reads, so a host that accepts a
    connection and never answers fails the search or the tile with a message instead of hanging the run."""
    raw = os.environ.get("GEOSDM_HTTP_TIMEOUT", "")
    try:
        read = float(raw) if raw else READ_TIMEOUT
    except ValueError:
        raise InputError(f"GEOSDM_HTTP_TIMEOUT={raw!r} must be a number of seconds") from None
    if read <= 0:
        raise InputError(f"GEOSDM_HTTP_TIMEOUT={raw!r} must be > 0 seconds")
    return min(CONNECT_TIMEOUT, read), read


#: Signs one Item (in place, returning None, or returning a signed copy).
SignHook = Callable[[pystac.Item], pystac.Item | None]
BBox = tuple[float, float, float, float]
DatetimeLike = str | date | datetime | Sequence[str | date | datetime | None] | None

_PROJ_URI = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_RASTER_URI = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

# --------------------------------------------------------------------------------------------- inputs


def _norm_bbox(bbox: BBox | Sequence[float] | GeoBox | None) -> BBox | None:
    """Lon/lat bbox (EPSG:4326) from a 4-sequence or a GeoBox (its geographic extent)."""
    if bbox is None:
        return None
    if hasattr(bbox, "geographic_extent"):
        x0, y0, x1, y1 = bbox.geographic_extent.boundingbox
        return (float(x0), float(y0), float(x1), float(y1))
    try:
        x0, y0, x1, y1 = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(f"bbox {bbox!r} is not 4 numbers; give (lon_min, lat_min, lon_max, lat_max)") from None
    if not (x0 <= x1 and y0 <= y1 and x0 >= -180 and x1 <= 180 and y0 >= -90 and y1 <= 90):
        raise InputError(
            f"bbox {bbox!r} is not a lon/lat box (lon_min <= lon_max in -180..180, lat_min <= lat_max in "
            "-90..90); give EPSG:4326 degrees, or pass a GeoBox"
        )
    return (x0, y0, x1, y1)


def _as_utc(v: str | date | datetime | None, *, end: bool) -> datetime | None:
    """UTC datetime from an ISO string ('YYYY', 'YYYY-MM', 'YYYY-MM-DD', full timestamp) or a date/datetime.

    Partial dates expand to their first instant (``end=False``) or last instant (``end=True``).
    """
    if v is None or v in ("", ".."):
        return None
    if isinstance(v, str):
        s = v.strip()
        try:
            if "T" in s or " " in s:
                v = datetime.fromisoformat(s.replace("Z", "+00:00"))
            elif len(s) == 4:
                v = date(int(s), 12, 31) if end else date(int(s), 1, 1)
            elif len(s) == 7:
                y, m = int(s[:4]), int(s[5:7])
                v = (date(y + m // 12, m % 12 + 1, 1) - timedelta(days=1)) if end else date(y, m, 1)
            else:
                v = date.fromisoformat(s)
        except ValueError:
            raise InputError(
                f"datetime {v!r} is not ISO 8601; give 'YYYY', 'YYYY-MM', 'YYYY-MM-DD' or 'YYYY-MM-DDTHH:MM:SSZ'"
            ) from None
    if not isinstance(v, datetime):
        v = datetime.combine(v, time.max if end else time.min)
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _norm_datetime(value: DatetimeLike) -> tuple[datetime | None, datetime | None]:
    """(start, end) in UTC from 'a/b', 'a' (one day), a date/datetime, or a (start, end) pair; dates inclusive."""
    if value is None:
        return None, None
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) == 1:
            return _as_utc(parts[0], end=False), _as_utc(parts[0], end=True)
        if len(parts) != 2:
            raise InputError(f"datetime {value!r} has {len(parts)} parts; give 'start/end' (either may be '..')")
        start, end = _as_utc(parts[0], end=False), _as_utc(parts[1], end=True)
    elif isinstance(value, (date, datetime)):
        start, end = _as_utc(value, end=False), _as_utc(value, end=not isinstance(value, datetime))
    else:
        pair = list(value)
        if len(pair) != 2:
            raise InputError(f"datetime {value!r} is not a (start, end) pair")
        start, end = _as_utc(pair[0], end=False), _as_utc(pair[1], end=True)
    if start and end and start > end:
        raise InputError(f"datetime {value!r} ends before it starts; swap the two dates")
    return start, end


def _dt_str(rng: tuple[datetime | None, datetime | None]) -> str | None:
    if rng == (None, None):
        return None
    return "/".join(_iso(d) if d else ".." for d in rng)


# --------------------------------------------------------------------------------------------- filters


def _item_range(item: pystac.Item) -> tuple[datetime | None, datetime | None]:
    props = item.properties
    if props.get("start_datetime") or props.get("end_datetime"):
        return (_as_utc(props.get("start_datetime"), end=False), _as_utc(props.get("end_datetime"), end=True))
    dt = item.datetime
    dt = _as_utc(dt, end=False) if dt is not None else None
    return dt, dt


def _item_bbox(item: pystac.Item) -> BBox | None:
    if item.bbox:
        b = item.bbox
        return (b[0], b[1], b[3], b[4]) if len(b) == 6 else (b[0], b[1], b[2], b[3])
    if item.geometry:
        from shapely.geometry import shape

        x0, y0, x1, y1 = shape(item.geometry).bounds
        return (x0, y0, x1, y1)
    return None


def filter_items(
    items: Iterable[pystac.Item],
    *,
    collection: str | None = None,
    bbox: BBox | Sequence[float] | GeoBox | None = None,
    datetime: DatetimeLike = None,
    max_cloud: float | None = None,
    cloud_property: str = "eo:cloud_cover",
) -> list[pystac.Item]:
    """Keep the Items matching a collection id, a lon/lat bbox, a datetime range and a cloud-cover limit.

    Same semantics as a STAC API search: bbox intersection (item ``bbox``, else geometry bounds), datetime
    overlap (``datetime`` or ``start_datetime``/``end_datetime``; inclusive), ``cloud_property <= max_cloud``
    (Items without the property are dropped when a limit is given). Items without bbox or datetime pass.

    Examples
    --------
    >>> kept = filter_items(items, bbox=(2, 43, 4, 45), datetime="2023-06-01/2023-08-31", max_cloud=20)
    """
    box = _norm_bbox(bbox)
    start, end = _norm_datetime(datetime)
    out = []
    for item in items:
        if collection is not None and item.collection_id != collection:
            continue
        ib = _item_bbox(item) if box is not None else None
        if (
            box is not None
            and ib is not None
            and (ib[0] > box[2] or ib[2] < box[0] or ib[1] > box[3] or ib[3] < box[1])
        ):
            continue
        if start or end:
            i0, i1 = _item_range(item)
            if (end and i0 and i0 > end) or (start and i1 and i1 < start):
                continue
        if max_cloud is not None:
            cc = item.properties.get(cloud_property)
            if cc is None or float(cc) > max_cloud:
                continue
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------- reading


def read_items(path: str | PathLike[str], *, href_base: str | None = None) -> list[pystac.Item]:
    """Items from an Item / ItemCollection JSON, a JSON list or ndjson of Items, or stac-geoparquet.

    Relative asset hrefs are made absolute against ``href_base`` (default: the file's folder, the STAC rule).
    ``.parquet``/``.geoparquet`` files are read with rustac.

    Raises
    ------
    DataSourceError
        The file cannot be read or holds no STAC Items.
    """
    p = Path(path)
    try:
        if p.suffix in (".parquet", ".geoparquet"):
            import rustac

            raw: Any = rustac.read_sync(str(p))
        elif p.suffix == ".ndjson":
            raw = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        else:
            raw = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise DataSourceError(f"cannot read STAC items from {str(p)!r} ({err}); check the path and format") from err
    feats = raw.get("features", [raw]) if isinstance(raw, dict) else raw
    if not isinstance(feats, list) or not all(isinstance(f, dict) and f.get("type") == "Feature" for f in feats):
        raise DataSourceError(
            f"{str(p)!r} holds no STAC Items (expected an Item, a FeatureCollection or a list of Items); for a "
            "catalog.json use items_from_static_catalog"
        )
    base = href_base if href_base is not None else str(p.resolve().parent)
    items = [pystac.Item.from_dict(f, preserve_dict=False) for f in feats]
    for item in items:
        for asset in item.assets.values():
            if not pystac.utils.is_absolute_href(asset.href):
                asset.href = _join(base, asset.href)
        _keep_local_hrefs(item)
    return items


def allowed_roots(root: str | PathLike[str]) -> list[Path]:
    """Folders the local asset hrefs of a catalog file in folder ``root`` may point into: the folder above it
    (the data root that holds the catalog folder and its data folders, e.g. ``demo/stac`` and ``demo/cogs``),
    plus those listed in ``GEOSDM_ALLOWED_ROOTS`` (``os.pathsep``-separated, e.g. ``/data/rasters:/scratch``)."""
    extra = [Path(r).resolve() for r in os.environ.get("GEOSDM_ALLOWED_ROOTS", "").split(os.pathsep) if r.strip()]
    return [Path(root).resolve().parent, *extra]


def check_local_hrefs(items: Iterable[pystac.Item], root: str | PathLike[str], *, origin: str) -> None:
    """Refuse Items read from a user's file whose assets point at local files outside :func:`allowed_roots`
    (``file:///etc/passwd``, ``../../`` out of the catalog's data root): a shared or downloaded catalog must not make a run
    read, and copy into its outputs, files it was never meant to see. Remote hrefs are not affected.

    Raises
    ------
    InputError
        Names the Item, the asset, the href and the roots allowed.
    """
    roots = allowed_roots(root)
    for item in items:
        for key, asset in item.assets.items():
            href = asset.get_absolute_href() or asset.href
            if href.startswith("file://"):
                local = href[len("file://"):]
            elif "://" in href or href.startswith("/vsi"):
                continue
            else:
                local = href
            target = Path(local).resolve()
            if not any(target == r or r in target.parents for r in roots):
                raise InputError(
                    f"{origin}: item {item.id!r} asset {key!r} points at {href!r}, outside the catalog's data root "
                    f"{str(roots[0])!r}; keep local assets under it, or allow their folder with "
                    "GEOSDM_ALLOWED_ROOTS=/path/to/rasters"
                )


def _keep_local_hrefs(item: pystac.Item) -> None:
    """Demote a remote ``self`` link when assets are local paths, so pystac/odc-stac do not resolve them
    against the remote host (pystac treats '/data/x.tif' as relative to an https self href)."""
    self_href = item.get_self_href()
    if not self_href or "://" not in self_href or self_href.startswith("file://"):
        return
    if any(os.path.isabs(a.href) and not a.href.startswith("/vsi") for a in item.assets.values()):
        item.links = [pystac.Link("via", self_href, media_type=pystac.MediaType.GEOJSON) if lk.rel == "self" else lk
                      for lk in item.links]  # fmt: skip


def _join(base: str, href: str) -> str:
    if "://" in base:
        return urljoin(base.rstrip("/") + "/", href)
    return os.path.normpath(os.path.join(base, href))


def items_from_static_catalog(
    path: str | PathLike[str],
    source: SourceConfig | None = None,
    *,
    collection: str | None = None,
    bbox: BBox | Sequence[float] | GeoBox | None = None,
    datetime: DatetimeLike = None,
    max_cloud: float | None = None,
    sign: SignHook | str | bool | None = False,
) -> pystac.ItemCollection:
    """Items of a static catalog (walked), or of an ItemCollection / geoparquet file, filtered like a search.

    Parameters
    ----------
    path
        ``catalog.json`` / ``collection.json`` (walked recursively; a child collection named like the wanted
        collection is walked alone), or any file :func:`read_items` reads.
    source
        Gives the collection id, cloud property and default ``max_cloud``, and prepares the Items
        (:func:`prepare_items`). Without it Items are returned as read, filtered only.
    collection, bbox, datetime, max_cloud
        Filters (see :func:`filter_items`); ``collection`` defaults to ``source.collection``; ``max_cloud``
        defaults to ``source.max_cloud`` and is ignored when the source has no ``cloud_property``.
    sign
        Signing hook (default: none for local catalogs).

    Raises
    ------
    EmptySearchError
        No Item matched; the message gives the filters and what the catalog holds.

    Examples
    --------
    >>> items = items_from_static_catalog("demo-output/stac/catalog.json", load_source("demo-landcover"))
    """
    p = Path(path)
    collection = collection or (source.collection if source else None)
    cloud_prop = "eo:cloud_cover"
    if source is not None:  # like search(): no cloud filter for sources without a cloud property (DEM, ...)
        cloud_prop = source.cloud_property or cloud_prop
        max_cloud = None if not source.cloud_property else (source.max_cloud if max_cloud is None else max_cloud)
    try:
        head = json.loads(p.read_text()) if p.suffix == ".json" else {}
    except (OSError, ValueError) as err:
        raise DataSourceError(f"cannot read {str(p)!r} ({err}); give the path of a catalog.json") from err
    if isinstance(head, dict) and head.get("type") in ("Catalog", "Collection"):
        cat = pystac.read_file(str(p))
        if not isinstance(cat, pystac.Catalog):
            raise DataSourceError(f"{str(p)!r} is not a STAC catalog or collection; give its catalog.json")
        if collection and cat.id != collection and (child := cat.get_child(collection, recursive=True)):
            cat = child
        items: list[pystac.Item] = list(cat.get_items(recursive=True))
    else:
        items = read_items(p)
    kept = filter_items(items, collection=collection, bbox=bbox, datetime=datetime, max_cloud=max_cloud,
                        cloud_property=cloud_prop)  # fmt: skip
    check_local_hrefs(kept, p.resolve().parent, origin=str(p))
    if not kept:
        have = sorted({i.collection_id or "?" for i in items})
        raise EmptySearchError(
            f"static catalog {str(p)!r}: no item of collection {collection!r} matches bbox={_norm_bbox(bbox)}, "
            f"datetime={_dt_str(_norm_datetime(datetime))}, max_cloud={max_cloud} ({len(items)} items read, "
            f"collections {have}). Widen the bbox or dates, raise max_cloud, or check the collection id."
        )
    if source is None:
        return pystac.ItemCollection(kept, clone_items=False)
    return prepare_items(kept, source, sign=sign)


def _bounds_to_lonlat(crs: Any, bounds: Sequence[float]) -> BBox:
    from rasterio.warp import transform_bounds

    x0, y0, x1, y1 = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    return (x0, y0, x1, y1)


def _asset_from_cog(url: str) -> tuple[pystac.Asset, Any, BBox]:
    import rasterio

    try:
        with rasterio.open(url) as ds:
            crs, tr, shape, bounds = ds.crs, ds.transform, [ds.height, ds.width], list(ds.bounds)
            bands = []
            for i in range(ds.count):
                b: dict[str, Any] = {"data_type": ds.dtypes[i]}
                nd = ds.nodatavals[i]
                if nd is not None:
                    b["nodata"] = "nan" if math.isnan(nd) else nd
                if ds.scales[i] != 1 or ds.offsets[i] != 0:
                    b["scale"], b["offset"] = ds.scales[i], ds.offsets[i]
                if ds.units and ds.units[i]:
                    b["unit"] = ds.units[i]
                bands.append(b)
    except rasterio.errors.RasterioIOError as err:
        raise DataSourceError(
            f"cannot open COG {url!r} ({err}); check the URL (GDAL paths like /vsicurl/ work) and network access"
        ) from err
    if crs is None:
        raise InputError(f"COG {url!r} has no CRS; odc-stac cannot place it. Fix the file (gdal_edit.py -a_srs)")
    epsg = crs.to_epsg()
    fields: dict[str, Any] = {"proj:code": f"EPSG:{epsg}"} if epsg else {"proj:wkt2": crs.to_wkt()}
    fields.update({"proj:shape": shape, "proj:transform": list(tr)[:6], "proj:bbox": bounds, "raster:bands": bands})
    asset = pystac.Asset(url, media_type=_COG_TYPE, roles=["data"], extra_fields=fields)
    return asset, crs, _bounds_to_lonlat(crs, bounds)


def items_from_cog_urls(
    urls: Mapping[str, str] | Sequence[str],
    *,
    collection: str,
    datetime: str | date | datetime,
    item_id: str | None = None,
    asset: str = "data",
    properties: Mapping[str, Any] | None = None,
) -> list[pystac.Item]:
    """Wrap COGs (non-STAC URL lists: WorldClim, CHELSA, DEM tiles) into STAC Items, one header read each.

    Each file is opened with rasterio (header only) to fill ``proj:code`` (or ``proj:wkt2``), ``proj:shape``,
    ``proj:transform``, ``proj:bbox`` and ``raster:bands`` (dtype, nodata, scale/offset when set, unit).

    Parameters
    ----------
    urls
        ``{asset_key: url}`` -> one Item holding every asset (e.g. ``bio01``..``bio19``); a plain sequence
        -> one Item per URL (id = file stem) with a single asset named ``asset``.
    collection
        Collection id written on the Items.
    datetime
        A date/datetime, or a ``'start/end'`` range (written as ``start_datetime``/``end_datetime``).
    item_id
        Id of the single Item built from a mapping (default: ``collection``).

    Raises
    ------
    DataSourceError
        A URL cannot be opened (the message names it).

    Examples
    --------
    >>> src = load_source("chelsa-bioclim")
    >>> [item] = items_from_cog_urls(cog_urls(src), collection=src.collection, datetime=src.datetime)
    """
    start, end = _norm_datetime(datetime)
    is_range = isinstance(datetime, str) and "/" in datetime
    props = {**(properties or {})}
    if is_range:
        if start is None or end is None:
            raise InputError(f"datetime {datetime!r} is open-ended; COG Items need both ends of the range")
        props.update({"start_datetime": _iso(start), "end_datetime": _iso(end)})
    groups: list[tuple[str, dict[str, str]]]
    if isinstance(urls, Mapping):
        groups = [(item_id or collection, dict(urls))]
    else:
        groups = [(Path(u.rstrip("/").split("?")[0]).stem, {asset: u}) for u in urls]
    items = []
    for iid, mapping in groups:
        assets, boxes = {}, []
        for key, url in mapping.items():
            assets[key], _, box = _asset_from_cog(url)
            boxes.append(box)
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        geom = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
        item = pystac.Item(iid, geom, [x0, y0, x1, y1], None if is_range else start, dict(props),
                           stac_extensions=[_PROJ_URI, _RASTER_URI], collection=collection)  # fmt: skip
        for key, a in assets.items():
            item.add_asset(key, a)
        items.append(item)
    return items


def cog_urls(source: SourceConfig) -> dict[str, str]:
    """``{asset_key: href}`` of a ``kind: cog-urls`` source, for :func:`items_from_cog_urls`."""
    if source.kind != "cog-urls":
        raise InputError(f"source {source.name!r} is kind {source.kind!r}, not cog-urls; it has no COG hrefs")
    return {k: a.href for k, a in source.assets.items() if a.href}


# --------------------------------------------------------------------------------------------- checks


def _proj_value(item: pystac.Item, asset: pystac.Asset, key: str) -> Any:
    v = asset.extra_fields.get(key)
    return item.properties.get(key) if v is None else v


def check_item(item: pystac.Item, source: SourceConfig) -> None:
    """Raise unless every configured asset of ``source`` is in ``item`` with projection info for odc-stac.

    Needed per asset (on the asset or the item): a CRS (``proj:code``, ``proj:epsg``, ``proj:wkt2`` or
    ``proj:projjson``) plus ``proj:shape`` and ``proj:transform``.

    Raises
    ------
    MissingVariableError
        A configured asset is absent (names the item, asset and the keys it has).
    InputError
        Projection info is missing or malformed (names the item, asset and the missing fields).
    """
    for key in source.assets:
        asset = item.assets.get(key)
        if asset is None:
            raise MissingVariableError(
                f"item {item.id!r} (collection {item.collection_id!r}) has no asset {key!r} required by source "
                f"{source.name!r}; it has {sorted(item.assets)}. Fix the asset keys in the source YAML or use "
                "the source definition that matches this provider"
            )
        missing = []
        if not any(_proj_value(item, asset, k) for k in ("proj:code", "proj:epsg", "proj:wkt2", "proj:projjson")):
            missing.append("proj:code/proj:epsg")
        shape, tr = _proj_value(item, asset, "proj:shape"), _proj_value(item, asset, "proj:transform")
        if not shape:
            missing.append("proj:shape")
        if not tr:
            missing.append("proj:transform")
        if missing:
            raise InputError(
                f"item {item.id!r} asset {key!r} lacks projection info {missing} (looked on the asset and the item "
                "properties); odc-stac needs proj:code or proj:epsg plus proj:shape and proj:transform to place "
                "pixels. Fix: add them (geosdm.stac.items_from_cog_urls or rio-stac read them from the file), "
                "or load with odc.stac.load(..., crs=..., resolution=...) without geosdm's checks"
            )
        if len(shape) != 2 or len(tr) not in (6, 9) or (len(tr) == 9 and list(tr[6:]) != [0, 0, 1]):
            raise InputError(
                f"item {item.id!r} asset {key!r} has proj:shape {shape} / proj:transform {tr}; expected "
                "[rows, cols] and a 6- (or 9-, ending 0, 0, 1) element affine transform"
            )


def _ensure_extension(item: pystac.Item, prefix: str, uri: str) -> None:
    if not any(e.startswith(prefix) for e in item.stac_extensions):
        item.stac_extensions.append(uri)


def _baseline(v: Any) -> tuple[int, int] | None:
    """('05.10' | 'N0510' | 5.1) -> (5, 10); None when unparseable."""
    s = str(v).strip().lstrip("N")
    try:
        major, minor = s.split(".") if "." in s else (s[:-2], s[-2:])
        return int(major), int(minor.ljust(2, "0"))
    except ValueError:
        return None


def _boa_offset_dn(item: pystac.Item, rule: HarmonizeConfig, declared: float | None, scale: float) -> float:
    """DN offset to add for the Sentinel-2 baseline rule (0 or ``rule.offset_dn``); see HarmonizeConfig."""
    props = item.properties
    if rule.applied_property and props.get(rule.applied_property) is True:
        return 0.0
    baseline = _baseline(props.get(rule.baseline_property)) if props.get(rule.baseline_property) else None
    if baseline is not None:
        return rule.offset_dn if baseline >= (_baseline(rule.min_baseline) or (4, 0)) else 0.0
    if declared is not None:
        logger.info("item %s: no %s; using the declared raster:bands offset %s", item.id, rule.baseline_property,
                    declared)  # fmt: skip
        return round(declared / scale)
    start, _ = _item_range(item)
    logger.info("item %s: no %s nor declared offset; deciding by date (%s)", item.id, rule.baseline_property, start)
    return rule.offset_dn if start is not None and start.date() >= rule.cutoff_date else 0.0


def _resolve_radiometry(item: pystac.Item, source: SourceConfig) -> None:
    rule = source.harmonize
    boa_dn: float | None = None
    for key, cfg in source.assets.items():
        asset = item.assets[key]
        rb = asset.extra_fields.get("raster:bands")
        declared: dict[str, Any] = dict(rb[0]) if isinstance(rb, list) and rb and isinstance(rb[0], dict) else {}
        scale, offset = cfg.scale, cfg.offset
        if rule is not None and key in rule.assets:
            boa_dn = _boa_offset_dn(item, rule, declared.get("offset"), scale)
            offset = cfg.offset + boa_dn * scale
        else:
            d_scale, d_offset = declared.get("scale", 1.0), declared.get("offset", 0.0)
            if (d_scale, d_offset) != (1.0, 0.0) and not (
                math.isclose(d_scale, scale, rel_tol=1e-6) and math.isclose(d_offset, offset, abs_tol=1e-9)
            ):
                logger.warning(
                    "item %s asset %s declares scale %s offset %s but source %s says %s %s; using the source's",
                    item.id, key, d_scale, d_offset, source.name, scale, offset,
                )  # fmt: skip
        band = {**declared, "scale": scale, "offset": offset, "unit": cfg.units}
        if cfg.dtype is not None:
            band["data_type"] = cfg.dtype
        if cfg.nodata is not None:
            band["nodata"] = "nan" if math.isnan(cfg.nodata) else cfg.nodata
        asset.extra_fields["raster:bands"] = [band, *(rb[1:] if isinstance(rb, list) else [])]
    _ensure_extension(item, "https://stac-extensions.github.io/raster/", _RASTER_URI)
    if boa_dn is not None:
        item.properties["geosdm:boa_offset_dn"] = boa_dn


def asset_scale_offset(item: pystac.Item, asset: str) -> tuple[float, float]:
    """(scale, offset) of a prepared Item's asset: physical value = DN * scale + offset.

    Raises
    ------
    MissingVariableError
        The asset is absent from the Item.
    """
    a = item.assets.get(asset)
    if a is None:
        raise MissingVariableError(f"item {item.id!r} has no asset {asset!r}; it has {sorted(item.assets)}")
    rb = a.extra_fields.get("raster:bands") or [{}]
    return float(rb[0].get("scale", 1.0)), float(rb[0].get("offset", 0.0))


# --------------------------------------------------------------------------------------------- hooks


#: Signing hooks a catalog file or pipeline may name by string (a configuration must not make geosdm import
#: arbitrary code); packages add theirs as entry points in the ``geosdm.signers`` group, and Python callers can
#: pass any callable.
SIGNERS: frozenset[str] = frozenset({"planetary_computer:sign_inplace", "planetary_computer:sign"})


def registered_signers() -> dict[str, str]:
    """Names a string ``sign:`` may use -> ``module:function``: :data:`SIGNERS` and ``geosdm.signers`` entry points."""
    from importlib.metadata import entry_points

    out = {s: s for s in SIGNERS}
    for ep in entry_points(group="geosdm.signers"):
        out[ep.name] = ep.value
    return out


def _resolve_hook(spec: str) -> SignHook:
    known = registered_signers()
    if spec not in known:
        raise InputError(
            f"sign hook {spec!r} is not a registered signer ({sorted(known)}); a configuration may only name "
            "registered ones: register yours as an entry point in the 'geosdm.signers' group, or pass the "
            "function itself from Python (sign=my_hook)"
        )
    spec = known[spec]
    module, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module or not attr:
        raise InputError(f"sign hook {spec!r} is not 'module:function' (e.g. 'planetary_computer:sign_inplace')")
    mod = importlib.import_module(module)  # ImportError handled by the caller
    hook = getattr(mod, attr, None)
    if not callable(hook):
        raise InputError(f"sign hook {spec!r}: {module} has no callable {attr!r}; give 'module:function'")
    return hook  # type: ignore[no-any-return]


def sign_items(items: Iterable[pystac.Item], sign: SignHook | str) -> list[pystac.Item]:
    """Apply a signing hook to every Item (in-place hooks returning None are fine).

    Raises
    ------
    InputError
        ``sign`` names a module that is not installed or has no such function.
    """
    if isinstance(sign, str):
        try:
            hook = _resolve_hook(sign)
        except ImportError as err:
            raise InputError(f"sign hook {sign!r} cannot be imported ({err}); install its package") from None
    else:
        hook = sign
    out = []
    for item in items:
        signed = hook(item)
        out.append(signed if isinstance(signed, pystac.Item) else item)
    return out


def _source_hook(source: SourceConfig, sign: SignHook | str | bool | None) -> SignHook | str | None:
    if sign is False:
        return None
    if sign is None or sign is True:
        if not source.sign:
            return None
        try:
            return _resolve_hook(source.sign)
        except ImportError:
            logger.warning(
                "source %s signs hrefs with %s, which is not installed: hrefs stay unsigned and reading them may "
                "fail (HTTP 403/409). Install it (e.g. pip install planetary-computer) or pass sign=False",
                source.name, source.sign,
            )  # fmt: skip
            return None
    return sign


def rewrite_hrefs(items: Iterable[pystac.Item], rewrite: Mapping[str, str] | Callable[[str], str]) -> list[pystac.Item]:
    """Copies of ``items`` with asset hrefs rewritten by prefix (longest match wins) or by a callable.

    When hrefs become local paths, a remote ``self`` link is kept as a ``via`` link (otherwise pystac and
    odc-stac would resolve '/data/x.tif' against the remote host).

    Examples
    --------
    >>> local = rewrite_hrefs(items, {"https://sentinel-cogs.s3.us-west-2.amazonaws.com/": "/data/mirror/"})
    """
    if callable(rewrite):
        fn = rewrite
    else:
        pairs = sorted(rewrite.items(), key=lambda kv: -len(kv[0]))

        def fn(href: str) -> str:
            for old, new in pairs:
                if href.startswith(old):
                    return new + href[len(old) :]
            return href

    out = []
    for item in items:
        item = item.clone()
        for asset in item.assets.values():
            asset.href = fn(asset.href)
        _keep_local_hrefs(item)
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------- prepare


def prepare_items(
    items: Iterable[pystac.Item],
    source: SourceConfig,
    *,
    sign: SignHook | str | bool | None = None,
    check: bool = True,
) -> pystac.ItemCollection:
    """Copies of ``items`` checked (:func:`check_item`), with effective radiometry written, then signed.

    For every configured asset ``raster:bands[0]`` gets the source's ``data_type``/``nodata``/``unit`` (those
    left null keep the Item's) and the effective ``scale``/``offset``; for ``harmonize`` assets the offset
    adds ``offset_dn * scale`` when the Item's processing baseline needs it (never twice, whatever the Item
    declares), and ``properties['geosdm:boa_offset_dn']`` records the DN offset (0 or -1000; loadable per
    time step with ``odc.stac.load(..., stac_cfg={... "with_properties": [...]})``). Items declaring proj
    fields without the projection extension URI get it added (odc-stac ignores them otherwise).

    Parameters
    ----------
    sign
        None: the source's ``sign`` hook if importable (warning otherwise); False: no signing; a callable or
        ``'module:function'``: that hook.
    check
        Run :func:`check_item` (projection info and asset presence).
    """
    out = []
    for item in items:
        absolute = {k: a.get_absolute_href() or a.href for k, a in item.assets.items()}
        item = item.clone()
        for key, href in absolute.items():  # Items travel to workers without their catalog: no relative hrefs
            item.assets[key].href = href
        if any(k.startswith("proj:") for k in item.properties) or any(
            k.startswith("proj:") for a in item.assets.values() for k in a.extra_fields
        ):
            _ensure_extension(item, "https://stac-extensions.github.io/projection/", _PROJ_URI)
        if check:
            check_item(item, source)
        _resolve_radiometry(item, source)
        out.append(item)
    hook = _source_hook(source, sign)
    if hook is not None:
        out = sign_items(out, hook)
    return pystac.ItemCollection(out, clone_items=False)


# --------------------------------------------------------------------------------------------- search


def search(
    source: SourceConfig,
    *,
    bbox: BBox | Sequence[float] | GeoBox,
    datetime: DatetimeLike = None,
    max_cloud: float | None = None,
    limit: int = 100,
    max_items: int | None = None,
    sign: SignHook | str | bool | None = None,
    check: bool = True,
) -> pystac.ItemCollection:
    """Search a source's STAC API (or its static catalog / COG list) and return prepared Items.

    Parameters
    ----------
    source
        A :class:`~geosdm.sources.SourceConfig` (``load_source(...)``).
    bbox
        (lon_min, lat_min, lon_max, lat_max) in EPSG:4326, or a GeoBox (its geographic extent).
    datetime
        ``'YYYY-MM-DD/YYYY-MM-DD'`` (inclusive; ``..`` open), one date, or a (start, end) pair.
    max_cloud
        Upper bound on ``source.cloud_property`` (percent); None uses ``source.max_cloud``. Ignored for
        sources without a cloud property (DEM, land cover).
    limit, max_items
        Page size and overall cap passed to pystac-client.
    sign, check
        See :func:`prepare_items`.

    Returns
    -------
    pystac.ItemCollection
        Prepared Items (checked, effective scale/offset in ``raster:bands``, signed if a hook applies).

    Raises
    ------
    EmptySearchError
        Nothing matched; names the collection, URL, bbox, dates and cloud limit, and what to change.
    DataSourceError
        The API cannot be reached or answers with an error.
    InputError
        Bad bbox/datetime, or a ``stac-api`` source without ``url``.

    Examples
    --------
    >>> items = search(load_source("pc-landsat-c2-l2"), bbox=(3, 43.5, 3.5, 44), datetime="2023-06/2023-08")
    """
    box = _norm_bbox(bbox)
    rng = _norm_datetime(datetime)
    cloud = (max_cloud if max_cloud is not None else source.max_cloud) if source.cloud_property else None
    if source.kind == "static":
        url = source.url or ""  # required for kind static by SourceConfig
        return items_from_static_catalog(url, source, bbox=box, datetime=datetime, max_cloud=cloud, sign=sign)
    if source.kind == "cog-urls":
        raw = items_from_cog_urls(cog_urls(source), collection=source.collection, datetime=source.datetime or "")
        kept = filter_items(raw, bbox=box, datetime=datetime)
        if not kept:
            raise EmptySearchError(
                f"source {source.name!r}: its COGs do not overlap bbox={box}, datetime={_dt_str(rng)}; the data "
                f"cover {raw[0].bbox} for {source.datetime}. Change the bbox/dates or the source"
            )
        return prepare_items(kept, source, sign=sign, check=check)
    if not source.url:
        raise InputError(
            f"source {source.name!r} has no STAC API url; pass load_source({source.name!r}, url='http://...') or "
            "set the environment variable its YAML names (e.g. GEOSDM_STAC_URL)"
        )
    items = _api_search(source, box, rng, cloud, limit=limit, max_items=max_items)
    if not items:
        raise EmptySearchError(
            f"STAC API {source.url} found no item of collection {source.collection!r} for bbox={box}, "
            f"datetime={_dt_str(rng)}, {source.cloud_property} <= {cloud}. Widen the bbox or dates, raise "
            f"max_cloud, or check the collection id ({source.url.rstrip('/')}/collections)"
        )
    return prepare_items(items, source, sign=sign, check=check)


def cloud_cover_search_kwargs(client: Any, max_cloud_cover: float, *, prop: str = "eo:cloud_cover") -> dict[str, Any]:
    """Extra ``Client.search`` arguments keeping Items with ``prop <= max_cloud_cover``, in the form the API supports.

    ``{"query": ...}`` for APIs conforming to the Query extension, else a CQL2-JSON ``filter`` for the Filter
    extension, else ``{}``: then filter the results on the client (:func:`filter_items` with ``max_cloud``).
    ``rustac serve``'s memory backend supports neither and silently returns nothing for a ``query``.

    Raises
    ------
    InputError
        ``max_cloud_cover`` is not a percentage in [0, 100].
    """
    from pystac_client.conformance import ConformanceClasses

    try:
        limit = float(max_cloud_cover)
    except (TypeError, ValueError):
        raise InputError(f"max_cloud_cover {max_cloud_cover!r} is not a number; give a percentage in [0, 100]") from None
    if not 0 <= limit <= 100:
        raise InputError(f"max_cloud_cover must be a percentage in [0, 100], got {max_cloud_cover!r}")
    if client.conforms_to(ConformanceClasses.QUERY):
        return {"query": {prop: {"lte": limit}}}
    if client.conforms_to(ConformanceClasses.FILTER):
        return {"filter": {"op": "<=", "args": [{"property": prop}, limit]}, "filter_lang": "cql2-json"}
    return {}


def _api_search(
    source: SourceConfig,
    box: BBox | None,
    rng: tuple[datetime | None, datetime | None],
    cloud: float | None,
    *,
    limit: int,
    max_items: int | None,
) -> list[pystac.Item]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    url = source.url or ""
    kwargs: dict[str, Any] = {"collections": [source.collection], "bbox": box, "datetime": _dt_str(rng),
                              "limit": limit, "max_items": max_items}  # fmt: skip
    client_side = False
    try:
        client = Client.open(url, timeout=http_timeouts())
        if cloud is not None and source.cloud_property:
            extra = cloud_cover_search_kwargs(client, cloud, prop=source.cloud_property)
            kwargs.update(extra)
            if not extra:
                client_side = True
                logger.info(
                    "STAC API %s declares neither the filter nor the query extension; filtering %s <= %s on the "
                    "client (every item of the bbox/dates is downloaded)", redact_url(url), source.cloud_property, cloud,
                )  # fmt: skip
        items = list(client.search(**kwargs).items())
    except (APIError, OSError) as err:  # requests' errors derive from OSError
        raise DataSourceError(
            f"STAC API {redact_url(url)} failed for collection {source.collection!r} ({type(err).__name__}: {err}); check the "
            "URL and network access (a silent host fails after GEOSDM_HTTP_TIMEOUT seconds, default "
            f"{READ_TIMEOUT:.0f}), or use a static catalog (items_from_static_catalog)"
        ) from err
    if client_side:
        items = filter_items(items, max_cloud=cloud, cloud_property=source.cloud_property or "eo:cloud_cover")
    return items


# --------------------------------------------------------------------------------------------- odc-stac


def odc_stac_config(source: SourceConfig) -> dict[str, Any]:
    """odc-stac ``stac_cfg`` for the source's collection: per-asset ``data_type``/``nodata``/``unit`` + aliases.

    Aliases map each asset's band ``name`` (e.g. ``B04`` for Earth Search's ``red``) to the asset key, so
    ``bands=["B04"]`` works for every provider. Assets whose ``dtype`` is null in the YAML are left out, so
    odc-stac reads the Item's ``raster:bands`` (an entry here would impose odc-stac's float32 default).
    """
    assets: dict[str, dict[str, Any]] = {}
    for key, a in source.assets.items():
        if a.dtype is None:
            continue
        cfg: dict[str, Any] = {"data_type": a.dtype, "unit": a.units}
        if a.nodata is not None:
            cfg["nodata"] = a.nodata
        assets[key] = cfg
    aliases = {a.name: key for key, a in source.assets.items() if a.name and a.name != key}
    return {source.collection: {"assets": assets, "aliases": aliases}}


def resampling_config(source: SourceConfig) -> dict[str, str]:
    """Asset key -> resampling name for ``odc.stac.load(resampling=...)`` (nearest for masks and classes)."""
    return {key: a.resampling_method for key, a in source.assets.items()}


def odc_load_kwargs(source: SourceConfig) -> dict[str, Any]:
    """``bands``, ``stac_cfg`` and ``resampling`` for ``odc.stac.load(items, geobox=..., **kwargs)``."""
    return {"bands": list(source.assets), "stac_cfg": odc_stac_config(source), "resampling": resampling_config(source)}
