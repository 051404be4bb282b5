"""Covariate stores with lost shards: an error naming the variable and tile, never a silent nodata map."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import DataSourceError
from geosdm.grid import grid_coords
from geosdm.io.layers import write_layers
from geosdm.io.zarr import missing_shards
from geosdm.predict.lazy import open_input

GRID = GeoBox.from_bbox((0, 0, 6_400, 3_200), "EPSG:2154", resolution=100)  # 32 x 64 cells: 2 x 4 tiles of 16


def _cube(path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=GRID.shape).astype(np.float32)
    b = rng.normal(size=GRID.shape).astype(np.float32)
    b[:16, :16] = np.nan  # one tile empty for b (sea): Zarr writes no shard there, and that is fine
    ds = xr.Dataset({"a": (("y", "x"), da.from_array(a, chunks=16)), "b": (("y", "x"), da.from_array(b, chunks=16))},
                    coords=grid_coords(GRID))
    write_layers(ds, path, identity={"test": 1})


def test_a_deleted_shard_is_named_and_an_empty_one_is_not(tmp_path: Path) -> None:
    cube = tmp_path / "cube.zarr"
    _cube(cube)
    assert not (cube / "b" / "c" / "0" / "0").exists()  # the empty tile
    assert missing_shards(str(cube), ["a", "b"]) == []
    open_input(str(cube), ("a", "b"))  # a complete cube opens
    shutil.rmtree(cube / "a" / "c" / "1")  # a whole row of tiles of a
    (cube / "b" / "c" / "0" / "2").unlink()
    lost = missing_shards(str(cube), ["a", "b"])
    assert ("b", (0, 2)) in lost and ("a", (1, 0)) in lost and ("b", (0, 0)) not in lost
    with pytest.raises(DataSourceError, match=r"lacks 5 shard\(s\) its build wrote, of \['a', 'b'\] \(first: 'a' tile 1, 0") as err:
        open_input(str(cube), ("a", "b"))
    assert "tile_0001_0000.json" in str(err.value) and "--overwrite" in str(err.value)
    assert missing_shards(str(cube), ["b"]) == [("b", (0, 2))]  # only what the model reads is checked


def test_a_truncated_shard_is_named_with_its_variable_and_cells(tmp_path: Path) -> None:
    from geosdm.io.zarr import read_window

    cube = tmp_path / "cube.zarr"
    _cube(cube)
    shard = cube / "b" / "c" / "1" / "2"
    shard.write_bytes(shard.read_bytes()[:40])
    np.testing.assert_array_equal(read_window(str(cube), ("a",), (slice(16, 32), slice(32, 48))).shape, (1, 16, 16))
    with pytest.raises(DataSourceError, match=r"cannot read variable 'b' at rows 16:32, columns 32:48 .*truncated"):
        read_window(str(cube), ("a", "b"), (slice(16, 32), slice(32, 48)))


# ------------------------------------------------- training extraction: the same shard check as prediction


def _records(n: int = 60) -> pd.DataFrame:
    """Presence records at cell centres spread over every tile of GRID (EPSG:2154)."""
    from geosdm.records import records_from_frame
    from geosdm.records.coords import cell_centres

    rng = np.random.default_rng(2)
    row, col = rng.integers(0, GRID.shape[0], n), rng.integers(0, GRID.shape[1], n)
    x, y = cell_centres(GRID, row, col)
    frame = pd.DataFrame({"species": "sp_1", "x": x, "y": y})
    return records_from_frame(frame, crs="EPSG:2154", kind="presence_only")


def test_extraction_from_a_cube_with_a_lost_shard_or_variable_names_it(tmp_path: Path) -> None:
    """A deleted shard, then a deleted variable folder that the consolidated metadata still lists: covariate
    extraction (the records step, `records extract`, training_table) stops with DataSourceError naming the
    variable and the tile. It used to read NaN there, and those records were dropped before training."""
    from typer.testing import CliRunner

    from geosdm.cli import app
    from geosdm.records import extract_covariates, training_table, write_records

    cube = tmp_path / "cube.zarr"
    _cube(cube)
    recs = _records()
    table = extract_covariates(str(cube), recs, variables=["a", "b"])
    assert table["a"].notna().all()
    (cube / "a" / "c" / "1" / "0").unlink()
    pattern = (r"lacks 1 shard\(s\) its build wrote, of \['a'\] \(first: 'a' tile 1, 0: .*\); reading covariates "
               r"there would give NaN")
    with pytest.raises(DataSourceError, match=pattern) as err:
        extract_covariates(str(cube), recs, variables=["a", "b"])
    assert f"{cube}.progress/tile_0001_0000.json" in str(err.value)
    with pytest.raises(DataSourceError, match=pattern):
        training_table(recs, str(cube), n_background=50, seed=0)
    src = write_records(recs, tmp_path / "recs.parquet")
    res = CliRunner().invoke(app, ["records", "extract", str(src), "--cube", str(cube), "-o",
                                   str(tmp_path / "t.parquet")])
    assert res.exit_code == 1 and "error: " in res.output and "lacks 1 shard" in res.output, res.output
    assert "'a' tile 1, 0" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "t.parquet").exists()
    extract_covariates(str(cube), recs, variables=["b"])  # only what is read is checked

    cube2 = tmp_path / "cube2.zarr"
    _cube(cube2)
    shutil.rmtree(cube2 / "b")
    assert "b" in xr.open_zarr(cube2, zarr_format=3).data_vars  # consolidated metadata still lists it
    with pytest.raises(DataSourceError, match=r"lacks 7 shard\(s\) its build wrote, of \['b'\] \(first: 'b' tile 0, 1"):
        extract_covariates(str(cube2), recs)


def _strip_variable_lists(cube: Path) -> None:
    """Markers as written before they listed the variables holding data."""
    for marker in Path(f"{cube}.progress").glob("tile_*.json"):
        info = json.loads(marker.read_text())
        info.pop("nonempty")
        marker.write_text(json.dumps(info))


def test_markers_that_do_not_list_their_variables_expect_every_shard(tmp_path: Path) -> None:
    """Markers written before they listed their variables cannot tell a lost shard from one never written (all
    NaN, e.g. sea), so a shard missing there is refused with both causes said, until that tile is rebuilt (its
    new marker lists its variables); a store without markers still names a variable whose folder is gone."""
    from geosdm.records import extract_covariates

    cube = tmp_path / "cube.zarr"
    _cube(cube)
    _strip_variable_lists(cube)
    recs = _records()
    assert missing_shards(str(cube), ["a", "b"]) == [("b", (0, 0))]  # b's empty tile: lost or never written
    with pytest.raises(DataSourceError, match=r"'b' tile 0, 0.*markers of 1 of these tiles \(first: 0, 0\) predate "
                                              r"the list of variables"):
        extract_covariates(str(cube), recs)
    with pytest.raises(DataSourceError, match=r"'b' tile 0, 0.*predicting would leave holes.*predate"):
        open_input(str(cube), ("a", "b"))
    extract_covariates(str(cube), recs, variables=["a"])  # a has every shard
    (cube / "a" / "c" / "1" / "3").unlink()
    assert missing_shards(str(cube), ["a"]) == [("a", (1, 3))]
    # rebuilding the tiles (markers deleted, write resumed) writes markers that list their variables
    for tile in ("0000_0000", "0001_0003"):
        Path(f"{cube}.progress/tile_{tile}.json").unlink()
    _cube(cube)
    assert missing_shards(str(cube), ["a", "b"]) == []
    assert extract_covariates(str(cube), recs)["a"].notna().all()

    bare = tmp_path / "bare.zarr"  # no markers at all (a store written by other tools)
    _cube(bare)
    shutil.rmtree(f"{bare}.progress")
    shutil.rmtree(bare / "b")
    assert missing_shards(str(bare), ["a", "b"]) == []
    with pytest.raises(DataSourceError, match=r"lacks the folder of variable\(s\) \['b'\] .*which its metadata still "
                                              r"list; reading covariates there would give NaN"):
        extract_covariates(str(bare), recs)
