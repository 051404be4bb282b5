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


# ----------------------------------------------------------------- outputs on an object store (moto's S3 server)

S3_HOLD = """
import json, os, sys, time
from odc.geo.geobox import GeoBox
from geosdm.errors import InputError
from geosdm.io.zarr import CubeStore
from geosdm.services import s3_storage_options
url, endpoint, go, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
store = CubeStore(url, GeoBox.from_bbox((0, 0, 3_200, 3_200), "EPSG:2154", resolution=100), (16, 16), None,
                  s3_storage_options(endpoint))
store.fs.ls(url.split("://")[1].split("/")[0])  # connected before the start signal
print("ready", flush=True)
while go and not os.path.exists(go):
    time.sleep(0.001)
try:
    with store.writer():
        print("holding", flush=True)
        time.sleep(hold)
except InputError as err:
    print("refused", err, flush=True)
"""

LOCK_BUCKET = "geosdm-locks"


def _s3_holders(url: str, endpoint: str, n: int, go: str, hold: float) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", S3_HOLD, url, endpoint, go, str(hold)], stdout=subprocess.PIPE,
                              text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def test_two_writers_of_one_s3_output(s3_server: object, tmp_path: Path) -> None:
    """On S3 the lock is a conditional PUT (If-None-Match: *, moto honours it): of three runs starting at once
    exactly one holds it; a second writer (also with overwrite) is refused with the holder named and writes
    nothing; a dead holder's lock on this host is taken over; another host's stays until deleted by hand."""
    import uuid

    import fsspec

    from geosdm.services import create_bucket, s3_storage_options

    endpoint = s3_server.endpoint_url  # type: ignore[attr-defined]
    create_bucket(endpoint, LOCK_BUCKET)
    opts = s3_storage_options(endpoint)
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
    key = f"{LOCK_BUCKET}/{uuid.uuid4().hex[:8]}/layers.zarr"
    url = f"s3://{key}"

    go = tmp_path / "go"  # three runs released at once: exactly one takes the lock
    racers = _s3_holders(url, endpoint, 3, str(go), 30)
    try:
        go.touch()
        lines = sorted(p.stdout.readline().strip() for p in racers)  # type: ignore[union-attr]
        assert [line.split()[0] for line in lines] == ["holding", "refused", "refused"], lines
        held = json.loads(fs.cat_file(f"{key}.lock"))
        holder = next(p for p in racers if p.pid == held["pid"])
        assert set(held) == {"host", "pid", "started", "run"}
        assert all(f"pid {holder.pid} on {held['host']}" in line and held["run"] in line for line in lines[1:])
        for overwrite in (False, True):
            with pytest.raises(InputError, match=rf"being written by another run \(pid {holder.pid} on .*run "
                                                 rf"{held['run']}\).*delete 's3://{key}\.lock'"):
                write_layers(_layers(), url, overwrite=overwrite, storage_options=opts)
        assert not fs.exists(f"{key}/zarr.json") and not fs.exists(f"{key}.progress"), "the refused run wrote nothing"
    finally:
        for p in racers:
            p.kill()
            p.wait()
    assert fs.exists(f"{key}.lock")  # killed: its lock stays behind ...
    report = write_layers(_layers(), url, storage_options=opts)  # ... and is taken over: its pid is gone
    assert report.n_tiles == 4 and not fs.exists(f"{key}.lock")
    np.testing.assert_allclose(open_layers(url, storage_options=opts).a.values, _layers().a.values)

    other = {"host": "otherhost", "pid": 1, "started": "2026-01-01T00:00:00Z", "run": "0123abcd"}
    fs.pipe_file(f"{key}.lock", json.dumps(other).encode())  # a run on another host: cannot be checked
    with pytest.raises(InputError, match=r"pid 1 on otherhost, since 2026-01-01T00:00:00Z, run 0123abcd.*killed on "
                                         r"another host"):
        write_layers(_layers(), url, overwrite=True, storage_options=opts)
    fs.rm_file(f"{key}.lock")  # the documented way to break it
    assert write_layers(_layers(), url, overwrite=True, storage_options=opts).n_tiles == 4
    assert not fs.exists(f"{key}.lock")
