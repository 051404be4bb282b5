"""Covariates and patches at points: exact known values, each chunk read once, categorical layers kept."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geosdm.errors import InputError, MissingVariableError
from geosdm.records import extract_at, extract_covariates, extract_patches, open_patches, records_from_frame
from geosdm.records.coords import cell_centres, transform_xy
from geosdm.records._cube import cube_source
from geosdm.records.extract import gather_cells
from tests.fixtures.records import SHARD, RecordsCube


def _points(cube: RecordsCube, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ny, nx = cube.geobox.shape
    row, col = rng.integers(0, ny, n), rng.integers(0, nx, n)
    x, y = cell_centres(cube.geobox, row, col)
    return row, col, x + rng.uniform(-49, 49, n), y + rng.uniform(-49, 49, n)


@pytest.mark.parametrize("source", ["path", "dask", "numpy"])
def test_nearest_values_equal_known_values(records_cube: RecordsCube, source: str) -> None:
    row, col, x, y = _points(records_cube, 400)
    cube = {"path": records_cube.path, "dask": records_cube.open(), "numpy": records_cube.open().load()}[source]
    out = extract_at(cube, x, y)
    assert list(out.columns) == ["bio01", "elevation", "landcover", "lc_1", "lc_2"]  # QA s2_count_* excluded
    np.testing.assert_array_equal(out["elevation"].to_numpy(), records_cube.elevation(row, col))
    np.testing.assert_array_equal(out["bio01"].to_numpy(), records_cube.bio01(row, col))
    np.testing.assert_array_equal(out["lc_1"].to_numpy(), records_cube.lc_1(row, col))
    assert out["elevation"].dtype == np.float32
    assert isinstance(out["landcover"].dtype, pd.CategoricalDtype)
    assert out["landcover"].cat.categories.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(out["landcover"].astype(int).to_numpy(), records_cube.landcover(row, col))


def test_records_in_lonlat_and_outside_points(records_cube: RecordsCube, records_table: pd.DataFrame) -> None:
    table = extract_covariates(records_cube.path, records_table, variables=["elevation", "landcover"])
    assert table.index.equals(records_table.index) and table.columns[-2:].tolist() == ["elevation", "landcover"]
    x, y = transform_xy(records_table["x"], records_table["y"], "EPSG:4326", "EPSG:2154")
    lamb = records_table["crs"] == "EPSG:2154"
    x[lamb.to_numpy()], y[lamb.to_numpy()] = records_table.loc[lamb, "x"], records_table.loc[lamb, "y"]
    rowf, colf = (records_cube.geobox.affine.f - y) / 100, (x - records_cube.geobox.affine.c) / 100
    expected = records_cube.elevation(np.floor(rowf).astype(int), np.floor(colf).astype(int))
    np.testing.assert_array_equal(table["elevation"].to_numpy(), expected)
    lon, lat = transform_xy(np.array([480_050.0, 0.0]), np.array([6_575_950.0, 0.0]), "EPSG:2154", "EPSG:4326")
    out = extract_at(records_cube.path, lon, lat, crs="EPSG:4326", variables=["elevation"])
    assert out["elevation"].iloc[0] == 0.0 and np.isnan(out["elevation"].iloc[1])  # outside the grid -> NaN


def test_bilinear_interpolates_continuous_layers_only(records_cube: RecordsCube) -> None:
    rng = np.random.default_rng(1)
    row, col = rng.integers(0, 59, 200), rng.integers(0, 79, 200)
    x, y = cell_centres(records_cube.geobox, row, col)
    fr, fc = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    out = extract_at(records_cube.path, x + 100 * fc, y - 100 * fr, method="bilinear")
    np.testing.assert_allclose(out["bio01"].to_numpy(), 0.5 * (row + fr) - 0.25 * (col + fc), atol=1e-5)
    near_r, near_c = np.floor(row + fr + 0.5).astype(int), np.floor(col + fc + 0.5).astype(int)
    np.testing.assert_array_equal(out["lc_1"].to_numpy(), records_cube.lc_1(near_r, near_c))  # never interpolated
    np.testing.assert_array_equal(out["landcover"].astype(int).to_numpy(), records_cube.landcover(near_r, near_c))


def test_each_chunk_read_once(records_cube: RecordsCube) -> None:
    src = cube_source(records_cube.path, variables=["elevation", "bio01"])
    reads: Counter[tuple[str, int, int]] = Counter()

    def counting_read(name: str, rows: slice, cols: slice) -> np.ndarray:
        reads[(name, rows.start, cols.start)] += 1
        assert rows.stop - rows.start <= SHARD and cols.stop - cols.start <= SHARD  # one shard per read
        return src.read(name, rows, cols)

    counted = dataclasses.replace(src, read=counting_read, n_threads=2)
    row, col, _, _ = _points(records_cube, 3000)
    values = gather_cells(counted, ["elevation", "bio01"], row, col)
    np.testing.assert_array_equal(values[0], records_cube.elevation(row, col))
    n_blocks = len({(r // SHARD, c // SHARD) for r, c in zip(row, col, strict=True)})
    assert len(reads) == 2 * n_blocks and set(reads.values()) == {1}


def test_extract_errors(records_cube: RecordsCube, tmp_path: Path) -> None:
    with pytest.raises(MissingVariableError, match="lacks variable"):
        extract_at(records_cube.path, [480_050.0], [6_575_950.0], variables=["bio99"])
    with pytest.raises(InputError, match="method"):
        extract_at(records_cube.path, [480_050.0], [6_575_950.0], method="cubic")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="cannot open cube"):
        extract_at(tmp_path / "missing.zarr", [0.0], [0.0])


def test_patches_store(records_cube: RecordsCube, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    row, col = rng.integers(0, 60, 150), rng.integers(0, 80, 150)
    row[:2], col[:2] = [0, 59], [0, 79]  # corners: patches reach past the grid
    x, y = cell_centres(records_cube.geobox, row, col)
    recs = records_from_frame(pd.DataFrame({"species": "a", "x": x, "y": y}), crs="EPSG:2154")
    store = extract_patches(records_cube.path, recs, tmp_path / "p.zarr", size=5, chunk_points=32)
    ds = open_patches(store)
    assert ds["patches"].dims == ("sample", "variable", "py", "px") and ds["patches"].shape == (150, 5, 5, 5)
    assert ds["patches"].encoding["chunks"] == (32, 5, 5, 5)
    assert ds.attrs["categorical"] == {"landcover": "class", "lc_1": "fraction", "lc_2": "fraction"}
    patches, rec = ds["patches"].values, ds["record"].values
    assert sorted(rec.tolist()) == list(range(150))
    k = list(ds["variable"].values).index("elevation")
    for s in range(150):
        rr, cc = np.meshgrid(row[rec[s]] + np.arange(-2, 3), col[rec[s]] + np.arange(-2, 3), indexing="ij")
        inside = (rr >= 0) & (rr < 60) & (cc >= 0) & (cc < 80)
        expected = np.where(inside, records_cube.elevation(np.clip(rr, 0, 59), np.clip(cc, 0, 79)), np.nan)
        np.testing.assert_array_equal(patches[s, k], expected)
    sidecar = pd.read_parquet(store / ds.attrs["records"])
    assert len(sidecar) == 150 and np.allclose(sidecar["x"].to_numpy()[rec], ds["x"].values)
    with pytest.raises(InputError, match="exists"):
        extract_patches(records_cube.path, recs, store, size=5)


def test_cf_encoded_variables_are_decoded(records_cube: RecordsCube, tmp_path: Path) -> None:
    ds = records_cube.open()[["bio01"]].load()
    ds["bio01"][0, 0] = np.nan
    store = tmp_path / "packed.zarr"
    enc = {"bio01": {"dtype": "int16", "scale_factor": 0.25, "_FillValue": -9999, "chunks": (16, 16)}}
    ds.to_zarr(store, zarr_format=3, mode="w", encoding=enc, consolidated=False)
    row, col, x, y = _points(records_cube, 300, seed=5)
    row[0], col[0] = 0, 0
    (x[0],), (y[0],) = cell_centres(records_cube.geobox, np.array([0]), np.array([0]))
    out = extract_at(store, x, y)
    expected = records_cube.bio01(row, col)
    expected[0] = np.nan
    np.testing.assert_array_equal(out["bio01"].to_numpy(), expected)  # scaled back, nodata -> NaN
