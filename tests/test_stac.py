"""geosdm.stac: filters, static catalogs, COG wrapping, item checks, Sentinel-2 offsets, hooks, API search.

No network: searches run against STAC APIs on 127.0.0.1 (a small in-test API declaring the filter or the
query extension, and `rustac serve`, which declares neither).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from geosdm.errors import DataSourceError, EmptySearchError, InputError, MissingVariableError
from geosdm.sources import SourceConfig, parse_source
from geosdm.stac import (
    asset_scale_offset,
    check_item,
    filter_items,
    items_from_cog_urls,
    items_from_static_catalog,
    odc_load_kwargs,
    odc_stac_config,
    prepare_items,
    read_items,
    rewrite_hrefs,
    search,
    sign_items,
)

S2_BANDS = {"B04": "red", "B08": "nir"}


def _s2_source(**extra: Any) -> SourceConfig:
    assets: dict[str, Any] = {
        k: {"long_name": v, "role": "reflectance", "dtype": "uint16", "nodata": 0, "scale": 1e-4}
        for k, v in S2_BANDS.items()
    }
    assets["SCL"] = {"long_name": "scl", "role": "mask", "dtype": "uint8", "nodata": 0}
    cfg = {
        "name": "s2-test", "collection": "sentinel-2-l2a", "url": "http://127.0.0.1:1", "assets": assets,
        "mask": {"asset": "SCL", "kind": "classes", "keep": [4, 5, 6], "reject": [0, 3, 8, 9, 10]},
        "harmonize": {"assets": list(S2_BANDS)}, "composite": {"period": "season"},
    }  # fmt: skip
    cfg.update(extra)
    return parse_source(cfg)


def _item(
    iid: str,
    *,
    when: str = "2023-06-15T10:30:00Z",
    lon: float = 3.0,
    lat: float = 43.5,
    cloud: float | None = 10.0,
    baseline: str | None = "05.09",
    collection: str = "sentinel-2-l2a",
    proj: bool = True,
    rb: dict[str, Any] | None = None,
    props: dict[str, Any] | None = None,
) -> pystac.Item:
    geom = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 1, lat], [lon + 1, lat + 1], [lon, lat + 1],
                                                [lon, lat]]]}  # fmt: skip
    p: dict[str, Any] = {**(props or {})}
    if cloud is not None:
        p["eo:cloud_cover"] = cloud
    if baseline is not None:
        p["s2:processing_baseline"] = baseline
    if proj:
        p["proj:epsg"] = 32631
    item = pystac.Item(iid, geom, [lon, lat, lon + 1, lat + 1], datetime.fromisoformat(when.replace("Z", "+00:00")),
                       p, collection=collection,
                       stac_extensions=["https://stac-extensions.github.io/projection/v1.1.0/schema.json"] if proj else [])  # fmt: skip  # noqa: E501
    for key in [*S2_BANDS, "SCL"]:
        extra: dict[str, Any] = {}
        if proj:
            extra = {"proj:shape": [100, 100], "proj:transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0]}
        if rb is not None and key != "SCL":
            extra["raster:bands"] = [dict(rb)]
        href = f"https://example.invalid/{iid}/{key}.tif"
        item.add_asset(key, pystac.Asset(href, roles=["data"], extra_fields=extra))
    return item


# ------------------------------------------------------------------------------------------ filters


def test_filter_items_semantics():
    items = [
        _item("a", when="2023-01-10T00:00:00Z", cloud=5),
        _item("b", when="2023-06-15T00:00:00Z", cloud=50),
        _item("c", when="2023-06-30T23:00:00Z", cloud=10, lon=20),
        _item("d", when="2023-07-01T00:00:00Z", cloud=None),
        _item("e", when="2023-06-01T00:00:00Z", collection="other"),
    ]
    ids = lambda xs: [i.id for i in xs]  # noqa: E731
    assert ids(filter_items(items, datetime="2023-06")) == ["b", "c", "e"]  # month, inclusive of 30 June 23:00
    assert ids(filter_items(items, datetime="2023-06-30/..")) == ["c", "d"]
    assert ids(filter_items(items, bbox=(2.5, 43, 3.5, 44))) == ["a", "b", "d", "e"]
    assert ids(filter_items(items, max_cloud=10)) == ["a", "c", "e"]  # no cloud property -> dropped
    assert ids(filter_items(items, collection="other")) == ["e"]
    with pytest.raises(InputError, match="ends before it starts"):
        filter_items(items, datetime="2023-02-01/2023-01-01")
    with pytest.raises(InputError, match="not a lon/lat box"):
        filter_items(items, bbox=(500000, 4800000, 510000, 4810000))


def test_filter_items_ranges_and_geobox():
    from odc.geo.geobox import GeoBox

    item = _item("r")
    item.properties.update(start_datetime="1981-01-01T00:00:00Z", end_datetime="2010-12-31T23:59:59Z")
    assert filter_items([item], datetime="2000-01-01/2000-12-31")
    assert not filter_items([item], datetime="2011")
    gbox = GeoBox.from_bbox((3.2, 43.6, 3.4, 43.8), "EPSG:4326", resolution=0.01)
    assert filter_items([item], bbox=gbox) and not filter_items([_item("far", lon=50)], bbox=gbox)


# ------------------------------------------------------------------------------------------ static catalogs


@pytest.fixture
def static_catalog(tmp_path: Path) -> Path:
    cat = pystac.Catalog("root", "test catalog")
    for coll_id, items in {
        "sentinel-2-l2a": [_item("s2-jan", when="2023-01-05T10:00:00Z"), _item("s2-jun", cloud=80),
                           _item("s2-jul", when="2023-07-02T10:00:00Z", lon=10)],
        "other": [_item("o1", collection="other")],
    }.items():  # fmt: skip
        coll = pystac.Collection(coll_id, coll_id, pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                 pystac.TemporalExtent([[None, None]])))  # fmt: skip
        for it in items:
            coll.add_item(it)
        cat.add_child(coll)
    cat.normalize_hrefs(str(tmp_path / "stac"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "stac" / "catalog.json"


def test_static_catalog_filters_like_a_search(static_catalog):
    src = _s2_source(max_cloud=60)
    got = items_from_static_catalog(static_catalog, src, bbox=(2, 43, 5, 45), datetime="2023")
    assert [i.id for i in got] == ["s2-jan"]  # s2-jun too cloudy (80 > 60), s2-jul outside bbox, o1 other coll.
    assert asset_scale_offset(got[0], "B04") == pytest.approx((1e-4, -0.1))
    assert [i.id for i in items_from_static_catalog(static_catalog, src, max_cloud=100, bbox=(2, 43, 5, 45))] == [
        "s2-jan", "s2-jun"]  # fmt: skip
    raw = items_from_static_catalog(static_catalog, collection="other")
    assert [i.id for i in raw] == ["o1"] and "raster:bands" not in raw[0].assets["B04"].extra_fields


def test_static_catalog_empty_names_the_fix(static_catalog):
    with pytest.raises(EmptySearchError) as err:
        items_from_static_catalog(static_catalog, _s2_source(), datetime="2019-01-01/2019-12-31")
    msg = str(err.value)
    assert "collection 'sentinel-2-l2a'" in msg and "2019-01-01T00:00:00Z/2019-12-31T23:59:59Z" in msg
    assert "Widen the bbox or dates" in msg and "3 items read" in msg  # only the matching child is walked


def test_item_collection_file_relative_hrefs(tmp_path):
    item = _item("rel")
    for a in item.assets.values():
        a.href = "cogs/" + Path(a.href).name
    path = tmp_path / "stac" / "ic.json"
    path.parent.mkdir()
    path.write_text(json.dumps(pystac.ItemCollection([item]).to_dict()))
    [got] = read_items(path)
    assert got.assets["B04"].href == str(tmp_path / "stac" / "cogs" / "B04.tif")
    [got] = read_items(path, href_base=str(tmp_path))
    assert got.assets["B04"].href == str(tmp_path / "cogs" / "B04.tif")
    assert [i.id for i in items_from_static_catalog(path, _s2_source())] == ["rel"]
    path.write_text(json.dumps({"type": "Catalog"}) + "x")
    with pytest.raises(DataSourceError, match="cannot read"):
        read_items(path)


# ------------------------------------------------------------------------------------------ item checks


def test_item_without_projection_info_is_rejected():
    item = _item("noproj", proj=False)
    with pytest.raises(InputError) as err:
        check_item(item, _s2_source())
    msg = str(err.value)
    assert "item 'noproj' asset 'B04'" in msg and "proj:code/proj:epsg" in msg and "proj:shape" in msg
    assert "odc-stac needs" in msg and "Fix:" in msg


def test_item_missing_asset_and_bad_transform():
    item = _item("x")
    del item.assets["B08"]
    with pytest.raises(MissingVariableError, match=r"item 'x' .* has no asset 'B08' .* it has \['B04', 'SCL'\]"):
        check_item(item, _s2_source())
    item = _item("y")
    item.assets["B04"].extra_fields["proj:transform"] = [1, 2, 3]
    with pytest.raises(InputError, match="6- \\(or 9-"):
        check_item(item, _s2_source())


def test_projection_extension_uri_added():
    item = _item("u")
    item.stac_extensions.clear()  # proj fields present but undeclared: odc-stac would ignore them
    [got] = prepare_items([item], _s2_source())
    assert any("projection" in e for e in got.stac_extensions) and not item.stac_extensions  # input untouched


# ------------------------------------------------------------------------------------------ Sentinel-2 offsets


@pytest.mark.parametrize(
    ("kw", "expected_dn"),
    [
        ({"baseline": "05.10"}, -1000),  # PC, new baseline, no raster:bands offset
        ({"baseline": "04.00"}, -1000),
        ({"baseline": "02.12"}, 0),  # old baseline
        ({"baseline": "02.12", "rb": {"scale": 1e-4, "offset": -0.1}}, 0),  # declared offset on an old baseline
        ({"baseline": "05.09", "rb": {"scale": 1e-4, "offset": -0.1}}, -1000),  # declared: applied once, not twice
        ({"baseline": "05.09", "rb": {"offset": -0.1}, "props": {"earthsearch:boa_offset_applied": True}}, 0),
        ({"baseline": "04.00", "rb": {"offset": -0.1}, "props": {"earthsearch:boa_offset_applied": False}}, -1000),
        ({"baseline": None, "rb": {"offset": -0.1}}, -1000),  # no baseline: trust the declared offset
        ({"baseline": None, "when": "2021-06-01T00:00:00Z"}, 0),  # nothing declared: by date
        ({"baseline": None, "when": "2022-06-01T00:00:00Z"}, -1000),
        ({"baseline": "N0510"}, -1000),
    ],
)
def test_baseline_offset(kw, expected_dn):
    src = _s2_source(harmonize={"assets": list(S2_BANDS), "applied_property": "earthsearch:boa_offset_applied"})
    [item] = prepare_items([_item("o", **kw)], src)
    assert item.properties["geosdm:boa_offset_dn"] == expected_dn
    scale, offset = asset_scale_offset(item, "B04")
    assert scale == 1e-4 and offset == pytest.approx(expected_dn * 1e-4)
    band = item.assets["B04"].extra_fields["raster:bands"][0]
    assert band["data_type"] == "uint16" and band["nodata"] == 0 and band["unit"] == "1"
    assert asset_scale_offset(item, "SCL") == (1.0, 0.0)


def test_declared_scale_mismatch_is_logged(caplog):
    src = parse_source({"name": "x", "collection": "c", "url": "http://h", "assets": {
        "d": {"long_name": "d", "dtype": "int16", "scale": 0.1}}})  # fmt: skip
    item = _item("m")
    item.assets["d"] = pystac.Asset("d.tif", extra_fields={**item.assets["B04"].extra_fields,
                                                           "raster:bands": [{"scale": 0.01}]})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="geosdm.stac"):
        [got] = prepare_items([item], src)
    assert "declares scale 0.01" in caplog.text and asset_scale_offset(got, "d") == (0.1, 0.0)


# ------------------------------------------------------------------------------------------ hooks


def _sign_copy(item: pystac.Item) -> pystac.Item:
    out = item.clone()
    for a in out.assets.values():
        a.href += "?sig=copy"
    return out


def test_sign_hooks(caplog, monkeypatch):
    import geosdm.stac as stac

    items = [_item("s")]
    calls = []
    inplace = lambda it: calls.append(it.id)  # noqa: E731
    assert sign_items(items, inplace)[0] is items[0] and calls == ["s"]
    assert sign_items(items, _sign_copy)[0].assets["B04"].href.endswith("?sig=copy")
    # a configuration names only registered signers: it must not make geosdm import arbitrary code
    for spec in ("tests.test_stac:_sign_copy", "os:system", "sign_inplace"):
        with pytest.raises(InputError, match="is not a registered signer .*geosdm.signers"):
            sign_items(items, spec)
    monkeypatch.setattr(stac, "SIGNERS", stac.SIGNERS | {"tests.test_stac:_sign_copy", "tests.test_stac._sign_copy",
                                                         "no_such_module_xyz:sign", "tests.test_stac:nothing"})
    assert sign_items(items, "tests.test_stac:_sign_copy")[0].assets["B04"].href.endswith("?sig=copy")
    assert sign_items(items, "tests.test_stac._sign_copy")[0].assets["B04"].href.endswith("?sig=copy")
    with pytest.raises(InputError, match="cannot be imported"):
        sign_items(items, "no_such_module_xyz:sign")
    with pytest.raises(InputError, match="has no callable 'nothing'"):
        sign_items(items, "tests.test_stac:nothing")
    with pytest.raises(InputError, match="is not a registered signer"):
        prepare_items(items, _s2_source(sign="no_such_module_xyz:sign_inplace"))
    src = _s2_source(sign="planetary_computer:sign_inplace")  # registered, not installed here
    with caplog.at_level(logging.WARNING, logger="geosdm.stac"):
        [got] = prepare_items(items, src)  # the source's hook is optional: warn, stay unsigned
    assert "not installed" in caplog.text and "?sig" not in got.assets["B04"].href
    [got] = prepare_items(items, _s2_source(sign="tests.test_stac:_sign_copy"))
    assert got.assets["B04"].href.endswith("?sig=copy")
    [got] = prepare_items(items, _s2_source(sign="tests.test_stac:_sign_copy"), sign=False)
    assert "?sig" not in got.assets["B04"].href


def test_rewrite_hrefs():
    items = [_item("h")]
    got = rewrite_hrefs(items, {"https://example.invalid/": "/mirror/", "https://": "s3://"})
    assert got[0].assets["B04"].href == "/mirror/h/B04.tif" and items[0].assets["B04"].href.startswith("https")
    assert rewrite_hrefs(items, str.upper)[0].assets["SCL"].href == "HTTPS://EXAMPLE.INVALID/H/SCL.TIF"


# ------------------------------------------------------------------------------------------ odc-stac helpers


def test_odc_stac_config_and_load_kwargs():
    from geosdm.sources import load_source

    es = load_source("earth-search-sentinel-2-l2a")
    cfg = odc_stac_config(es)["sentinel-2-l2a"]
    assert cfg["assets"]["red"] == {"data_type": "uint16", "unit": "1", "nodata": 0}
    assert cfg["aliases"]["B04"] == "red" and cfg["aliases"]["SCL"] == "scl"
    kw = odc_load_kwargs(es)
    assert kw["bands"][0] == "blue" and kw["resampling"]["scl"] == "nearest" and kw["resampling"]["red"] == "bilinear"
    assert "bio01" not in odc_stac_config(load_source("chelsa-bioclim"))["chelsa-v2.1-bioclim-30s"]["assets"]


# ------------------------------------------------------------------------------------------ COG URLs


def _write_cog(path: Path, *, crs: str, x0: float, y0: float, res: float, dtype: str, nodata: Any,
               value: float, scale: float = 1.0) -> Path:  # fmt: skip
    prof = {"driver": "GTiff", "width": 64, "height": 48, "count": 1, "dtype": dtype, "crs": crs,
            "transform": from_origin(x0, y0, res, res), "nodata": nodata, "tiled": True, "blockxsize": 16,
            "blockysize": 16, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(np.full((48, 64), value, dtype=dtype), 1)
        if scale != 1.0:
            ds.scales = (scale,)
    return path


def test_items_from_cog_urls_fill_projection_and_load(tmp_path):
    import odc.stac

    a = _write_cog(tmp_path / "bio1.tif", crs="EPSG:2154", x0=700000, y0=6300000, res=1000, dtype="int16",
                   nodata=-32768, value=2900, scale=0.1)  # fmt: skip
    b = _write_cog(tmp_path / "bio12.tif", crs="EPSG:2154", x0=700000, y0=6300000, res=1000, dtype="float32",
                   nodata=float("nan"), value=812.5)  # fmt: skip
    [item] = items_from_cog_urls({"bio01": str(a), "bio12": str(b)}, collection="bioclim",
                                 datetime="1981-01-01/2010-12-31")  # fmt: skip
    assert item.properties["start_datetime"] == "1981-01-01T00:00:00Z" and item.datetime is None
    asset = item.assets["bio01"].extra_fields
    assert asset["proj:code"] == "EPSG:2154" and asset["proj:shape"] == [48, 64]
    assert asset["proj:transform"] == [1000.0, 0.0, 700000.0, 0.0, -1000.0, 6300000.0]
    assert asset["raster:bands"][0] == {"data_type": "int16", "nodata": -32768.0, "scale": 0.1, "offset": 0.0}
    assert item.assets["bio12"].extra_fields["raster:bands"][0]["nodata"] == "nan"
    lon0, lat0, lon1, lat1 = item.bbox
    assert 3 < lon0 < lon1 < 5 and 43 < lat0 < lat1 < 45
    src = parse_source({"name": "bc", "collection": "bioclim", "kind": "cog-urls", "datetime": "1981-01-01/2010-12-31",
                        "assets": {"bio01": {"long_name": "t", "dtype": None, "scale": 0.1, "offset": -273.15,
                                             "href": str(a), "units": "degC"},
                                   "bio12": {"long_name": "p", "dtype": None, "href": str(b), "units": "mm"}}})  # fmt: skip  # noqa: E501
    items = search(src, bbox=(3, 43, 5, 45))
    assert asset_scale_offset(items[0], "bio01") == (0.1, -273.15)
    ds = odc.stac.load(items, **odc_load_kwargs(src))
    assert ds.bio01.dtype == np.int16 and int(ds.bio01.max()) == 2900 and float(ds.bio12.mean()) == 812.5
    with pytest.raises(EmptySearchError, match="do not overlap"):
        search(src, bbox=(10, 50, 11, 51))
    per_url = items_from_cog_urls([str(a), str(b)], collection="x", datetime="2000-01-01")
    assert [i.id for i in per_url] == ["bio1", "bio12"] and list(per_url[0].assets) == ["data"]
    with pytest.raises(DataSourceError, match="cannot open COG"):
        items_from_cog_urls([str(tmp_path / "missing.tif")], collection="x", datetime="2000-01-01")


# ------------------------------------------------------------------------------------------ STAC API search


class _FakeApi(BaseHTTPRequestHandler):
    conforms: list[str] = []
    items: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        base = f"http://{self.headers['Host']}"
        self._send({"type": "Catalog", "id": "fake", "description": "fake", "stac_version": "1.0.0",
                    "conformsTo": self.conforms,
                    "links": [{"rel": "self", "href": base + "/"}, {"rel": "root", "href": base + "/"},
                              {"rel": "search", "href": base + "/search", "method": "POST",
                               "type": "application/geo+json"}]})  # fmt: skip

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        feats = [f for f in self.items if f["collection"] in body.get("collections", [])]
        if "query" in body:
            lim = body["query"]["eo:cloud_cover"]["lte"]
            feats = [f for f in feats if f["properties"]["eo:cloud_cover"] <= lim]
        if "filter" in body:
            lim = body["filter"]["args"][1]
            feats = [f for f in feats if f["properties"]["eo:cloud_cover"] <= lim]
        self._send({"type": "FeatureCollection", "features": feats, "links": []})


@pytest.fixture
def fake_api() -> Iterator[tuple[str, type[_FakeApi]]]:
    handler = type("Api", (_FakeApi,), {"conforms": [], "items": [], "bodies": []})
    handler.items = [_item(f"i{c}", cloud=c).to_dict() for c in (5, 30, 70)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


CORE = ["https://api.stacspec.org/v1.0.0/core", "https://api.stacspec.org/v1.0.0/item-search"]


@pytest.mark.parametrize(
    ("extension", "sent"),
    [("https://api.stacspec.org/v1.0.0/item-search#filter", "filter"),
     ("https://api.stacspec.org/v1.0.0/item-search#query", "query")],
)  # fmt: skip
def test_search_filters_cloud_server_side(fake_api, extension, sent):
    url, api = fake_api
    api.conforms = [*CORE, extension]
    items = search(_s2_source(url=url), bbox=(2, 43, 5, 45), datetime="2023-06-01/2023-06-30", max_cloud=40)
    assert sorted(i.id for i in items) == ["i30", "i5"]
    body = api.bodies[-1]
    assert sent in body and ({"query", "filter"} - {sent}).isdisjoint(body)
    assert body["collections"] == ["sentinel-2-l2a"] and body["bbox"] == [2, 43, 5, 45]
    assert body["datetime"] == "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z"
    assert asset_scale_offset(items[0], "B04") == pytest.approx((1e-4, -0.1))  # prepared


def test_search_falls_back_to_client_side(fake_api, caplog):
    url, api = fake_api
    api.conforms = CORE
    with caplog.at_level(logging.INFO, logger="geosdm.stac"):
        items = search(_s2_source(url=url, max_cloud=10), bbox=(2, 43, 5, 45))
    assert [i.id for i in items] == ["i5"] and "query" not in api.bodies[-1] and "filter" not in api.bodies[-1]
    assert "declares neither the filter nor the query extension" in caplog.text


def test_search_empty_and_unreachable(fake_api):
    url, api = fake_api
    api.conforms = [*CORE, "https://api.stacspec.org/v1.0.0/item-search#filter"]
    with pytest.raises(EmptySearchError) as err:
        search(_s2_source(url=url), bbox=(2, 43, 5, 45), datetime="2023-06", max_cloud=1)
    msg = str(err.value)
    assert "collection 'sentinel-2-l2a'" in msg and url in msg and "(2.0, 43.0, 5.0, 45.0)" in msg
    assert "eo:cloud_cover <= 1" in msg and "raise max_cloud" in msg
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(DataSourceError, match="check the URL"):
        search(_s2_source(url=dead), bbox=(2, 43, 5, 45))
    with pytest.raises(InputError, match="has no STAC API url"):
        search(_s2_source(url=None), bbox=(2, 43, 5, 45))


@pytest.fixture(scope="module")
def rustac_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`rustac serve` (memory backend) over three items: a real STAC API that declares no filter/query."""
    exe = shutil.which("rustac") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rustac")
    if not Path(exe).exists():
        pytest.skip("rustac CLI not installed")
    folder = tmp_path_factory.mktemp("rustac")
    ic = folder / "items.json"
    ic.write_text(json.dumps({"type": "FeatureCollection",
                              "features": [_item(f"r{c}", cloud=c).to_dict() for c in (5, 30, 70)]}))  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "serve", "--create-collections", "-a", f"127.0.0.1:{port}", str(ic)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_search_rustac_serve_client_side(rustac_api):
    items = search(_s2_source(url=rustac_api), bbox=(2, 43, 5, 45), datetime="2023", max_cloud=40)
    assert sorted(i.id for i in items) == ["r30", "r5"]
    ts = items[0].datetime
    assert ts is not None and ts.astimezone(UTC).year == 2023


# ------------------------------------------------------------------------------------------ demo contract


DEMO_SOURCES = ["demo-sentinel-2-l2a", "demo-landsat-c2-l2", "demo-cop-dem-glo-30", "demo-landcover",
                "demo-climate-monthly", "demo-bioclim"]  # fmt: skip


def test_demo_items_match_demo_catalogs(demo_small):
    """The demo generator's Items and catalogs/demo-*.yaml describe the same assets, dtypes and scaling."""
    import odc.stac

    from geosdm.sources import load_source

    for name in DEMO_SOURCES:
        src = load_source(name, env={})
        raw = items_from_static_catalog(demo_small.catalog_json, collection=src.collection)
        for item in raw:
            for key, cfg in src.assets.items():
                band = item.assets[key].extra_fields["raster:bands"][0]
                assert band["data_type"] == cfg.dtype, (name, item.id, key)
                assert str(band.get("nodata")) == str(cfg.nodata) or float(band["nodata"]) == cfg.nodata, (name, key)
                if not (src.harmonize and key in src.harmonize.assets):
                    assert (band.get("scale", 1.0), band.get("offset", 0.0)) == pytest.approx((cfg.scale, cfg.offset))
        prepared = items_from_static_catalog(demo_small.catalog_json, src, max_cloud=100)  # checks pass
        assert len(prepared) == len(raw)
        ic = read_items(demo_small.item_collection(src.collection), href_base=str(demo_small.root))
        assert sorted(i.id for i in ic) == sorted(i.id for i in raw)
        assert all(Path(a.href).is_file() for i in ic for a in i.assets.values() if a.href.endswith(".tif"))
    s2 = load_source("demo-sentinel-2-l2a", env={})
    items = items_from_static_catalog(demo_small.catalog_json, s2, max_cloud=100)
    assert {i.properties["geosdm:boa_offset_dn"] for i in items} == {-1000}
    assert asset_scale_offset(items[0], "B04") == pytest.approx((1e-4, -0.1))  # declared -0.1 applied once
    ds = odc.stac.load(items[:1], **odc_load_kwargs(s2))
    assert ds.B04.dtype == np.uint16 and ds.SCL.dtype == np.uint8 and int(ds.B04.max()) > 1000
