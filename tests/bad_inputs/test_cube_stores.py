"""Covariate stores with lost shards: an error naming the variable and tile, never a silent nodata map."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as da
import numpy as np
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
