"""Dates, bounding boxes and the Item filter every STAC entry point applies (collection, bbox, datetime,
cloud cover).

:func:`datetime_range` turns any datetime argument into a UTC ``(start, end)``; :func:`datetime_range_str` writes
it as a STAC ``start/end`` interval; :func:`filter_items` keeps the Items that match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import pystac

from geosdm.errors import InputError

if TYPE_CHECKING:
    from odc.geo.geobox import GeoBox

__all__ = ["BBox", "DatetimeLike", "datetime_range", "datetime_range_str", "filter_items"]

BBox = tuple[float, float, float, float]
DatetimeLike = str | date | datetime | Sequence[str | date | datetime | None] | None

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


def datetime_range(value: DatetimeLike) -> tuple[datetime | None, datetime | None]:
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


def datetime_range_str(rng: tuple[datetime | None, datetime | None]) -> str | None:
    """A STAC ``start/end`` interval (``..`` for an open end) from :func:`datetime_range`; None when both are open."""
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
    start, end = datetime_range(datetime)
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


