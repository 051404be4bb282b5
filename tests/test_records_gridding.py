"""Gridding (records -> cells) and background sampling on the synthetic cube's grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import GridError, InputError
from geosdm.records import (
    aggregate_to_cells,
    assign_cells,
    bias_background,
    rasterize_counts,
    records_from_frame,
    sample_background,
    target_group_background,
    to_crs,
    uniform_background,
    valid_mask,
)
from geosdm.records.coords import cell_centres
from tests.fixtures.records import NODATA_COLS, NODATA_ROWS, RecordsCube


def _at_cells(cube: RecordsCube, rows: list[int], cols: list[int], **columns: object) -> pd.DataFrame:
    x, y = cell_centres(cube.geobox, np.array(rows), np.array(cols))
    return records_from_frame(pd.DataFrame({"x": x + 20, "y": y - 20, **columns}), crs="EPSG:2154")


def test_assign_cells_any_crs(records_table: pd.DataFrame, records_cube: RecordsCube) -> None:
    on_grid = assign_cells(records_table, records_cube.geobox)
    lamb = to_crs(records_table, "EPSG:2154")
    assert lamb["crs"].unique().tolist() == ["EPSG:2154"]
    again = assign_cells(lamb, records_cube.geobox)
    assert (on_grid["row"] == again["row"]).all() and (on_grid["col"] == again["col"]).all()
    outside = lamb.copy()
    outside.loc[0, "x"] = 0.0
    with pytest.raises(InputError, match="outside the grid"):
        assign_cells(outside, records_cube.geobox)


def test_aggregate_counts_and_survey_area(records_cube: RecordsCube) -> None:
    po = _at_cells(records_cube, [2, 2, 2, 7], [3, 3, 3, 9], species=["a", "a", "b", "a"])
    pa = _at_cells(
        records_cube,
        [4, 4, 4],
        [5, 5, 5],
        species="a",
        kind="presence_absence",
        value=[0.0, 1.0, 0.0],
        plot_id=["p1", "p2", "p2"],
        plot_area_m2=[100.0, 200.0, 200.0],
    )
    counts = _at_cells(
        records_cube, [4, 4], [5, 5], species="a", kind="count", value=[3.0, 4.0], plot_area_m2=[50.0, 50.0]
    )
    cells = aggregate_to_cells(pd.concat([po, pa, counts], ignore_index=True), records_cube.geobox)
    by = cells.set_index(["kind", "species", "row", "col"])
    assert by.loc[("presence_only", "a", 2, 3), "value"] == 2 and by.loc[("presence_only", "b", 2, 3), "value"] == 1
    assert by.loc[("presence_only", "a", 7, 9), "n_records"] == 1
    survey = by.loc[("presence_absence", "a", 4, 5)]
    assert survey["value"] == 1 and survey["plot_area_m2"] == 500.0 and survey["n_plots"] == 2
    assert by.loc[("count", "a", 4, 5), "value"] == 7 and by.loc[("count", "a", 4, 5), "plot_area_m2"] == 100.0
    x, y = cell_centres(records_cube.geobox, np.array([2]), np.array([3]))
    row = by.loc[("presence_only", "a", 2, 3)]
    assert (row["x"], row["y"]) == (x[0], y[0]) and cells["crs"].unique().tolist() == ["EPSG:2154"]

    raster = rasterize_counts(pd.concat([po, pa]), records_cube.geobox)
    assert raster.dims == ("species", "y", "x") and list(raster["species"].values) == ["a", "b"]
    assert int(raster.sel(species="a").values[2, 3]) == 2 and int(raster.sum()) == 4
    assert "spatial_ref" in raster.coords


def test_valid_mask_matches_nodata(records_cube: RecordsCube) -> None:
    mask = valid_mask(records_cube.path)
    expected = np.ones(tuple(records_cube.geobox.shape), bool)
    expected[NODATA_ROWS, NODATA_COLS] = False
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(valid_mask(records_cube.open(), variables=["bio01"]), np.ones_like(mask))


def test_uniform_background_seeded_and_within_mask(records_cube: RecordsCube) -> None:
    gbox = records_cube.geobox
    mask = valid_mask(records_cube.path)
    bg = uniform_background(gbox, 500, mask=mask, seed=3)
    assert len(bg) == 500 and (bg["kind"] == "background").all() and bg["species"].isna().all()
    assert mask[bg["row"], bg["col"]].all()
    assert not bg.duplicated(["row", "col"]).any()
    again = sample_background(gbox, 500, mask=mask, seed=3)
    pd.testing.assert_frame_equal(bg, again)
    assert not uniform_background(gbox, 500, mask=mask, seed=4).equals(bg)
    with pytest.raises(InputError, match="only 4775 cells are eligible"):
        uniform_background(gbox, 5000, mask=mask, seed=0)
    with pytest.raises(GridError, match="must match the grid shape"):
        uniform_background(gbox, 5, mask=mask[:10], seed=0)


def test_target_group_and_bias_background(records_cube: RecordsCube, records_table: pd.DataFrame) -> None:
    gbox = records_cube.geobox
    po = records_table[records_table["kind"] == "presence_only"]
    cells = assign_cells(po, gbox)
    occupied = set(zip(cells["row"], cells["col"], strict=True))
    bg = target_group_background(po, gbox, len(occupied), seed=1)
    assert set(zip(bg["row"], bg["col"], strict=True)) == occupied  # bandwidth 0: exactly the record cells
    with pytest.raises(InputError, match="eligible"):
        target_group_background(po, gbox, len(occupied) + 1, seed=1)
    smooth = target_group_background(po, gbox, 200, bandwidth=2.0, seed=1)
    assert len(smooth) == 200 and (smooth["dataset"] == "background:target_group").all()

    bias = np.zeros(tuple(gbox.shape))
    bias[:, :10] = 1.0
    bias[:, 10:20] = 9.0
    drawn = bias_background(bias, 300, geobox=gbox, seed=0)
    assert (drawn["col"] < 20).all()
    assert (drawn["col"] >= 10).mean() > 0.7  # heavier weights drawn more often
    with pytest.raises(InputError, match="geobox"):
        bias_background(bias, 10)
    with pytest.raises(InputError, match="needs records"):
        sample_background(gbox, 10, method="target_group")
