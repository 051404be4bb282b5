"""geosdm plan: the country-scale pipeline validates and plans without data; calibration prices real tiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geosdm.errors import InputError
from geosdm.pipeline import load_pipeline
from geosdm.planning import plan

ROOT = Path(__file__).resolve().parent.parent


def test_france_pipeline_validates_and_plans_without_data() -> None:
    config = load_pipeline(ROOT / "pipelines" / "france.yaml")
    assert config.cube is not None and config.predict is not None
    assert config.predict.output.startswith("s3://")
    p = plan(config)
    cube, predict = p.step("cube"), p.step("predict")
    # metropolitan France in Lambert-93 at 10 m: ~114,400 x 106,500 cells, 1024 x 1024 tiles
    assert 1.1e10 < cube.cells < 1.3e10 and cube.grid.endswith("EPSG:2154")
    assert cube.tiles == predict.tiles == -(-106_500 // 1024) * -(-114_400 // 1024)
    assert predict.layers == 300  # the pipeline's plan hint
    assert predict.bytes_written >= predict.cells * 300  # uint8 layers (+ COGs)
    assert cube.dask_tasks < 100_000 and predict.dask_tasks < 100_000  # every submitted graph stays bounded
    assert cube.requests_put == cube.objects_written and cube.requests_get > cube.tiles
    assert any("sentinel-2" in a for a in cube.assumptions)
    assert cube.projected_hours(16) is None  # no calibration, no time


def test_plan_cli_writes_table_and_json(tmp_path: Path) -> None:
    from geosdm.cli import app

    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["plan", str(ROOT / "pipelines" / "france.yaml"), "--species", "10",
                                   "--workers", "1,8", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "tiles" in res.output and "predict" in res.output
    data = json.loads(out.read_text())
    assert data["workers"] == [1, 8]
    assert [s["step"] for s in data["steps"]] == ["cube", "predict"]
    assert data["steps"][1]["layers"] == 10


def test_plan_needs_species_before_a_model_exists(tmp_path: Path) -> None:
    text = (ROOT / "pipelines" / "france.yaml").read_text().split("\nplan:")[0]
    path = tmp_path / "no-hint.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match="--species"):
        plan(path)


@pytest.mark.slow
def test_calibration_projects_wall_time(tmp_path: Path) -> None:
    p = plan(ROOT / "pipelines" / "demo-small.yaml", calibrate=1, workdir=tmp_path)
    for step in p.steps:
        assert step.seconds_per_unit and step.seconds_per_unit > 0 and step.calibration
        one, many = step.projected_hours(1), step.projected_hours(4)
        assert one is not None and many is not None and many <= one
