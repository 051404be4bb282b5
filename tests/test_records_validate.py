"""Validation: each bad input gives its error or a counted drop; nothing disappears silently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import InputError
from geosdm.records import records_from_frame, validate_records
from geosdm.records.coords import cell_centres, transform_xy
from tests.fixtures.records import RecordsCube


def _lonlat_in_grid(cube: RecordsCube, rows: list[int], cols: list[int]) -> tuple[np.ndarray, np.ndarray]:
    x, y = cell_centres(cube.geobox, np.array(rows), np.array(cols))
    return transform_xy(x, y, "EPSG:2154", "EPSG:4326")


def _bad_records(cube: RecordsCube) -> pd.DataFrame:
    lon, lat = _lonlat_in_grid(cube, [1, 2, 3, 4, 5, 5], [1, 2, 3, 4, 5, 5])
    rows = [
        ("good", lon[0], lat[0], "presence_only", 1.0, None),
        ("good", lon[1], lat[1], "presence_only", 1.0, None),
        (None, lon[2], lat[2], "presence_only", 1.0, None),  # missing_species
        ("good", lon[3], lat[3], "presence_absence", 2.0, None),  # invalid_value
        ("good", np.nan, lat[3], "presence_only", 1.0, None),  # invalid_coordinates (NaN)
        ("good", 0.0, 0.0, "presence_only", 1.0, None),  # invalid_coordinates (null island)
        ("good", 200.0, 10.0, "presence_only", 1.0, None),  # invalid_coordinates (lon > 180)
        ("good", lat[4], lon[4], "presence_only", 1.0, None),  # swapped_lat_lon (detected via the grid)
        ("good", 10.0, 120.0, "presence_only", 1.0, None),  # swapped_lat_lon (lat > 90, valid as lon)
        ("good", -3.0, 48.0, "presence_only", 1.0, None),  # outside_grid (Brittany)
        ("good", lon[0], lat[0], "presence_only", 1.0, None),  # duplicate of row 0
        ("good", lon[5], lat[5], "presence_only", 1.0, 5000.0),  # coordinate_uncertainty
    ]
    frame = pd.DataFrame(rows, columns=["species", "decimalLongitude", "decimalLatitude", "kind", "value", "unc"])
    frame = frame.rename(columns={"unc": "coordinate_uncertainty_m"})
    return records_from_frame(frame)


def test_each_bad_row_is_counted_under_its_reason(records_cube: RecordsCube) -> None:
    recs = _bad_records(records_cube)
    valid, report = validate_records(recs, geobox=records_cube.geobox, max_uncertainty_m=1000)
    assert report.dropped == {
        "missing_species": 1,
        "invalid_value": 1,
        "invalid_coordinates": 3,
        "swapped_lat_lon": 2,
        "outside_grid": 1,
        "coordinate_uncertainty": 1,
        "duplicate": 1,
    }
    assert report.n_input == len(recs) == report.n_valid + report.n_dropped
    assert valid.index.tolist() == [0, 1]
    assert report.dropped_index["duplicate"].tolist() == [10]
    assert report.dropped_index["swapped_lat_lon"].tolist() == [7, 8]
    assert "dropped" in str(report) and report.to_frame()["dropped"].sum() == report.n_dropped


def test_fix_swapped_keeps_and_counts(records_cube: RecordsCube) -> None:
    recs = _bad_records(records_cube)
    valid, report = validate_records(recs, geobox=records_cube.geobox, fix_swapped=True)
    assert report.fixed == {"swapped_lat_lon": 2}
    assert 7 in valid.index  # swapped back and inside the grid
    assert report.dropped["outside_grid"] == 2  # row 8 swapped back is a valid lon/lat, but not on the grid
    assert valid.loc[7, "x"] == recs.loc[7, "y"]


def test_without_grid_only_grid_free_checks(records_cube: RecordsCube) -> None:
    _, report = validate_records(_bad_records(records_cube))
    assert report.dropped["outside_grid"] == 0
    assert report.dropped["swapped_lat_lon"] == 1  # only the lat > 90 case is visible without a grid


def test_errors_for_unknown_crs_and_strict_mode(records_cube: RecordsCube) -> None:
    recs = _bad_records(records_cube)
    with pytest.raises(InputError, match="failed validation"):
        validate_records(recs, on_invalid="raise")
    broken = recs.copy()
    broken["crs"] = broken["crs"].astype(object)
    broken.loc[0, "crs"] = "EPSG:999999"
    broken["crs"] = broken["crs"].astype("string")
    with pytest.raises(InputError, match="unknown CRS"):
        validate_records(broken)
    broken.loc[0, "crs"] = pd.NA
    with pytest.raises(InputError, match="have no CRS"):
        validate_records(broken)
    with pytest.raises(InputError, match="needs the grid"):
        validate_records(recs, duplicates="cell")
    with pytest.raises(InputError, match="coordinate_uncertainty_m"):
        validate_records(recs.drop(columns=["coordinate_uncertainty_m"]), max_uncertainty_m=10)


def test_cell_duplicates_keep_one_presence_per_cell(records_cube: RecordsCube) -> None:
    x, y = cell_centres(records_cube.geobox, np.array([3, 3, 3, 3]), np.array([4, 4, 4, 4]))
    recs = records_from_frame(
        pd.DataFrame(
            {
                "species": ["a", "a", "b", "a"],
                "x": x + np.array([0, 10, 20, 30]),
                "y": y,
                "kind": ["presence_only", "presence_only", "presence_only", "presence_absence"],
                "value": [1.0, 1.0, 1.0, 0.0],
            }
        ),
        crs="EPSG:2154",
    )
    valid, report = validate_records(recs, geobox=records_cube.geobox, duplicates="cell")
    assert valid.index.tolist() == [0, 2, 3] and report.dropped["duplicate"] == 1
    _, report = validate_records(recs, geobox=records_cube.geobox, duplicates="keep")
    assert report.n_dropped == 0
