"""The main job as a user runs it: `geosdm demo run --preset small` end to end, services stopped after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import xarray as xr
import pytest

from geosdm.io import open_cube
from geosdm.pipeline import load_pipeline


#: Credentials a batch job's environment holds (fake values): none may reach an output, a log or the report.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEGEOSDM7Q2X", "AWS_SECRET_ACCESS_KEY": "fakeSecretGeosdm/k9Zq+Wv3",
    "AWS_SESSION_TOKEN": "FakeSessionTokenGeosdm8812", "AZURE_STORAGE_SAS_TOKEN": "sv=2024&sig=fakeSigGeosdm551",
    "GDAL_HTTP_BEARER": "fakeBearerGeosdm0741", "PC_SDK_SUBSCRIPTION_KEY": "fakePcKeyGeosdm3309",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON": "fakeGcsGeosdm6620",
}


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n[:8]}..." for n in needles if n.encode() in data]
    return hits


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    proc = subprocess.run(
        [sys.executable, "-m", "geosdm", "demo", "run", "--preset", "small", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **FAKE_CREDENTIALS},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    for expected in ["STAC API http://127.0.0.1:", "sentinel-2-l2a:", "items with eo:cloud_cover <= 60.0", "training table"]:
        assert expected in text, (expected, text[-2000:])
    cube = open_cube(str(out / "cube.zarr"))
    assert {"s2_ndvi_jja", "elevation", "slope", "bio01", "lc_3"} <= set(cube.data_vars)
    table = pd.read_parquet(out / "records" / "training.parquet")
    assert {"presence_only", "presence_absence", "count", "background"} == set(table["kind"])
    assert "fold" in table and table["fold"].nunique() == 5 and "bio01" in table
    assert (out / "model" / "config.json").exists() or any((out / "model").glob("*.json"))
    from geosdm.models import load_model
    from geosdm.records import CovariateSelection

    selection = CovariateSelection.load(out / "model")  # the demo pipeline drops collinear covariates first
    assert selection is not None and list(load_model(out / "model").feature_names_) == list(selection.selected)
    assert "collinearity filter: kept" in text and "bio10 ~" in (out / "report.html").read_text()
    probs = xr.open_zarr(out / "predictions" / "probability.zarr")
    assert probs.sizes["species"] >= 40 and probs["probability"].dims == ("species", "y", "x")
    assert list((out / "predictions" / "cogs").glob("*.tif"))
    unc = xr.open_zarr(out / "predictions" / "uncertainty.zarr")  # the interval model's layers (issue 19)
    assert unc.attrs["geosdm:intervals"] == "model" and {"mean", "sd", "q05", "q95"} <= set(unc.data_vars)
    both = unc["q95"].notnull() & unc["q05"].notnull()  # nodata cells (cloud gaps) are NaN in both
    assert bool(both.any()) and bool((unc["q95"] >= unc["q05"]).where(both, True).all())
    report = (out / "report.html").read_text()
    assert "Predicted presence probability" in report and report.count("data:image/png;base64,") >= 6
    assert "Pest regulation potential" in report and "Where the maps are unsure" in report
    assert "Where the regulation maps are unsure" in report
    assert "Evaluate" in report and "Explain" in report
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary and list((out / "evaluation").glob("reliability*.png"))
    assert (out / "model-calibrated").is_dir() and "calibration" in (out / "model-calibrated" / "config.json").read_text()
    assert xr.open_zarr(out / "explain" / "attribution.zarr").data_vars and (out / "explain" / "summary.json").exists()
    assert "ECE" in text or "ece" in text
    inter = xr.open_zarr(out / "interactions" / "interactions.zarr")
    assert {"joint", "joint_independent", "enemy_any", "pest_any"} <= set(inter.data_vars)
    assert list((out / "interactions" / "cogs").glob("joint*.tif"))
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before, "services must stop with the pipeline"
    # credentials from the environment appear in no output (stores, COGs, STAC, report, logs) and no console line
    secrets = list(FAKE_CREDENTIALS.values())
    assert not _files_holding(out, secrets)
    assert not [n for n in secrets if n in proc.stdout or n in proc.stderr]
    # a rerun resumes: the demo and the cube are reused, not rebuilt
    again = subprocess.run(
        [sys.executable, "-m", "geosdm", "demo", "run", "--preset", "small", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert again.returncode == 0 and "(4 resumed)" in " ".join(again.stdout.split())


def test_pipelines_validate() -> None:
    for name in ["demo", "demo-small"]:
        cfg = load_pipeline(name, env={"GEOSDM_DEMO_DIR": "/tmp/x"})
        assert cfg.cube is not None and cfg.cube.output.path == "/tmp/x/cube.zarr"
        assert cfg.records is not None and cfg.records.output.startswith("/tmp/x/")


def test_pipeline_rejects_unknown_keys(tmp_path: Path) -> None:
    from geosdm.errors import InputError

    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ncube_typo: {}\n")
    with pytest.raises(InputError, match="cube_typo"):
        load_pipeline(p)


@pytest.mark.slow
def test_demo_pipelines_interaction_sets_name_edges_of_their_demo(demo_small, tmp_path: Path) -> None:
    """Each demo pipeline's interaction sets must be edges of the network its preset generates (the default
    preset's network differs from the small one's; `make demo` runs the default)."""
    import warnings

    from geosdm.demo import generate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = generate(tmp_path / "default", preset="default", seed=0)
    for name, layout in (("demo", default), ("demo-small", demo_small)):
        cfg = load_pipeline(name, env={"GEOSDM_DEMO_DIR": str(layout.root)})
        edges = pd.read_csv(layout.edges_csv)
        labels = set(edges["source"] + "->" + edges["target"])
        for set_name, members in (cfg.interactions.sets or {}).items():
            assert set(members) <= labels, (name, set_name, sorted(set(members) - labels))
