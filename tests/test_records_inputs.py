"""Configured record inputs (kind, CRS, wide species columns) and training tables with given background points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from geosdm.errors import InputError
from geosdm.io.zarr import quiet_zarr
from geosdm.records import RecordsInput, melt_species, read_inputs, records_from_frame, training_table

GRID = GeoBox.from_bbox((500_000, 6_500_000, 506_400, 6_506_400), "EPSG:2154", resolution=100)  # 64 x 64


def _cube(path: Path) -> Path:
    """Two covariates valid on the left half only (the right half is beyond the study area)."""
    ny, nx = GRID.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype("float32")
    ds = xr.Dataset(coords=xr_coords(GRID, crs_coord_name="spatial_ref"))
    for name, v in (("a", yy), ("b", xx)):
        v = v.copy()
        v[:, nx // 2:] = np.nan
        ds[name] = (("y", "x"), v, {"grid_mapping": "spatial_ref"})
    with quiet_zarr():
        ds.to_zarr(path, zarr_format=3, consolidated=True)
    return path


def _xy(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 500_000 + 100 * cols + 50.0, 6_506_400 - 100 * rows - 50.0


def test_melt_species_one_row_per_surveyed_species() -> None:
    sites = records_from_frame(pd.DataFrame({"lon": [1.0, 2.0], "lat": [3.0, 4.0], "siteid": ["s1", "s2"],
                                             "sp_a": [1, 0], "sp_b": [None, 1], "other": [7, 8]}),
                               kind="presence_absence")
    long = melt_species(sites, ["sp_*"])
    assert long[["plot_id", "species", "value"]].values.tolist() == [["s1", "sp_a", 1.0], ["s2", "sp_a", 0.0],
                                                                     ["s2", "sp_b", 1.0]]
    assert (long["kind"] == "presence_absence").all() and "sp_a" not in long and list(long["other"]) == [7, 8, 8]
    with pytest.raises(InputError, match="no column matches"):
        melt_species(sites, ["nsw*"])


def test_records_input_options(tmp_path: Path) -> None:
    frame = pd.DataFrame({"spid": ["pseudo1"] * 2, "x": [1.0, 2.0], "y": [3.0, 4.0], "occ": [0, 0],
                          "siteid": [1, 2], "cov": [5, 6]})
    frame.to_parquet(tmp_path / "bg.parquet")
    bg = RecordsInput(path=str(tmp_path / "bg.parquet"), crs="EPSG:4326", kind="background", columns=()).read()
    assert (bg["kind"] == "background").all() and bg["species"].isna().all()  # background belongs to no species
    assert list(bg["plot_id"]) == ["1", "2"] and "cov" not in bg.columns
    with pytest.raises(InputError, match="not among its extra columns"):
        RecordsInput(path=str(tmp_path / "bg.parquet"), crs="EPSG:4326", kind="background", columns=("nope",)).read()
    with pytest.raises(InputError, match="species_columns"):
        RecordsInput(path=str(tmp_path / "bg.parquet"), kind="presence_only", species_columns=("cov",)).read()
    with pytest.raises(InputError, match="no CRS"):
        read_inputs([RecordsInput(path=str(tmp_path / "bg.parquet"), kind="background")])


def test_training_table_with_given_background(tmp_path: Path) -> None:
    cube = _cube(tmp_path / "cube.zarr")
    rng = np.random.default_rng(0)
    rows, cols = np.arange(40), rng.integers(0, 32, 40)  # distinct cells
    x, y = _xy(rows, cols)
    po = records_from_frame(pd.DataFrame({"species": ["s"] * 40, "x": x, "y": y}), crs="EPSG:2154")
    bx, by = _xy(np.arange(20), np.r_[np.arange(19), 40])  # the last one beyond the study area
    bg = records_from_frame(pd.DataFrame({"x": bx, "y": by}), crs="EPSG:2154", kind="background")
    tt = training_table(pd.concat([po, bg], ignore_index=True), cube, background="given", block_size=1_600, seed=0)
    t = tt.table
    assert (t["kind"] == "background").sum() == 19 and tt.n_background_no_covariates == 1
    assert tt.summary()["dropped"] == {"background without valid covariates": 1}
    assert tt.excluded == {}  # half the grid is nodata for every covariate: not a gap
    np.testing.assert_array_equal(t.loc[t["kind"] == "background", "a"], np.arange(19))
    with pytest.raises(InputError, match="background='given' needs background rows"):
        training_table(po, cube, background="given", block_size=1_600)
