"""geosdm.project: projections onto the small demo's scenario cubes (truth recovery, resume, errors, laziness)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.cube import build_cube
from geosdm.demo import DemoLayout
from geosdm.errors import GridError, InputError
from geosdm.scenarios import ScenarioCovariateWarning, ScenariosConfig
from tests.fixtures.demo import demo_cube_config

FUTURES = {
    "warm2": {"period": "2041-2060", "replace": [{"source": "demo-cmip6-bioclim", "parameters": {"ssp": "ssp245"}}]},
    "warm4": {"period": "2081-2100", "replace": [{"source": "demo-climate-projection", "parameters": {"ssp": "ssp585"},
                                                  "derive": "bioclim"}]},
}
COVARIATES = ["bio01", "bio12", "bio05", "bio06", "bio15", "lc_1", "lc_2", "lc_3", "lc_5"]


@pytest.fixture(scope="module")
def env(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Baseline cube + two scenario cubes of the small demo, a model fitted on the cube and its thresholds."""
    from geosdm.models import MultiSpeciesSDM
    from geosdm.predict import predict
    from geosdm.project import baseline_thresholds
    from geosdm.records import read_records, training_table
    from geosdm.scenarios import build_scenarios

    old = os.environ.get("GEOSDM_DEMO_DIR")
    os.environ["GEOSDM_DEMO_DIR"] = str(demo_small.root)
    root = tmp_path_factory.mktemp("project")
    base = str(root / "cube.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_cube(demo_cube_config(demo_small, base))
        cfg = ScenariosConfig.model_validate({"baseline": base, "output": str(root / "sc"), "futures": FUTURES})
        build_scenarios(cfg)
        recs = pd.concat([read_records(demo_small.presence_only_csv), read_records(demo_small.surveys_parquet)],
                         ignore_index=True)
        table = training_table(recs, base, n_background=1000, block_size=1500, seed=0, variables=COVARIATES,
                               max_missing=0.5).table
        model = MultiSpeciesSDM(loss="integrated", epochs=10, hidden=32, val_size=0, seed=0).fit(table)
        area = float(demo_small.region()["target_grid"]["resolution"]) ** 2
        thr = baseline_thresholds(predict(model, base, area=area).probability, table)
    yield {"root": root, "base": base, "cfg": cfg, "table": table, "model": model, "area": area, "thr": thr,
           "demo": demo_small}
    if old is None:
        os.environ.pop("GEOSDM_DEMO_DIR", None)
    else:
        os.environ["GEOSDM_DEMO_DIR"] = old


def _project(env: dict[str, Any], **kw: Any) -> xr.Dataset:
    from geosdm.explain import reference_from
    from geosdm.project import project

    t = env["table"]
    ref = reference_from(t[t.kind != "background"], list(env["model"].feature_names_), model=env["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return project(env["model"], env["base"], env["cfg"], **{"area": env["area"], "thresholds": env["thr"],
                                                                 "reference": ref, **kw})


def test_projection_is_lazy_one_task_per_tile(env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import dask.array as da

    import geosdm.project.lazy as lazy

    real, calls = lazy._tile, []

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw["window"])
        return real(*a, **kw)

    monkeypatch.setattr(lazy, "_tile", counting)
    proj = _project(env)
    assert calls == []  # nothing computed
    assert list(proj["scenario"].values) == ["baseline", "warm2", "warm4"]
    assert proj["probability"].dims == ("scenario", "species", "y", "x")
    for v in ("probability", "change", "change_class", "richness", "richness_change", "mess", "most_dissimilar"):
        assert isinstance(proj[v].data, da.Array), v
    assert proj["probability"].data.chunks[2:] == ((32, 32, 32, 4), (32, 32, 32, 4))
    one = proj[["probability", "change", "mess"]].isel(y=slice(0, 10), x=slice(0, 10)).compute()
    assert len(calls) == 1  # every layer of a tile comes from one task
    np.testing.assert_allclose(one.change.sel(scenario="baseline"), 0.0)
    p = one.probability.values
    np.testing.assert_allclose(one.change.values, p - p[:1], atol=1 / 250 + 1e-6)  # steps of the stored maps


def test_truth_recovery_sign_of_change(env) -> None:  # type: ignore[no-untyped-def]
    """For the species whose true probability changes most under warm2, the predicted change has the true sign
    in most cells where the truth changes clearly."""
    demo = env["demo"]
    proj = _project(env).sel(scenario="warm2").compute()
    truth = xr.open_zarr(demo.scenarios_truth_zarr)["probability"].sel(scenario="warm2").load()
    base = xr.open_zarr(demo.truth_zarr)["probability"].load()
    true_change = (truth - base).values
    species = [str(s) for s in base["species"].values]
    strongest = int(np.argmax(np.abs(true_change).mean(axis=(1, 2))))
    sp = species[strongest]
    pred = proj["change"].sel(species=sp).values
    clear = (np.abs(true_change[strongest]) > 0.05) & np.isfinite(pred)
    assert clear.sum() > 1000
    agree = np.mean(np.sign(pred[clear]) == np.sign(true_change[strongest][clear]))
    assert agree >= 0.8, (sp, agree)
    # classes follow the thresholds: gained cells were below the threshold at the baseline and are above it now
    cls, p = proj["change_class"].sel(species=sp).values, proj["probability"].sel(species=sp).values
    thr = float(env["thr"][sp])
    assert np.all(p[cls == 2] >= thr) and np.all(p[cls == 3] < thr)


def test_clamping_holds_covariates_at_the_training_range(env) -> None:  # type: ignore[no-untyped-def]
    """Clamped (``clamp=True``, with a reference): equal to a plain prediction of the clipped covariates, equal to the
    unclamped projection wherever MESS >= 0 (inside the range nothing is clipped); clamp=True needs a reference."""
    from geosdm.explain import reference_from
    from geosdm.predict import predict
    from geosdm.scenarios import open_scenario

    clamped = _project(env, clamp=True).compute()
    raw = _project(env).compute()  # the default: no clamping
    assert sorted(clamped.attrs["geosdm:clamped"]) == sorted(COVARIATES) and raw.attrs["geosdm:clamped"] == []
    t = env["table"]
    ref = reference_from(t[t.kind != "background"], COVARIATES, model=env["model"])
    sc = open_scenario(env["base"], env["cfg"].path("warm2"))
    clipped = sc.assign({v: sc[v].clip(ref.numeric[v][0], ref.numeric[v][-1]) for v in COVARIATES})
    want = predict(env["model"], clipped, area=env["area"]).probability.values
    np.testing.assert_allclose(clamped.probability.sel(scenario="warm2").values, want, atol=1e-5)
    inside = (clamped.mess.sel(scenario="warm2").values >= 0)[None]
    outside = (clamped.mess.sel(scenario="warm2").values < 0)[None]
    a, b = (d.probability.sel(scenario="warm2").values for d in (clamped, raw))
    assert inside.sum() > 0 and outside.sum() > 0  # warm2 leaves the training range in part of the region
    np.testing.assert_allclose(np.where(inside, a, 0), np.where(inside, b, 0), atol=1e-6)
    assert np.abs(np.where(outside, a - b, 0)).max() > 1e-3  # and there clamping changes the map
    np.testing.assert_array_equal(clamped.mess.values, raw.mess.values)  # MESS is of the unclamped covariates
    with pytest.raises(InputError, match="clamp=True needs"):
        _project(env, reference=None, clamp=True)


def test_interrupted_projection_resumes_to_identical_bytes(env, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import geosdm.project.lazy as lazy
    from geosdm.project import write_projection

    ref_dir, out = tmp_path / "ref", tmp_path / "resumed"
    write_projection(_project(env), str(ref_dir))
    real, calls = lazy._tile, []

    def dies_after_five(*a, **kw):  # type: ignore[no-untyped-def]
        if len(calls) >= 5:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(lazy, "_tile", dies_after_five)
    import dask

    with pytest.raises(KeyboardInterrupt), dask.config.set(scheduler="synchronous"):  # killed after five tiles
        write_projection(_project(env), str(out))
    monkeypatch.setattr(lazy, "_tile", real)
    done = {s: len(list((out / f"{s}.zarr.progress").glob("tile_*.json"))) for s in ("baseline", "warm2", "warm4")}
    assert 0 < min(done.values()) and max(done.values()) < 16
    reports = write_projection(_project(env), str(out))
    assert all(r.n_resumed == done[s] for s, r in reports.items())
    for s in ("baseline", "warm2", "warm4"):
        chunks = sorted(p.relative_to(ref_dir) for p in (ref_dir / f"{s}.zarr").rglob("*")
                        if p.is_file() and "/c/" in p.as_posix())
        assert chunks
        for rel in chunks:
            assert (out / rel).read_bytes() == (ref_dir / rel).read_bytes(), rel
    with pytest.raises(InputError, match="fingerprint|different|another"):  # another model's output is refused
        write_projection(_project(env, area=env["area"] * 2), str(out))


def test_scenario_errors_surface_through_the_projection(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="no scenario named 'warm9'"):
        _project(env, names=["warm9"])
    other = str(tmp_path / "other.zarr")
    bbox = env["demo"].region()["target_grid"]["bbox"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_cube(demo_cube_config(env["demo"], other, bbox=[bbox[0], bbox[1], bbox[2] - 1920, bbox[3]]))
    from geosdm.project import project

    with pytest.raises(GridError, match="must be built onto its baseline's grid"):
        project(env["model"], other, env["cfg"], area=env["area"])


def test_scenario_replacing_unused_covariates_warns(env) -> None:  # type: ignore[no-untyped-def]
    from geosdm.project import project

    with pytest.warns(ScenarioCovariateWarning, match=r"'warm2' replaces \['bio02'"):
        project(env["model"], env["base"], env["cfg"], names=["warm2"], area=env["area"])


def test_run_projection_writes_stores_ranges_cogs_and_stac(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from geosdm.project import ProjectConfig, open_projection, run_projection

    table = tmp_path / "table.parquet"
    env["table"].to_parquet(table)
    cfg = ProjectConfig(baseline=env["base"], output=str(tmp_path / "proj"), area=env["area"], table=str(table),
                        names=("warm2",), cog_variables=("change",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_projection(cfg, model=env["model"], scenarios=env["cfg"])
    assert set(report.stores) == {"baseline", "warm2"}
    ds = open_projection(cfg.output)
    assert list(ds["scenario"].values) == ["baseline", "warm2"]
    assert {"probability", "change", "change_class", "mess", "most_dissimilar", "richness"} <= set(ds.data_vars)
    ranges = pd.read_csv(tmp_path / "proj" / "ranges.csv")
    assert {"range_km2", "range_change_pct", "centroid_shift_m", "shift_bearing_deg"} <= set(ranges.columns)
    assert (ranges.loc[ranges.scenario == "baseline", "centroid_shift_m"] == 0).all()
    assert (tmp_path / "proj" / "cogs" / "warm2" / "change.tif").is_file()
    item = json.loads((tmp_path / "proj" / "stac" / "geosdm-projections-warm2" /
                       "geosdm-projections-warm2.json").read_text())
    assert item["properties"]["geosdm:scenario"] == "warm2"
    assert item["properties"]["geosdm:scenario_period"] == "2041-2060"
    assert item["properties"]["start_datetime"].startswith("2041-01-01")


def test_pipeline_project_step_and_report(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """predict -> interactions -> project -> report on the small demo's cube: the step takes its model, area,
    table, network and associations from the other steps, and the report shows the change maps."""
    from geosdm.pipeline import PipelineConfig, run_pipeline

    demo = env["demo"]
    model_dir = tmp_path / "model"
    env["model"].save(model_dir)
    table = tmp_path / "table.parquet"
    env["table"].to_parquet(table)
    out = tmp_path / "run"
    cfg = PipelineConfig.model_validate({
        "name": "project-test",
        "scenarios": {"baseline": env["base"], "output": str(env["root"] / "sc"), "futures": FUTURES},
        "predict": {"model": str(model_dir), "cube": env["base"], "output": str(out / "predictions"),
                    "area": env["area"], "cogs": False, "stac": False},
        "interactions": {"predictions": str(out / "predictions" / "probability.zarr"), "edges": str(demo.edges_csv),
                         "nodes": str(demo.nodes_csv), "surveys": [str(demo.surveys_parquet)],
                         "output": str(out / "interactions"), "cogs": False, "stac": False, "uncertainty": False},
        "project": {"output": str(out / "projections"), "table": str(table), "names": ["warm4"],
                    "cog_variables": ["change"]},
        "report": {"output": str(out / "report.html"), "n_maps": 2, "odmap": False},
    })
    events: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_pipeline(cfg, steps=("predict", "interactions", "project", "report"),
                           on_event=lambda step, msg, data: events.append(f"[{step}] {msg}"))
    rep = res.outputs["project"]
    assert set(rep.stores) == {"baseline", "warm4"}
    from geosdm.project import open_projection

    ds = open_projection(str(out / "projections"))
    assert {"enemy_any", "enemy_any_change", "pest_any", "pest_any_change", "spread"} - set(ds.data_vars) == {"spread"}
    assert any(e.startswith("[project]") and "mean range change" in e for e in events)
    html = (out / "report.html").read_text()
    assert "Projections: where the species go" in html and "Range gain and loss" in html
    assert "pest regulation change" in html
