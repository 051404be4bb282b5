"""Two runs pointed at one output: the second is refused with the first named; a dead holder's lock is taken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.grid import grid_coords
from geosdm.io.layers import open_layers, write_layers

GRID = GeoBox.from_bbox((0, 0, 3_200, 3_200), "EPSG:2154", resolution=100)

HOLD = """
import sys, time
from odc.geo.geobox import GeoBox
from geosdm.io.zarr import CubeStore
store = CubeStore(sys.argv[1], GeoBox.from_bbox((0, 0, 3_200, 3_200), "EPSG:2154", resolution=100), (16, 16))
with store.writer():
    print("holding", flush=True)
    time.sleep(60)
"""


def _layers() -> xr.Dataset:
    a = np.random.default_rng(0).normal(size=GRID.shape).astype(np.float32)
    return xr.Dataset({"a": (("y", "x"), da.from_array(a, chunks=16))}, coords=grid_coords(GRID))


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "layers.zarr"
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "holding"
        held = json.loads((tmp_path / "layers.zarr.lock").read_text())
        assert held["pid"] == first.pid
        for overwrite in (False, True):  # overwrite would delete what the other run writes
            with pytest.raises(InputError, match=rf"being written by another run \(pid {first.pid} on .*delete"):
                write_layers(_layers(), out, overwrite=overwrite)
        assert not out.exists(), "the refused run wrote nothing"
    finally:
        first.kill()
        first.wait()
    assert (tmp_path / "layers.zarr.lock").exists()  # killed: its lock stays behind
    report = write_layers(_layers(), out)  # ... and is taken over, since its pid is gone
    assert report.n_tiles == 4 and not (tmp_path / "layers.zarr.lock").exists()
    np.testing.assert_allclose(open_layers(out).a.values, _layers().a.values)
