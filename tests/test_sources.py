"""geosdm.sources: shipped catalogs, YAML loading, validation errors, masks and composites."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import yaml
from pydantic import ValidationError

from geosdm.errors import InputError
from geosdm.sources import (
    CompositeConfig,
    MaskConfig,
    SourceConfig,
    available_sources,
    catalog_dirs,
    load_source,
    parse_source,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_COLLECTIONS = {
    "demo-sentinel-2-l2a": "sentinel-2-l2a",
    "demo-landsat-c2-l2": "landsat-c2-l2",
    "demo-cop-dem-glo-30": "cop-dem-glo-30",
    "demo-landcover": "demo-landcover",
    "demo-climate-monthly": "demo-climate-monthly",
    "demo-bioclim": "demo-bioclim",
}


def _minimal(**extra: object) -> dict:
    src = {
        "name": "t",
        "collection": "c",
        "url": "http://127.0.0.1:1",
        "assets": {"B04": {"long_name": "red", "dtype": "uint16", "nodata": 0, "scale": 1e-4, "role": "reflectance"}},
    }
    src.update(extra)
    return src


def _write(tmp_path: Path, data: dict, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


# ------------------------------------------------------------------------------------------ shipped


def test_catalogs_dir_found_from_package():
    assert REPO / "catalogs" in catalog_dirs()
    names = available_sources()
    for expected in ["pc-sentinel-2-l2a", "earth-search-sentinel-2-l2a", "pc-landsat-c2-l2", "pc-cop-dem-glo-30",
                     "pc-esa-worldcover", "worldclim-bioclim", "chelsa-bioclim", *DEMO_COLLECTIONS]:  # fmt: skip
        assert expected in names


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "catalogs").glob("*.yaml")))
def test_every_shipped_catalog_is_valid(name):
    src = load_source(name)
    assert src.name == name
    assert all(a.long_name for a in src.assets.values())
    hash(src)  # frozen value object
    assert dask.base.tokenize(src) == dask.base.tokenize(load_source(name))


def test_demo_catalogs_match_demo_layout():
    from geosdm.demo.layout import COLLECTIONS

    assert set(DEMO_COLLECTIONS.values()) == set(COLLECTIONS)
    for name, coll in DEMO_COLLECTIONS.items():
        src = load_source(name, env={})
        assert src.collection == coll and src.url is None  # placeholder left for run time
        assert load_source(name, url="http://127.0.0.1:7822").url == "http://127.0.0.1:7822"
        assert load_source(name, env={"GEOSDM_STAC_URL": "http://h:1"}).url == "http://h:1"
    s2 = load_source("demo-sentinel-2-l2a")
    assert list(s2.assets) == ["B02", "B03", "B04", "B08", "B11", "B12", "SCL"]
    assert s2.assets["B04"].scale == 1e-4 and s2.harmonize and s2.harmonize.offset_dn == -1000
    lc = load_source("demo-landcover").assets["data"]
    assert lc.categorical and sorted(lc.classes) == list(range(1, 13)) and lc.classes[12] == "water"
    assert list(load_source("demo-bioclim").assets) == [f"bio{i:02d}" for i in range(1, 20)]
    assert list(load_source("demo-climate-monthly").assets) == ["tmin", "tmax", "prec"]


def test_real_definitions_key_facts():
    pc = load_source("pc-sentinel-2-l2a")
    assert pc.url == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert pc.sign == "planetary_computer:sign_inplace"
    assert pc.mask is not None and pc.mask.keep == (4, 5, 6) and 11 in pc.mask.snow
    assert {0, 1, 3, 8, 9, 10} <= set(pc.mask.reject)
    es = load_source("earth-search-sentinel-2-l2a")
    assert es.url == "https://earth-search.aws.element84.com/v1"
    assert {es.band_name(k) for k in es.data_assets} == {"B02", "B03", "B04", "B08", "B11", "B12"}
    assert es.harmonize is not None and es.harmonize.applied_property == "earthsearch:boa_offset_applied"
    ls = load_source("pc-landsat-c2-l2")
    assert ls.assets["red"].scale == 0.0000275 and ls.assets["red"].offset == -0.2
    assert ls.mask is not None and ls.mask.bits["cloud"] == 3 and ls.mask.bits["clear"] == 6
    wc = load_source("pc-esa-worldcover").assets["map"]
    assert wc.classes[10] == "Tree cover" and wc.classes[100] == "Moss and lichen"
    ch = load_source("chelsa-bioclim")
    assert ch.assets["bio01"].scale == 0.1 and ch.assets["bio01"].offset == -273.15
    assert ch.assets["bio12"].offset == 0 and ch.assets["bio01"].href.endswith("CHELSA_bio1_1981-2010_V.2.1.tif")
    assert load_source("worldclim-bioclim").assets["bio19"].href.endswith("wc2.1_30s_bio_19.tif")


# ------------------------------------------------------------------------------------------ loading


def test_load_by_path_and_unknown_name(tmp_path):
    p = _write(tmp_path, _minimal())
    assert load_source(p).collection == "c"
    with pytest.raises(InputError, match="no source definition named 'nope'.*available"):
        load_source("nope")
    with pytest.raises(InputError, match="does not exist"):
        load_source(tmp_path / "missing.yaml")


def test_env_substitution(tmp_path):
    p = _write(tmp_path, _minimal(url="${MY_STAC}/v1", title="${MISSING_TITLE:-default title}"))
    src = load_source(p, env={"MY_STAC": "http://127.0.0.1:9"})
    assert src.url == "http://127.0.0.1:9/v1" and src.title == "default title"
    with pytest.raises(InputError, match=r"`url` refers to environment variable 'MY_STAC'.*not set"):
        load_source(p, env={})
    assert load_source(p, env={}, url="http://x").url == "http://x"  # the override wins


def test_overrides_merge(tmp_path):
    p = _write(tmp_path, _minimal())
    src = load_source(p, overrides={"max_cloud": 30, "assets": {"B04": {"nodata": 1}}})
    assert src.max_cloud == 30 and src.assets["B04"].nodata == 1 and src.assets["B04"].scale == 1e-4


def test_frozen_and_read_only():
    src = parse_source(_minimal())
    with pytest.raises(ValidationError, match="frozen"):
        src.collection = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        src.assets["B05"] = src.assets["B04"]  # type: ignore[index]
    assert src == parse_source(_minimal()) and hash(src) == hash(parse_source(_minimal()))
    real = load_source("pc-landsat-c2-l2")
    assert pickle.loads(pickle.dumps(real)) == real  # Dask workers receive configs by pickle
    assert copy.deepcopy(real) == real and real.model_copy(update={"max_cloud": 5}).max_cloud == 5


# ------------------------------------------------------------------------------------------ validation errors


def test_unknown_key_names_key_and_allowed(tmp_path):
    bad = _minimal()
    bad["assets"]["B04"]["dtyp"] = "uint16"
    bad["colection"] = "x"
    with pytest.raises(InputError) as err:
        load_source(_write(tmp_path, bad))
    msg = str(err.value)
    assert "t.yaml is not a valid source definition" in msg
    assert "unknown key `assets.B04.dtyp`" in msg and "'dtype'" in msg
    assert "unknown key `colection`" in msg and "'collection'" in msg


def test_bad_dtype():
    bad = _minimal()
    bad["assets"]["B04"]["dtype"] = "uint17"
    with pytest.raises(InputError, match=r"`assets.B04.dtype`.*'uint16'.*got 'uint17'"):
        parse_source(bad)


def test_nodata_must_fit_dtype():
    bad = _minimal()
    bad["assets"]["B04"]["nodata"] = -9999
    with pytest.raises(InputError, match="nodata -9999.* cannot be stored in dtype uint16"):
        parse_source(bad)


def test_missing_mask_rules():
    scl = {"long_name": "scl", "dtype": "uint8", "nodata": 0, "role": "mask"}
    no_block = _minimal()
    no_block["assets"]["SCL"] = scl
    with pytest.raises(InputError, match=r"\['SCL'\] have `role: mask` but there are no mask rules"):
        parse_source(no_block)
    with pytest.raises(InputError, match="classes mask needs `keep:`"):
        parse_source({**no_block, "mask": {"asset": "SCL", "kind": "classes", "reject": [0]}})
    with pytest.raises(InputError, match="bits mask needs `bits:`"):
        parse_source({**no_block, "mask": {"asset": "SCL", "kind": "bits"}})
    with pytest.raises(InputError, match="composited without mask rules"):
        parse_source(_minimal(composite={"period": "season"}))
    with pytest.raises(InputError, match=r"mask asset 'QA' is not in `assets`"):
        parse_source({**no_block, "mask": {"asset": "QA", "kind": "classes", "keep": [4], "reject": [0]}})
    with pytest.raises(InputError, match=r"classes \[4\] are in both `keep` and `reject`"):
        parse_source({**no_block, "mask": {"asset": "SCL", "kind": "classes", "keep": [4], "reject": [4]}})
    with pytest.raises(InputError, match=r"bit names \['cloud'\] are not in `bits`"):
        parse_source({**no_block, "mask": {"asset": "SCL", "kind": "bits", "bits": {"fill": 0},
                                           "reject_bits": ["cloud"]}})  # fmt: skip
    with pytest.raises(InputError, match="do not fit the 8-bit dtype"):
        parse_source({**no_block, "mask": {"asset": "SCL", "kind": "bits", "bits": {"x": 9}, "reject_bits": ["x"]}})


def test_categorical_rules():
    lc = _minimal()
    lc["assets"] = {"lc": {"long_name": "lc", "dtype": "uint8", "nodata": 0, "role": "categorical"}}
    with pytest.raises(InputError, match="needs a class table"):
        parse_source(lc)
    lc["assets"]["lc"].update(classes={1: "a"}, resampling="bilinear")
    with pytest.raises(InputError, match="cannot use resampling 'bilinear'"):
        parse_source(lc)
    lc["assets"]["lc"]["resampling"] = "mode"
    assert parse_source(lc).assets["lc"].categorical


def test_kind_specific_rules():
    with pytest.raises(InputError, match="needs an `href` for every asset"):
        parse_source(_minimal(kind="cog-urls", datetime="2000-01-01"))
    with pytest.raises(InputError, match="only `kind: raster` and `cog-urls` sources use"):
        src = _minimal()
        src["assets"]["B04"]["href"] = "x.tif"
        parse_source(src)
    with pytest.raises(InputError, match="kind static needs `url:`"):
        parse_source(_minimal(kind="static", url=None))
    with pytest.raises(InputError, match=r"harmonize.assets \['B99'\] are not reflectance assets"):
        parse_source(_minimal(harmonize={"assets": ["B99"]}))
    with pytest.raises(InputError, match="max_cloud"):
        parse_source(_minimal(max_cloud=150))


# ------------------------------------------------------------------------------------------ masks and composites


def test_scl_mask_is_clear_numpy_dask_xarray():
    m = MaskConfig(asset="SCL", kind="classes", keep=(4, 5, 6), snow=(11,), reject=(0, 1, 2, 3, 7, 8, 9, 10))
    scl = np.array([[0, 4, 5], [6, 9, 11]], dtype=np.uint8)
    assert m.is_clear(scl).tolist() == [[False, True, True], [True, False, False]]
    assert m.model_copy(update={"keep_snow": True}).is_clear(scl)[1, 2]
    lazy = m.is_clear(da.from_array(scl, chunks=1))
    assert isinstance(lazy, da.Array) and lazy.compute().sum() == 3
    xa = m.is_clear(xr.DataArray(da.from_array(scl, chunks=1), dims=("y", "x")))
    assert isinstance(xa.data, da.Array) and int(xa.sum()) == 3


def test_qa_pixel_bits_mask():
    src = load_source("pc-landsat-c2-l2")
    m = src.mask
    assert m is not None and m.reject_bitmask == 0b111111  # fill, dilated, cirrus, cloud, shadow, snow
    clear, cloud, snow, fill, water = 21824, 21824 | 1 << 3, 21824 | 1 << 5, 1, 21952  # real QA_PIXEL codes
    qa = np.array([clear, cloud, snow, fill, water], dtype=np.uint16)
    assert m.is_clear(qa).tolist() == [True, False, False, False, True]
    assert m.model_copy(update={"keep_snow": True}).reject_bitmask == 0b011111


def test_composite_periods_and_labels():
    c = CompositeConfig(quantiles=(0.1, 0.9))
    assert list(c.periods()) == ["djf", "mam", "jja", "son"] and c.periods()["djf"] == (12, 1, 2)
    assert c.stat_labels() == ("median", "q10", "q90")
    assert list(CompositeConfig(period="month").periods())[:2] == ["m01", "m02"]
    with pytest.raises(ValueError, match="month 3 is in seasons 'a' and 'b'"):
        CompositeConfig(seasons={"a": (1, 2, 3), "b": (3, 4)})
    with pytest.raises(ValueError, match="outside"):
        CompositeConfig(quantiles=(10,))


def test_nan_nodata_for_float_and_not_for_int():
    ok = _minimal()
    ok["assets"]["B04"].update(dtype="float32", nodata=float("nan"))
    assert math.isnan(parse_source(ok).assets["B04"].nodata)  # type: ignore[arg-type]
    bad = _minimal()
    bad["assets"]["B04"]["nodata"] = float("nan")
    with pytest.raises(InputError, match="cannot be stored in dtype uint16"):
        parse_source(bad)
    assert isinstance(parse_source(_minimal()), SourceConfig)
