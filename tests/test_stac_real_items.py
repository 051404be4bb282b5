"""Our source definitions against real published STAC Items (../shared/data/stac), loaded with odc-stac.

The Items' hrefs point at the internet; each test rewrites them to tiny local GeoTIFFs written to match every
asset's real ``proj:shape``/``proj:transform``/CRS (tiled, compressed and sparse: only the few 512-px blocks
around the loaded window hold data, so a 10980 x 10980 band costs a few kB and milliseconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest

from geosdm.errors import InputError
from geosdm.sources import SourceConfig, load_source, parse_source
from geosdm.stac import (
    asset_scale_offset,
    check_item,
    items_from_static_catalog,
    odc_load_kwargs,
    prepare_items,
    read_items,
    rewrite_hrefs,
    search,
)

pytestmark = pytest.mark.shared_data

PC_S2_FILES = [
    "stac-geoparquet/sentinel-2-l2a-pc.json",
    "odc-stac/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json",
    "odc-stac/S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json",
    "odc-stac/site1-20200606-tall-strip-africa.geojson",
    "odc-stac/site2-2020_jun_jul-35MNM.geojson",
]
PC_LANDSAT_FILES = ["stac-geoparquet/landsat-c2-l2-pc.json"]
USGS_LANDSAT_FILES = [
    "odc-stac/LC08_L2SP_028030_20200114_20200824_02_T1_SR.json",
    "odc-stac/LE07_L2SP_044033_20210329_20210424_02_T1_SR.json",
]  # LC08_L2SR_081119_..._T2.json is a STAC 1.0.0-beta.2 item with the old keys (SR_B2.TIF, QA_PIXEL.TIF)


def _load_json_items(path: Path) -> list[pystac.Item]:
    raw = json.loads(path.read_text())
    feats = raw if isinstance(raw, list) else raw.get("features", [raw])
    return [pystac.Item.from_dict(f) for f in feats]


@pytest.fixture(scope="module")
def stac_dir(shared_data: Path) -> Path:
    d = shared_data / "stac"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    return d


def _crs(item: pystac.Item) -> str:
    """Item-level CRS (pystac migrates proj:epsg to proj:code when reading)."""
    p = item.properties
    return str(p.get("proj:code") or f"EPSG:{p['proj:epsg']}")


def _items(stac_dir: Path, files: list[str]) -> list[pystac.Item]:
    return [it for f in files for it in _load_json_items(stac_dir / f)]


# ------------------------------------------------------------------------------------------ metadata match


def _assert_matches(items: list[pystac.Item], src: SourceConfig, *, keys_only: bool = False) -> int:
    """Each configured asset exists; declared raster:bands dtype/nodata/scale/offset equal the YAML's."""
    checked = 0
    for item in items:
        for key, cfg in src.assets.items():
            assert key in item.assets, f"{item.id}: asset {key!r} missing; it has {sorted(item.assets)}"
            if keys_only:
                continue
            rb = item.assets[key].extra_fields.get("raster:bands") or [{}]
            band = rb[0]
            if "data_type" in band:
                assert band["data_type"] == cfg.dtype, (item.id, key, band)
                checked += 1
            if "nodata" in band:
                assert float(band["nodata"]) == cfg.nodata, (item.id, key, band)
            if "scale" in band:
                assert band["scale"] == pytest.approx(cfg.scale), (item.id, key, band)
            if "offset" in band:
                assert band["offset"] == pytest.approx(cfg.offset), (item.id, key, band)
    return checked


def test_pc_sentinel2_items_match_definition(stac_dir):
    src = load_source("pc-sentinel-2-l2a")
    items = _items(stac_dir, PC_S2_FILES)
    assert len(items) == 4 + 1 + 1 + 9 + 13
    assert {i.collection_id for i in items} == {"sentinel-2-l2a"} and src.collection == "sentinel-2-l2a"
    assert _assert_matches(items, src) == len(src.assets)  # the raster_ext item declares dtypes for all 7
    assert all(i.properties.get(src.cloud_property) is not None for i in items)  # type: ignore[arg-type]


def test_pc_sentinel2_collection_item_assets_match(stac_dir):
    src = load_source("pc-sentinel-2-l2a")
    coll = json.loads((stac_dir / "odc-stac" / "sentinel-2-l2a.collection.json").read_text())
    assert coll["id"] == src.collection
    for key, cfg in src.assets.items():
        band = coll["item_assets"][key]["raster:bands"][0]
        assert (band["data_type"], band.get("nodata")) == (cfg.dtype, cfg.nodata), key
    eo = {b["name"]: b.get("common_name") for a in coll["item_assets"].values() for b in a.get("eo:bands", [])}
    assert [eo[k] for k in ("B02", "B03", "B04", "B08", "B11", "B12")] == ["blue", "green", "red", "nir",
                                                                           "swir16", "swir22"]  # fmt: skip


def test_pc_landsat_items_match_definition(stac_dir):
    src = load_source("pc-landsat-c2-l2")
    items = _items(stac_dir, PC_LANDSAT_FILES)
    assert len(items) == 4 and {i.collection_id for i in items} == {src.collection}
    assert _assert_matches(items, src) == 4 * len(src.assets)  # dtype, nodata, scale, offset all declared
    bits = {f["name"]: f["offset"] for f in items[0].assets["qa_pixel"].extra_fields["classification:bitfields"]}
    assert src.mask is not None and {k: bits[k] for k in src.mask.bits} == dict(src.mask.bits)


def test_usgs_landsat_items_use_the_same_keys(stac_dir):
    _assert_matches(_items(stac_dir, USGS_LANDSAT_FILES), load_source("pc-landsat-c2-l2"), keys_only=True)


def test_item_without_shape_and_transform_is_rejected(stac_dir):
    [item] = _load_json_items(stac_dir / "odc-stac" / "only_crs_proj.json")
    key = next(k for k, a in item.assets.items() if "data" in (a.roles or []))
    src = parse_source({"name": "dea-fc", "collection": item.collection_id or "x", "url": "http://h",
                        "assets": {key: {"long_name": key, "dtype": "uint8"}}})  # fmt: skip
    with pytest.raises(InputError, match=rf"item '{item.id}' asset '{key}' lacks projection info \['proj:shape'"):
        check_item(item, src)


def test_prepare_real_items_offsets(stac_dir):
    s2 = load_source("pc-sentinel-2-l2a")
    new = prepare_items(_items(stac_dir, PC_S2_FILES[:1]), s2, sign=False)  # 2024, baseline 05.10
    old = prepare_items(_items(stac_dir, PC_S2_FILES[2:3]), s2, sign=False)  # 2019, baseline 02.12
    assert [asset_scale_offset(i, "B04") for i in new] == [(1e-4, pytest.approx(-0.1))] * 4
    assert asset_scale_offset(old[0], "B04") == (1e-4, 0.0) and asset_scale_offset(old[0], "SCL") == (1.0, 0.0)
    ls = prepare_items(_items(stac_dir, PC_LANDSAT_FILES), load_source("pc-landsat-c2-l2"), sign=False)
    assert {asset_scale_offset(i, "nir08") for i in ls} == {(0.0000275, -0.2)}
    assert asset_scale_offset(ls[0], "qa_pixel") == (1.0, 0.0)


# ------------------------------------------------------------------------------------------ odc-stac loading


def _write_sparse_tif(path: Path, *, shape: list[int], transform: list[float], crs: str, dtype: str,
                      nodata: float | None, window_px: tuple[int, int, int, int], fill: Any) -> None:  # fmt: skip
    """A full-size tiled, deflated GeoTIFF with data only in the 512-px blocks covering ``window_px``."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    r0, r1, c0, c1 = window_px
    r0, c0 = max(r0 // 512 * 512, 0), max(c0 // 512 * 512, 0)
    r1, c1 = min(-(-r1 // 512) * 512, shape[0]), min(-(-c1 // 512) * 512, shape[1])
    prof = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": 1, "dtype": dtype, "crs": crs,
            "transform": Affine(*transform[:6]), "nodata": nodata, "tiled": True, "blockxsize": 512,
            "blockysize": 512, "compress": "deflate", "sparse_ok": True}  # fmt: skip
    with rasterio.open(path, "w", **prof) as ds:
        if r1 > r0 and c1 > c0:  # else the window misses this grid: an all-nodata (empty sparse) file
            ds.write(fill(r1 - r0, c1 - c0).astype(dtype), 1, window=Window(c0, r0, c1 - c0, r1 - r0))


def _localize(items: list[pystac.Item], src: SourceConfig, folder: Path, values: dict[str, Any],
              size_m: float) -> tuple[list[pystac.Item], Any]:  # fmt: skip
    """Write local files for every configured asset of every item; return rewritten items and a load GeoBox.

    The load window is ``size_m`` square, 100 pixels inside the first item's first asset grid (same CRS for
    all items of a call).
    """
    from affine import Affine
    from odc.geo.geobox import GeoBox

    first = items[0].assets[next(iter(src.assets))]
    tr0 = first.extra_fields.get("proj:transform") or items[0].properties["proj:transform"]
    crs = _crs(items[0])
    res = abs(tr0[0])
    x0, y0 = tr0[2] + 100 * res, tr0[5] - 100 * res
    n = int(size_m // res)
    gbox = GeoBox((n, n), Affine(res, 0, x0, 0, -res, y0), crs)
    hrefs: dict[str, str] = {}
    for item in items:
        for key, cfg in src.assets.items():
            a = item.assets[key]
            shape = a.extra_fields.get("proj:shape") or item.properties["proj:shape"]
            tr = a.extra_fields.get("proj:transform") or item.properties["proj:transform"]
            ax, ay = abs(tr[0]), abs(tr[4])
            col0, row0 = int((x0 - tr[2]) // ax), int((tr[5] - y0) // ay)
            span = int(size_m // min(ax, ay)) + 2
            path = folder / f"{item.id}_{key}.tif"
            _write_sparse_tif(path, shape=shape, transform=tr, crs=crs, dtype=cfg.dtype or "uint16",
                              nodata=cfg.nodata, window_px=(row0, row0 + span, col0, col0 + span),
                              fill=values[key])  # fmt: skip
            hrefs[a.href] = str(path)
    return rewrite_hrefs(items, lambda h: hrefs.get(h, h)), gbox


def _const(value: int) -> Any:
    return lambda h, w: np.full((h, w), value)


def _stripes(even: int, odd: int) -> Any:
    def fill(h: int, w: int) -> np.ndarray:
        out = np.full((h, w), even)
        out[1::2] = odd
        return out

    return fill


def test_odc_stac_loads_real_sentinel2_items(stac_dir, tmp_path):
    import odc.stac

    src = load_source("pc-sentinel-2-l2a")
    raw = _items(stac_dir, PC_S2_FILES[:1])  # 4 items, baseline 05.10, UTM 46N and 47N
    dn = {k: 1500 + 100 * i for i, k in enumerate(src.data_assets)}
    values = {k: _const(v) for k, v in dn.items()}
    values["SCL"] = lambda h, w: np.full((h, w), 4)  # vegetation: clear
    loaded = 0
    for item in raw:  # one load per tile (the 4 tiles are in UTM 46N and 47N)
        local, gbox = _localize([item], src, tmp_path, values, size_m=640)
        [prepared] = prepare_items(local, src, sign=False)
        ds = odc.stac.load([prepared], geobox=gbox, **odc_load_kwargs(src))
        assert dict(ds.sizes) == {"time": 1, "y": 64, "x": 64} and ds.odc.crs.epsg == int(_crs(item)[5:])
        assert ds.B04.dtype == np.uint16 and ds.SCL.dtype == np.uint8
        assert ds.B04.attrs["nodata"] == 0 and ds.B04.attrs.get("units", "1") == "1"  # odc-stac omits "1"
        for band, value in dn.items():  # 10 m and 20 m bands all read back exactly
            assert int(ds[band].min()) == int(ds[band].max()) == value, band
        scale, offset = asset_scale_offset(prepared, "B04")
        assert float(ds.B04[0, 0, 0]) * scale + offset == pytest.approx(dn["B04"] * 1e-4 - 0.1)
        assert bool(src.mask.is_clear(ds.SCL).all())  # type: ignore[union-attr]
        loaded += 1
    assert loaded == 4


def test_odc_stac_loads_real_landsat_items_with_qa_mask(stac_dir, tmp_path):
    import odc.stac

    src = load_source("pc-landsat-c2-l2")
    raw = _items(stac_dir, PC_LANDSAT_FILES)
    clear, cloud = 21824, 21824 | 1 << 3
    values = {k: _const(20000) for k in src.data_assets}
    values["qa_pixel"] = _stripes(clear, cloud)
    local, gbox = _localize(raw[:1], src, tmp_path, values, size_m=30 * 256)
    [item] = prepare_items(local, src, sign=False)
    ds = odc.stac.load([item], geobox=gbox, **odc_load_kwargs(src))
    scale, offset = asset_scale_offset(item, "red")
    assert float(ds.red.max()) * scale + offset == pytest.approx(20000 * 0.0000275 - 0.2)
    clear_frac = float(src.mask.is_clear(ds.qa_pixel).mean())  # type: ignore[union-attr]
    assert clear_frac == 0.5  # even rows clear, odd rows cloud (grid-aligned nearest read)
    assert ds.qa_pixel.dtype == np.uint16 and ds.red.attrs["nodata"] == 0


# ------------------------------------------------------------------------------------------ geoparquet + API


def test_real_items_through_stac_geoparquet(stac_dir, tmp_path):
    import rustac

    raw = json.loads((stac_dir / "stac-geoparquet" / "sentinel-2-l2a-pc.json").read_text())
    pq = tmp_path / "s2.parquet"
    rustac.write_sync(str(pq), raw)
    back = read_items(pq)
    assert [i.id for i in back] == [f["id"] for f in raw]
    assert back[0].assets["B04"].extra_fields["proj:shape"] == raw[0]["assets"]["B04"]["proj:shape"]
    src = load_source("pc-sentinel-2-l2a")
    got = items_from_static_catalog(pq, src, bbox=(95, 80, 100, 82), max_cloud=0.5, sign=False)
    assert [i.id for i in got] == [f["id"] for f in raw if f["properties"]["eo:cloud_cover"] <= 0.5
                                   and f["bbox"][2] >= 95]  # fmt: skip


def test_search_real_items_on_rustac_serve(stac_dir, tmp_path):
    """A real STAC API (rustac serve) over real PC items: client-side cloud filter, prepared Items."""
    import shutil
    import socket
    import subprocess
    import time

    exe = shutil.which("rustac") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rustac")
    if not Path(exe).exists():
        pytest.skip("rustac CLI not installed")
    ic = tmp_path / "s2.json"
    raw = json.loads((stac_dir / "stac-geoparquet" / "sentinel-2-l2a-pc.json").read_text())
    ic.write_text(json.dumps({"type": "FeatureCollection", "features": raw}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "serve", "--create-collections", "-a", f"127.0.0.1:{port}", str(ic)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        src = load_source("pc-sentinel-2-l2a", url=f"http://127.0.0.1:{port}")
        items = search(src, bbox=(90, 80, 100, 82), datetime="2024-04-19", max_cloud=0.5, sign=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    expected = sorted(f["id"] for f in raw if f["properties"]["eo:cloud_cover"] <= 0.5)
    assert sorted(i.id for i in items) == expected and len(expected) == 2
    assert all(asset_scale_offset(i, "B08") == (1e-4, pytest.approx(-0.1)) for i in items)
