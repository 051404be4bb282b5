"""Swapped longitude/latitude that stay inside the valid ranges: found against the region, or flagged as suspect.

France's (46, 3) for (3, 46) is a valid lon/lat pair, so only a region tells it apart: the cube's grid
(``--cube``), the study area's lon/lat box (``bounds=`` / ``--bbox``, e.g. a pipeline's ``grid.bbox``) or,
without either, the bulk of the file's own records (a minority of swapped rows is counted as suspect).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from geosdm.cli import app
from geosdm.errors import InputError
from geosdm.records import read_records, validate_records

FRANCE = (-5.2, 41.3, 9.6, 51.1)


def _csv(tmp_path: Path, n_swapped: int, n: int = 40) -> Path:
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(-1.0, 7.5, n), rng.uniform(43.0, 50.0, n)
    lon[:n_swapped], lat[:n_swapped] = lat[:n_swapped].copy(), lon[:n_swapped].copy()
    f = tmp_path / "obs.csv"
    pd.DataFrame({"species": "Salix alba", "decimalLongitude": lon, "decimalLatitude": lat}).to_csv(f, index=False)
    return f


def test_a_few_swapped_rows_are_flagged_without_a_region(tmp_path: Path) -> None:
    valid, report = validate_records(read_records(_csv(tmp_path, 3)))
    assert len(valid) == 40 and report.n_dropped == 0  # kept: no region to prove it
    assert report.suspect == {"swapped_lat_lon": 3} and report.suspect_index["swapped_lat_lon"].tolist() == [0, 1, 2]
    assert "suspect        3 swapped_lat_lon" in str(report) and "--bbox" in str(report)
    _, clean = validate_records(read_records(_csv(tmp_path, 0)))
    assert clean.suspect == {}  # no false alarm on a clean file


def test_swapped_rows_are_dropped_or_fixed_against_the_region(tmp_path: Path) -> None:
    recs = read_records(_csv(tmp_path, 3))
    valid, report = validate_records(recs, bounds=FRANCE)
    assert report.dropped["swapped_lat_lon"] == 3 and len(valid) == 37 and report.suspect == {}
    fixed, report = validate_records(recs, bounds=FRANCE, fix_swapped=True)
    assert report.fixed["swapped_lat_lon"] == 3 and len(fixed) == 40
    assert fixed["x"].between(-1, 7.5).all() and fixed["y"].between(43, 50).all()


def test_a_file_swapped_throughout_needs_the_region(tmp_path: Path) -> None:
    f = _csv(tmp_path, 40)
    _, report = validate_records(read_records(f))
    assert report.n_dropped == 0  # the bulk is swapped too: nothing stands out
    with pytest.raises(InputError, match=r"(?s)records failed validation:.*40 swapped_lat_lon.*Fix the source rows"):
        validate_records(read_records(f), bounds=FRANCE, on_invalid="raise")


def test_cli_bbox(tmp_path: Path) -> None:
    f = _csv(tmp_path, 3)
    res = CliRunner().invoke(app, ["records", "validate", str(f)])
    assert res.exit_code == 0 and "suspect" in res.output
    res = CliRunner().invoke(app, ["records", "validate", str(f), "--bbox", ",".join(map(str, FRANCE))])
    assert res.exit_code == 0 and "37 of 40 records valid" in res.output and "3 swapped_lat_lon" in res.output
    res = CliRunner().invoke(app, ["records", "validate", str(f), "--bbox", "41.3,-5.2,51.1"])
    assert res.exit_code == 1 and "(41.3, -5.2, 51.1) is not 4 numbers; give (west, south, east, north)" in res.output
    res = CliRunner().invoke(app, ["records", "validate", str(f), "--bbox", "France"])
    assert res.exit_code == 1 and "--bbox 'France' is not W,S,E,N numbers (lon/lat), e.g." in res.output


@pytest.mark.parametrize("bounds", [(9.6, 41.3, -5.2, 51.1), (41.3, -5.2, 51.1, 200.0)])
def test_bounds_that_are_no_lon_lat_box_are_refused(tmp_path: Path, bounds: tuple) -> None:
    with pytest.raises(InputError, match=r"is not a lon/lat box .*give \(west, south, east, north\) in degrees"):
        validate_records(read_records(_csv(tmp_path, 0)), bounds=bounds)
