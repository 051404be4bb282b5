"""User-given STAC Items may not point a run at local files outside their catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geosdm.errors import InputError
from geosdm.stac import items_from_static_catalog


def _item(href: str, item_id: str = "x") -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": "c",
            "geometry": {"type": "Point", "coordinates": [3.0, 45.0]}, "bbox": [3.0, 45.0, 3.0, 45.0],
            "properties": {"datetime": "2024-06-01T00:00:00Z"}, "links": [],
            "assets": {"data": {"href": href, "type": "image/tiff"}}}


@pytest.mark.parametrize("href", ["file:///etc/passwd", "/etc/passwd", "../../outside.tif", "../x/../../y.tif"])
def test_local_hrefs_outside_the_catalog_are_refused(tmp_path: Path, href: str) -> None:
    folder = tmp_path / "cat" / "sub"
    folder.mkdir(parents=True)
    f = folder / "items.json"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": [_item(href)]}))
    with pytest.raises(InputError, match=r"item 'x' asset 'data' points at .* outside the catalog's data root.*"
                                         r"GEOSDM_ALLOWED_ROOTS"):
        items_from_static_catalog(f)


def test_hrefs_inside_the_catalog_remote_ones_and_allowed_roots_pass(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "stac"  # data root: project/ (catalog and data folders side by side)
    folder.mkdir(parents=True)
    (tmp_path / "rasters").mkdir()
    feats = [_item("../cogs/a.tif", "in"), _item("https://example.org/b.tif", "remote"),
             _item(str(tmp_path / "rasters" / "c.tif"), "elsewhere")]
    f = folder / "items.json"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": feats[:2]}))
    assert len(items_from_static_catalog(f)) == 2
    f.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with pytest.raises(InputError, match="'elsewhere'"):
        items_from_static_catalog(f)
    monkeypatch.setenv("GEOSDM_ALLOWED_ROOTS", str(tmp_path / "rasters"))
    assert len(items_from_static_catalog(f)) == 3
