"""Cloud-cover limits that work on any STAC API: server-side where the API can, client-side always.

STAC APIs differ: Planetary Computer and Earth Search implement the Query extension (``query=``), many also
Filter/CQL2 (``filter=``); ``rustac serve``'s memory backend implements neither, and there a ``query=`` search
silently returns no items. :func:`cloud_cover_search_kwargs` asks the API what it conforms to and returns the
right extra ``search`` arguments (possibly none); :func:`filter_cloud_cover` then applies the same limit
client-side, which is harmless after a server-side filter and required without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from geosdm.errors import InputError

if TYPE_CHECKING:
    import pystac
    from pystac_client import Client

__all__ = ["CLOUD_COVER", "cloud_cover_search_kwargs", "filter_cloud_cover"]

#: The item property holding the percentage of cloudy pixels (STAC eo extension).
CLOUD_COVER = "eo:cloud_cover"

T = TypeVar("T", "pystac.Item", Mapping[str, Any])


def _check_limit(max_cloud_cover: float) -> float:
    try:
        value = float(max_cloud_cover)
    except (TypeError, ValueError):
        raise InputError(
            f"max_cloud_cover {max_cloud_cover!r} is not a number; give a percentage in [0, 100]"
        ) from None
    if not 0 <= value <= 100:
        raise InputError(f"max_cloud_cover must be a percentage in [0, 100], got {max_cloud_cover!r}")
    return value


def cloud_cover_search_kwargs(
    client: Client, max_cloud_cover: float, *, prop: str = CLOUD_COVER
) -> dict[str, Any]:
    """Extra ``Client.search`` arguments that keep items with ``prop <= max_cloud_cover``, if the API can.

    Parameters
    ----------
    client
        An opened ``pystac_client.Client``; its conformance classes decide the form.
    max_cloud_cover
        Largest accepted cloud cover, percent (inclusive).
    prop
        Item property to limit.

    Returns
    -------
    dict
        ``{"query": {prop: {"lte": max}}}`` when the API conforms to Query; else
        ``{"filter": <CQL2-JSON>, "filter_lang": "cql2-json"}`` when it conforms to Filter; else ``{}``
        (rustac's memory backend): filter the results with :func:`filter_cloud_cover`.

    Raises
    ------
    InputError
        If ``max_cloud_cover`` is not a percentage.

    Example
    -------
    >>> client = pystac_client.Client.open(stac_url)  # doctest: +SKIP
    >>> extra = cloud_cover_search_kwargs(client, 20)  # doctest: +SKIP
    >>> search = client.search(collections=["sentinel-2-l2a"], **extra)  # doctest: +SKIP
    >>> items = filter_cloud_cover(search.items(), 20)  # doctest: +SKIP
    """
    from pystac_client.conformance import ConformanceClasses

    limit = _check_limit(max_cloud_cover)
    if client.conforms_to(ConformanceClasses.QUERY):
        return {"query": {prop: {"lte": limit}}}
    if client.conforms_to(ConformanceClasses.FILTER):
        return {"filter": {"op": "<=", "args": [{"property": prop}, limit]}, "filter_lang": "cql2-json"}
    return {}


def _properties(item: Any) -> Mapping[str, Any]:
    props = item.get("properties", {}) if isinstance(item, Mapping) else getattr(item, "properties", {})
    return props if isinstance(props, Mapping) else {}


def filter_cloud_cover(
    items: Iterable[T], max_cloud_cover: float, *, prop: str = CLOUD_COVER, keep_missing: bool = False
) -> list[T]:
    """Items (pystac Items or STAC dicts) whose ``prop`` is at most ``max_cloud_cover`` percent.

    Parameters
    ----------
    items
        Search results, e.g. ``search.items()``.
    max_cloud_cover
        Largest accepted cloud cover, percent (inclusive).
    keep_missing
        Keep items that lack ``prop`` (DEMs, climate layers) instead of dropping them.

    Raises
    ------
    InputError
        If ``max_cloud_cover`` is not a percentage.

    Example
    -------
    >>> filter_cloud_cover([{"properties": {"eo:cloud_cover": 5}}, {"properties": {"eo:cloud_cover": 50}}], 20)
    [{'properties': {'eo:cloud_cover': 5}}]
    """
    limit = _check_limit(max_cloud_cover)
    kept: list[T] = []
    for item in items:
        value = _properties(item).get(prop)
        if value is None:
            if keep_missing:
                kept.append(item)
        elif float(value) <= limit:
            kept.append(item)
    return kept
