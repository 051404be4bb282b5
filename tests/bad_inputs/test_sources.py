"""Source definitions and STAC Items that cannot be used: every problem is listed with its key and the fix."""

from __future__ import annotations

from pathlib import Path

import pystac
import pytest
import yaml

from geosdm.errors import InputError, MissingVariableError
from geosdm.sources import load_source, parse_source
from geosdm.stac import check_item, prepare_items

BASE = {"collection": "sentinel-2-l2a", "url": "http://127.0.0.1:9/stac",
        "assets": {"B04": {"long_name": "red", "dtype": "uint16", "scale": 0.0001}}}


def _with(**changes: object) -> dict:
    out = {**BASE, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(("definition", "match"), [
    (_with(max_clouds=20), r"unknown key `max_clouds`; allowed keys here: \[.*'max_cloud'"),
    (_with(assets={"B04": {"long_name": "red", "dtype": "uint16", "scael": 1e-4}}),
     r"unknown key `assets\.B04\.scael`; allowed keys here: \[.*'scale'"),
    (_with(kind="wms"),
     r"`kind`: Input should be 'stac-api', 'static', 'cog-urls', 'raster' or 'dataset' \(got 'wms'\)"),
    (_with(assets={"B04": {"long_name": "red", "dtype": "uint12"}}),
     r"`assets\.B04\.dtype`: .*'uint16'.* \(got 'uint12'\)"),
    (_with(collection=None), r"`collection` is required but missing"),
    (_with(assets={"B04": {"dtype": "uint16"}}), r"`assets\.B04\.long_name` is required but missing"),
    (_with(max_cloud="lots"), r"`max_cloud`: Input should be a valid number.*\(got 'lots'\)"),
])
def test_invalid_source_definitions_name_the_file_and_key(tmp_path: Path, definition: dict, match: str) -> None:
    f = tmp_path / "my-source.yaml"
    f.write_text(yaml.safe_dump(definition))
    with pytest.raises(InputError, match=match) as err:
        load_source(f)
    msg = str(err.value)
    assert "my-source.yaml is not a valid source definition" in msg and "catalogs/pc-sentinel-2-l2a.yaml" in msg


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(InputError) as err:
        parse_source(_with(name="s2", max_clouds=1, kind="wms", collection=None), origin="s.yaml")
    assert str(err.value).count("\n  - ") == 3


def _item(assets: dict[str, dict], **props: object) -> pystac.Item:
    from datetime import datetime, timezone

    item = pystac.Item("S2A_31TFJ_20240601", {"type": "Point", "coordinates": [3.0, 45.0]}, [3.0, 45.0, 3.0, 45.0],
                       datetime(2024, 6, 1, 10, tzinfo=timezone.utc), dict(props), collection="sentinel-2-l2a")
    for key, extra in assets.items():
        item.add_asset(key, pystac.Asset(f"https://example.org/{key}.tif", media_type="image/tiff",
                                         extra_fields=extra))
    return item


PROJ = {"proj:code": "EPSG:32631", "proj:shape": [10980, 10980],
        "proj:transform": [10.0, 0.0, 600000.0, 0.0, -10.0, 5000040.0]}


def test_an_item_without_projection_info_names_the_missing_fields() -> None:
    src = parse_source({**BASE, "name": "s2"})
    with pytest.raises(InputError, match=r"item 'S2A_31TFJ_20240601' asset 'B04' lacks projection info "
                                         r"\['proj:code/proj:epsg', 'proj:transform'\].*Fix: add them"):
        check_item(_item({"B04": {"proj:shape": [10980, 10980]}}), src)
    check_item(_item({"B04": {}}, **PROJ), src)  # on the item's properties is as good as on the asset


def test_an_item_without_the_asked_band_names_what_it_has() -> None:
    src = parse_source({**BASE, "name": "s2"})
    with pytest.raises(MissingVariableError, match=r"item 'S2A_31TFJ_20240601' \(collection 'sentinel-2-l2a'\) has no "
                                                   r"asset 'B04' required by source 's2'; it has \['red'\]\. Fix the "
                                                   r"asset keys in the source YAML"):
        prepare_items([_item({"red": PROJ})], src, sign=False)


def test_a_malformed_proj_transform_is_named() -> None:
    src = parse_source({**BASE, "name": "s2"})
    with pytest.raises(InputError, match=r"asset 'B04' has proj:shape \[10980, 10980\] / proj:transform "
                                         r"\[10\.0, 0\.0\]; "
                                         r"expected \[rows, cols\] and a 6-"):
        check_item(_item({"B04": {**PROJ, "proj:transform": [10.0, 0.0]}}), src)
