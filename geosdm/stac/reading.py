"""Items from files: Item lists and ItemCollections on disk (relative hrefs kept inside their folder), and plain
COG URLs (WorldClim, CHELSA) wrapped into Items from their headers with rasterio.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pystac

from geosdm.errors import DataSourceError, InputError
from geosdm.sources import SourceConfig
from geosdm.stac.checks import _PROJ_URI, _RASTER_URI
from geosdm.stac.filters import BBox, _iso, datetime_range

__all__ = ["allowed_roots", "check_local_hrefs", "cog_urls", "items_from_cog_urls", "read_items"]

logger = logging.getLogger("geosdm.stac")

_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


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
    start, end = datetime_range(datetime)
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


