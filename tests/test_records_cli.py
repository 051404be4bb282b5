"""`geosdm records ...` commands over files (the sub-app, as the lead registers it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from geosdm.cli import app as geosdm_app
from geosdm.cli._records import app
from geosdm.records import write_records
from tests.fixtures.records import RecordsCube

runner = CliRunner()


def test_validate_grid_extract_background_patches_folds(
    records_cube: RecordsCube, records_table: pd.DataFrame, tmp_path: Path
) -> None:
    src = write_records(records_table, tmp_path / "recs.parquet")
    cube = str(records_cube.path)

    res = runner.invoke(app, ["validate", str(src), "--cube", cube, "--out", str(tmp_path / "valid.parquet")])
    assert res.exit_code == 0, res.output
    assert "50 of 50 records valid" in res.output

    res = runner.invoke(app, ["grid", str(tmp_path / "valid.parquet"), "--cube", cube, "-o", str(tmp_path / "c.csv")])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "c.csv")["n_records"].sum() == 50

    out = tmp_path / "table.parquet"
    res = runner.invoke(app, ["extract", str(src), "--cube", cube, "-o", str(out), "--variables", "elevation,lc_1"])
    assert res.exit_code == 0, res.output
    assert {"elevation", "lc_1"} <= set(pd.read_parquet(out).columns)

    res = runner.invoke(
        app, ["background", "--cube", cube, "-n", "100", "-o", str(tmp_path / "bg.parquet"), "--seed", "1"]
    )
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "bg.parquet")) == 100

    res = runner.invoke(app, ["patches", str(src), "--cube", cube, "-o", str(tmp_path / "p.zarr"), "--size", "3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.zarr" / "zarr.json").is_file()

    res = runner.invoke(
        app,
        [
            "folds",
            str(out),
            "-o",
            str(tmp_path / "f.parquet"),
            "--block-size",
            "1000",
            "--n-splits",
            "3",
            "--cube",
            cube,
            "--seed",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert set(pd.read_parquet(tmp_path / "f.parquet")["fold"]) == {0, 1, 2}


def test_cli_reports_errors_cleanly(records_table: pd.DataFrame, tmp_path: Path) -> None:
    bad = records_table.copy()
    bad.loc[0, "x"] = np.nan
    src = write_records(bad, tmp_path / "bad.parquet")
    res = runner.invoke(geosdm_app, ["records", "validate", str(src), "--strict"])
    assert res.exit_code == 1 and "invalid_coordinates" in res.output
    csv = tmp_path / "noproj.csv"
    csv.write_text("species,x,y\na,1,2\n")
    res = runner.invoke(geosdm_app, ["records", "validate", str(csv)])
    assert res.exit_code == 1 and "error: InputError: " in res.output and "no CRS" in res.output
    assert "Traceback" not in res.output
