"""geosdm.scenarios: CMIP6 source definitions, scenario configs, scenario cubes on the small demo, resume, truth."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from geosdm.cube import build_cube
from geosdm.demo import DemoLayout, TrueModel
from geosdm.errors import GridError, InputError, MissingVariableError
from geosdm.io import open_cube
from geosdm.scenarios import (
    ScenarioConfig,
    ScenarioCovariateWarning,
    ScenariosConfig,
    build_scenario,
    check_model_scenario,
    open_scenario,
)
from geosdm.sources import load_source
from tests.fixtures.demo import demo_cube_config

BIO = [f"bio{i:02d}" for i in range(1, 20)]
FUTURES = {
    "warm2": {"period": "2041-2060", "replace": [{"source": "demo-cmip6-bioclim", "parameters": {"ssp": "ssp245"}}]},
    "warm4": {"period": "2081-2100", "replace": [{"source": "demo-climate-projection", "parameters": {"ssp": "ssp585"},
                                                  "derive": "bioclim"}]},
    "warm2_landuse": {"period": "2041-2060", "replace": [
        {"source": "demo-cmip6-bioclim", "parameters": {"ssp": "ssp245"}, "variables": ["bio*"]},
        {"source": "demo-landcover-scenario", "working_resolution": 20, "variables": ["lc_*"]}]},
}


# ------------------------------------------------------------------------------------ CMIP6 source definitions


def test_worldclim_cmip6_urls_and_bands() -> None:
    src = load_source("worldclim-cmip6-bioclim", parameters={"gcm": "ACCESS-CM2", "ssp": "ssp126", "period": "2081-2100"})
    assert list(src.data_assets) == BIO
    a = src.assets["bio12"]
    assert a.href == ("https://geodata.ucdavis.edu/cmip6/30s/ACCESS-CM2/ssp126/"
                      "wc2.1_30s_bioc_ACCESS-CM2_ssp126_2081-2100.tif")
    assert {src.assets[b].href for b in BIO} == {a.href}  # one 19-band file
    assert [src.assets[b].band for b in BIO] == list(range(1, 20))  # band k is bio k
    assert src.assets["bio01"].units == "degC" and src.assets["bio12"].units == "mm"
    assert (src.assets["bio01"].scale, src.assets["bio01"].offset) == (1.0, 0.0)  # unscaled float32
    assert src.parameter_values == {"gcm": "ACCESS-CM2", "ssp": "ssp126", "period": "2081-2100", "resolution": "30s"}
    coarse = load_source("worldclim-cmip6-bioclim", parameters={"resolution": "10m", "ssp": "ssp585"})
    assert coarse.assets["bio01"].href.endswith("/cmip6/10m/MPI-ESM1-2-HR/ssp585/"
                                                "wc2.1_10m_bioc_MPI-ESM1-2-HR_ssp585_2041-2060.tif")
    assert "ACCESS-CM2, ssp126, 2081-2100" in src.title


def test_chelsa_cmip6_urls_scale_and_offset() -> None:
    src = load_source("chelsa-cmip6-bioclim", parameters={"gcm": "GFDL-ESM4", "ssp": "ssp370", "period": "2071-2100"})
    assert list(src.data_assets) == BIO
    assert src.assets["bio01"].href == (
        "https://os.zhdk.cloud.switch.ch/chelsav2/GLOBAL/climatologies/2071-2100/GFDL-ESM4/ssp370/bio/"
        "CHELSA_bio1_2071-2100_gfdl-esm4_ssp370_V.2.1.tif")  # GCM upper case in the folder, lower in the name
    assert src.assets["bio19"].href.endswith("/bio/CHELSA_bio19_2071-2100_gfdl-esm4_ssp370_V.2.1.tif")
    for b in ("bio01", "bio05", "bio06", "bio08", "bio09", "bio10", "bio11"):  # K/10 -> degC
        assert (src.assets[b].scale, src.assets[b].offset, src.assets[b].units) == (0.1, -273.15, "degC"), b
    for b in ("bio02", "bio07", "bio12", "bio13", "bio19"):  # ranges and precipitation: x10, no offset
        assert (src.assets[b].scale, src.assets[b].offset) == (0.1, 0.0), b
    # the scale/offset give degC from the stored K/10 integers: 2881 -> 15.0 degC
    assert 2881 * src.assets["bio01"].scale + src.assets["bio01"].offset == pytest.approx(14.95)
    # same variables, units and scaling as the 1981-2010 baseline definition
    base = load_source("chelsa-bioclim")
    for b in BIO:
        assert (src.assets[b].scale, src.assets[b].offset, src.assets[b].units) == \
               (base.assets[b].scale, base.assets[b].offset, base.assets[b].units), b


def test_source_parameters_are_checked() -> None:
    with pytest.raises(InputError, match=r"'period' = '2041-2060' is not one of \['2011-2040', '2041-2070'"):
        load_source("chelsa-cmip6-bioclim", parameters={"period": "2041-2060"})
    with pytest.raises(InputError, match="'gcm' = 'CESM2' is not one of"):
        load_source("worldclim-cmip6-bioclim", parameters={"gcm": "CESM2"})
    with pytest.raises(InputError, match=r"unknown parameters \['scenario'\]; this source takes"):
        load_source("worldclim-cmip6-bioclim", parameters={"scenario": "ssp245"})
    with pytest.raises(InputError, match="declares no `parameters:`"):
        load_source("worldclim-bioclim", parameters={"gcm": "x"})


def test_template_without_parameter_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({
        "kind": "raster", "parameters": {"ssp": {"values": ["ssp126"], "default": "ssp126"}},
        "assets": {"bio01": {"long_name": "t", "dtype": "float32", "href": "x_{ssp}_{gcm}.tif"}}}))
    with pytest.raises(InputError, match=r"template \{gcm\}, which is not a declared parameter"):
        load_source(p)


# ------------------------------------------------------------------------------------ scenario configuration


def test_period_validation() -> None:
    src = [{"source": "demo-cmip6-bioclim"}]
    assert ScenarioConfig.model_validate({"period": "2041-2060", "replace": src}).period == "2041-2060"
    for bad, msg in (("2050", "not a year range"), ("2070-2041", "ends before it starts"),
                     ("1700-1750", "outside 1850-2300"), ("2041/2060", "not a year range")):
        with pytest.raises(ValueError, match=msg):
            ScenarioConfig.model_validate({"period": bad, "replace": src})
    with pytest.raises(ValueError, match="names"):
        ScenariosConfig.model_validate({"output": "o", "futures": {"a b": {"period": "2041-2060", "replace": src}}})


def test_demo_pipelines_declare_scenarios() -> None:
    from geosdm.pipeline import STEPS, load_pipeline

    assert STEPS.index("cube") < STEPS.index("scenarios") < STEPS.index("records")
    for name in ("demo", "demo-small"):
        cfg = load_pipeline(name, env={"GEOSDM_DEMO_DIR": "/d"})
        assert cfg.scenarios is not None and list(cfg.scenarios.futures) == ["warm2", "warm4", "warm2_landuse"]
        assert cfg.scenarios.path("warm4") == "/d/scenario-cubes/warm4.zarr"
        assert cfg.scenarios.futures["warm4"].replace[0].derive == "bioclim"


# ------------------------------------------------------------------------------------ scenario cubes (small demo)


@pytest.fixture(scope="module")
def demo_env(demo_small: DemoLayout):  # type: ignore[no-untyped-def]
    """The demo scenario catalogs find their files through GEOSDM_DEMO_DIR."""
    old = os.environ.get("GEOSDM_DEMO_DIR")
    os.environ["GEOSDM_DEMO_DIR"] = str(demo_small.root)
    yield demo_small
    if old is None:
        os.environ.pop("GEOSDM_DEMO_DIR", None)
    else:
        os.environ["GEOSDM_DEMO_DIR"] = old


@pytest.fixture(scope="module")
def built(demo_env: DemoLayout, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from geosdm.scenarios import build_scenarios

    root = tmp_path_factory.mktemp("scenarios")
    base = str(root / "cube.zarr")
    build_cube(demo_cube_config(demo_env, base))
    cfg = ScenariosConfig.model_validate({"baseline": base, "output": str(root / "out"), "futures": FUTURES})
    reports = build_scenarios(cfg)
    return base, cfg, reports


def test_scenario_stores_hold_only_replaced_covariates(built, demo_env: DemoLayout) -> None:  # type: ignore[no-untyped-def]
    base, cfg, reports = built
    assert reports["warm2"].variables == BIO and reports["warm4"].variables == BIO
    lc = [f"lc_{k}" for k in range(1, 13)]
    assert reports["warm2_landuse"].variables == BIO + lc
    assert reports["warm2_landuse"].sources == {"demo-cmip6-bioclim": BIO, "demo-landcover-scenario": lc}
    baseline = open_cube(base).load()
    truth = xr.open_zarr(demo_env.scenarios_truth_zarr).load()
    for name, rep in reports.items():
        store = open_cube(cfg.path(name))
        assert sorted(store.data_vars) == sorted(rep.variables)  # nothing else copied
        info = store.attrs["geosdm:scenario"]
        assert info["name"] == name and info["period"] == FUTURES[name]["period"] and info["baseline"] == base
        ds = open_scenario(base, cfg.path(name))
        assert ds[rep.variables[0]].chunks == baseline.chunk({"y": 32, "x": 32})[rep.variables[0]].chunks
        ds = ds.load()
        assert sorted(ds.data_vars) == sorted(baseline.data_vars)
        for v in baseline.data_vars:
            if v in rep.variables:
                assert ds[v].attrs["scenario"] == name
                # the scenario's covariates are the true future ones (same warps as the demo's truth)
                t = truth[v].sel(scenario=name).values
                err = np.abs(ds[v].values - t)
                assert np.nanmax(err) <= 1e-3 * max(1.0, float(np.nanstd(t))), (name, v)
            else:  # unchanged covariates are the baseline's, bit for bit
                np.testing.assert_array_equal(ds[v].values, baseline[v].values, err_msg=f"{name} {v}")
    w2 = open_scenario(base, cfg.path("warm2")).load()
    assert float((w2.bio01 - baseline.bio01).mean()) == pytest.approx(2.0, abs=0.25)
    assert float((w2.bio12 / baseline.bio12).mean()) < 1.0  # drier overall


def test_unknown_variable_and_bad_period_for_source(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = built[0]
    sc = ScenarioConfig.model_validate({"period": "2041-2060", "replace": [
        {"source": "demo-cmip6-bioclim", "parameters": {"ssp": "ssp245"}, "variables": ["bio01", "bio20"]}]})
    with pytest.raises(MissingVariableError, match=r"replaces \['bio20'\], which the baseline .* does not have"):
        build_scenario("x", sc, baseline=base, output=str(tmp_path / "x.zarr"))
    sc = ScenarioConfig.model_validate({"period": "2041-2060", "replace": [
        {"source": "demo-cmip6-bioclim", "parameters": {"ssp": "ssp245"}, "variables": ["slope"]}]})
    with pytest.raises(MissingVariableError, match="does not have"):
        build_scenario("x", sc, baseline=base, output=str(tmp_path / "x.zarr"))
    sc = ScenarioConfig.model_validate({"period": "2041-2070", "replace": [{"source": "demo-cmip6-bioclim"}]})
    with pytest.raises(InputError, match=r"scenario 'x', input 'demo-cmip6-bioclim'.*'2041-2070' is not one of"):
        build_scenario("x", sc, baseline=base, output=str(tmp_path / "x.zarr"))


def test_grid_mismatch_is_refused(built, demo_env: DemoLayout, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, cfg, _ = built
    bbox = demo_env.region()["target_grid"]["bbox"]
    other = str(tmp_path / "other.zarr")
    build_cube(demo_cube_config(demo_env, other, bbox=[bbox[0], bbox[1], bbox[2] - 1920, bbox[3]]))
    with pytest.raises(GridError, match="must be built onto its baseline's grid"):
        open_scenario(other, cfg.path("warm2"))
    far = ScenarioConfig.model_validate({"period": "2041-2060", "replace": [{"source": {
        "name": "elsewhere", "kind": "raster", "crs": "EPSG:4326",
        "assets": {"bio01": {"long_name": "t", "dtype": "float32", "units": "degC",
                             "href": str(_far_raster(tmp_path))}}}}]})
    with pytest.raises(GridError):
        build_scenario("far", far, baseline=base, output=str(tmp_path / "far.zarr"))


def _far_raster(tmp_path: Path) -> Path:
    from odc.geo.geobox import GeoBox

    from geosdm.demo._stac import write_cog

    gbox = GeoBox.from_bbox((100.0, 10.0, 101.0, 11.0), "EPSG:4326", shape=(64, 64))
    return write_cog(tmp_path / "far.tif", np.full((64, 64), 10.0, np.float32), gbox, nodata=-9999.0)


def test_kelvin_and_unscaled_values_are_refused(built, demo_env: DemoLayout, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A CHELSA-like source read without its offset gives bio01 in Kelvin: refused, naming the fix."""
    base = built[0]
    src = load_source("demo-cmip6-bioclim", parameters={"ssp": "ssp245"}).model_dump(mode="json")
    src = {k: v for k, v in src.items() if k not in ("parameters", "parameter_values")}
    kelvin = {**src, "name": "chelsa-like", "assets": {"bio01": {**src["assets"]["bio01"], "offset": 273.15}}}
    sc = ScenarioConfig.model_validate({"period": "2041-2060", "replace": [{"source": kelvin}]})
    with pytest.raises(InputError, match=r"bio01 from source 'chelsa-like' is \+27\d\.\d degC off .*Kelvin.*offset"):
        build_scenario("k", sc, baseline=base, output=str(tmp_path / "k.zarr"))
    declared = {**src, "name": "k-units", "assets": {"bio01": {**src["assets"]["bio01"], "units": "K"}}}
    sc = ScenarioConfig.model_validate({"period": "2041-2060", "replace": [{"source": declared}]})
    with pytest.raises(InputError, match="is in Kelvin, the baseline's in degC"):
        build_scenario("k", sc, baseline=base, output=str(tmp_path / "k2.zarr"))
    tenfold = {**src, "name": "x10", "assets": {"bio12": {**src["assets"]["bio12"], "scale": 10.0}}}
    sc = ScenarioConfig.model_validate({"period": "2041-2060", "replace": [{"source": tenfold}]})
    with pytest.raises(InputError, match=r"bio12 from source 'x10' is 9\.\d+ x the baseline's.*scale"):
        build_scenario("t", sc, baseline=base, output=str(tmp_path / "t.zarr"))


def test_interrupted_scenario_build_resumes(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import geosdm.scenarios._build as b

    base, cfg, _ = built
    sc = cfg.futures["warm2_landuse"]
    out = str(tmp_path / "resumed.zarr")
    real, calls = b._run_tile, []

    def dies_after_five(tile, *args, **kw):  # type: ignore[no-untyped-def]
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        calls.append(tile.index)
        return real(tile, *args, **kw)

    monkeypatch.setattr(b, "_run_tile", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_scenario("warm2_landuse", sc, baseline=base, output=out, threads=1)
    monkeypatch.setattr(b, "_run_tile", real)
    assert len(list(Path(out + ".progress").glob("tile_*.json"))) == 5
    report = build_scenario("warm2_landuse", sc, baseline=base, output=out, threads=1)
    assert report.n_skipped == 5 and report.n_tiles == 16
    resumed, ref = open_cube(out).load(), open_cube(cfg.path("warm2_landuse")).load()
    for v in ref.data_vars:
        np.testing.assert_array_equal(resumed[v].values, ref[v].values, err_msg=v)
    other = sc.model_copy(update={"period": "2041-2060", "description": "x",
                                  "replace": sc.replace[:1]})
    with pytest.raises(InputError, match="different configuration"):
        build_scenario("warm2_landuse", other, baseline=base, output=out)


def test_cli_builds_one_scenario(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from geosdm.cli import app

    base = built[0]
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"scenarios": {"baseline": base, "output": str(tmp_path / "sc"), "futures": FUTURES}}))
    res = CliRunner().invoke(app, ["scenario", "build", str(f), "--name", "warm2"])
    assert res.exit_code == 0, res.output
    assert "warm2 (2041-2060)" in res.output and (tmp_path / "sc" / "warm2.zarr").is_dir()
    assert not (tmp_path / "sc" / "warm4.zarr").exists()


def test_model_meeting_a_scenario_warns_for_unused_covariates(built) -> None:  # type: ignore[no-untyped-def]
    base, cfg, _ = built
    ds = open_scenario(base, cfg.path("warm2_landuse"))

    class Model:
        feature_names_ = ["bio01", "bio12", "lc_3", "elevation"]

    with pytest.warns(ScenarioCovariateWarning, match=r"'warm2_landuse' replaces \['bio02'.*only \['bio01', 'bio12', 'lc_3'\]"):
        ignored = check_model_scenario(Model(), ds)
    assert "bio05" in ignored and "bio01" not in ignored
    with pytest.warns(ScenarioCovariateWarning, match="projection equals the baseline prediction"):
        check_model_scenario(["elevation"], ["bio01"], name="w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_model_scenario(["bio01", "bio12"], ["bio01"]) == []


# ------------------------------------------------------------------------------------ the demo's future truth


def test_demo_future_truth_is_consistent(demo_small: DemoLayout) -> None:
    truth = xr.open_zarr(demo_small.scenarios_truth_zarr).load()
    base = xr.open_zarr(demo_small.truth_zarr).load()
    assert list(truth.scenario.values) == ["warm2", "warm4", "warm2_landuse"]
    assert list(truth.species.values) == list(base.species.values)
    model = TrueModel.from_layout(demo_small)
    summary = json.loads(demo_small.scenarios_json.read_text())
    for name in truth.scenario.values:
        t = truth.sel(scenario=name)
        cells = {v: t[v].values.ravel() for v in model.feature_names_}
        expected = model.predict_proba(cells).T.reshape(t.probability.shape)
        np.testing.assert_allclose(t.probability.values, expected, atol=1e-6, err_msg=str(name))
        assert float((t.bio01 - base.bio01).mean()) == pytest.approx(summary[name]["mean_bio01_change"], abs=1e-4)
        np.testing.assert_array_equal(t.elevation.values, base.elevation.values)  # terrain is not projected
        # joints follow the biotic dependence as the baseline truth's do: P(consumer) >= joint of each edge
        src = [list(t.species.values).index(s) for s in t.edge_source.values]
        tgt = [list(t.species.values).index(s) for s in t.edge_target.values]
        assert np.all(t.joint.values <= t.probability.values[src] + 1e-6)
        assert np.all(t.joint.values <= t.probability.values[tgt] + 1e-6)
    assert 1.5 < summary["warm2"]["mean_bio01_change"] < 2.5 < 3.5 < summary["warm4"]["mean_bio01_change"] < 4.5
    np.testing.assert_array_equal(truth.lc_3.sel(scenario="warm2").values, base.lc_3.values)
    assert float(truth.lc_3.sel(scenario="warm2_landuse").mean()) > float(base.lc_3.mean())  # more arable land
    assert "lc_3" in summary["warm2_landuse"]["changed"] and "lc_3" not in summary["warm2"]["changed"]
    changed = np.abs(truth.probability.sel(scenario="warm4") - base.probability).mean(("y", "x"))
    assert float(changed.max()) > 0.02  # the futures move the species


def test_demo_futures_are_reproducible(demo_small: DemoLayout, tmp_path: Path) -> None:
    from geosdm.demo import generate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = generate(tmp_path / "again", preset="small", seed=0)
    a, b = xr.open_zarr(demo_small.scenarios_truth_zarr).load(), xr.open_zarr(again.scenarios_truth_zarr).load()
    xr.testing.assert_identical(a, b)
    files = sorted(p.relative_to(demo_small.scenarios) for p in demo_small.scenarios.rglob("*") if p.is_file())
    assert len(files) == 3
    for f in files:
        if f.suffix == ".tif":
            assert (demo_small.scenarios / f).read_bytes() == (again.scenarios / f).read_bytes(), f
        else:
            xr.testing.assert_identical(xr.open_dataset(demo_small.scenarios / f), xr.open_dataset(again.scenarios / f))
    assert demo_small.scenarios_json.read_text() == again.scenarios_json.read_text()
