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

Modules: :mod:`geosdm.stac.filters` (dates, bboxes, :func:`filter_items`), :mod:`geosdm.stac.checks` (item
checks, radiometry), :mod:`geosdm.stac.reading` (Item files, COG URLs); this package keeps the search, the
hooks and :func:`prepare_items`, and re-exports the rest.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pystac

from geosdm._secrets import redact_url
from geosdm.errors import DataSourceError, EmptySearchError, InputError
from geosdm.sources import SourceConfig
from geosdm.stac.checks import (
    _PROJ_URI,
    _ensure_extension,
    _resolve_radiometry,
    asset_scale_offset,
    check_item,
)
from geosdm.stac.filters import BBox, DatetimeLike, _norm_bbox, datetime_range, datetime_range_str, filter_items
from geosdm.stac.reading import (
    _keep_local_hrefs,
    allowed_roots,
    check_local_hrefs,
    cog_urls,
    items_from_cog_urls,
    read_items,
)

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
    "BBox",
    "DatetimeLike",
    "datetime_range",
    "datetime_range_str",
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
            f"datetime={datetime_range_str(datetime_range(datetime))}, max_cloud={max_cloud} ({len(items)} items read, "
            f"collections {have}). Widen the bbox or dates, raise max_cloud, or check the collection id."
        )
    if source is None:
        return pystac.ItemCollection(kept, clone_items=False)
    return prepare_items(kept, source, sign=sign)


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
    rng = datetime_range(datetime)
    cloud = (max_cloud if max_cloud is not None else source.max_cloud) if source.cloud_property else None
    if source.kind == "static":
        url = source.url or ""  # required for kind static by SourceConfig
        return items_from_static_catalog(url, source, bbox=box, datetime=datetime, max_cloud=cloud, sign=sign)
    if source.kind == "cog-urls":
        raw = items_from_cog_urls(cog_urls(source), collection=source.collection, datetime=source.datetime or "")
        kept = filter_items(raw, bbox=box, datetime=datetime)
        if not kept:
            raise EmptySearchError(
                f"source {source.name!r}: its COGs do not overlap bbox={box}, "
                f"datetime={datetime_range_str(rng)}; the data "
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
            f"datetime={datetime_range_str(rng)}, {source.cloud_property} <= {cloud}. Widen the bbox or dates, raise "
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
    kwargs: dict[str, Any] = {"collections": [source.collection], "bbox": box, "datetime": datetime_range_str(rng),
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
