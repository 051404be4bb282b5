"""Item checks and radiometry: every configured asset exists and has projection info odc-stac can use, and its
``raster:bands[0]`` says the effective ``data_type``, ``nodata``, ``scale``, ``offset`` and ``unit`` (with the
per-item Sentinel-2 baseline offset).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pystac

from geosdm.errors import InputError, MissingVariableError
from geosdm.sources import HarmonizeConfig, SourceConfig
from geosdm.stac.filters import _item_range

__all__ = ["asset_scale_offset", "check_item"]

logger = logging.getLogger("geosdm.stac")

_PROJ_URI = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_RASTER_URI = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"


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


