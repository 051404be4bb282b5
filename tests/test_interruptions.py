"""Interruptions (issue 18): a worker killed mid cube build, a training run killed (also mid-checkpoint), and
resume fingerprints that name their inputs by content, not by path.

Every test compares the interrupted-then-resumed result with an uninterrupted one: cube arrays by SHA-256
checksums of every variable, model weights tensor by tensor (exact), prediction maps array by array.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from geosdm.cube import CubeConfig, build_cube, resolve_sources
from geosdm.cube.tiling import SourcePlan
from geosdm.demo import DemoLayout
from geosdm.errors import InputError
from geosdm.io import open_cube

JJA = "2024-06-01/2024-08-31"
REPO = Path(__file__).resolve().parents[1]


def _config(demo: DemoLayout, out: Path, *, tile: int = 32, **extra: object) -> CubeConfig:
    region = demo.region()["target_grid"]
    return CubeConfig.model_validate({
        "grid": {"crs": "EPSG:2154", "resolution": region["resolution"], "bbox": region["bbox"]},
        "datetime": JJA,
        "sources": [{"source": "demo-sentinel-2-l2a", "catalog": str(demo.catalog_json), "working_resolution": 20,
                     "indices": ["ndvi"]}],
        "output": {"path": str(out), "tile_shape": [tile, tile], "chunk_shape": [tile // 2, tile // 2]},
        **extra,
    })


def checksums(path: str | Path) -> dict[str, str]:
    """SHA-256 of every data variable's values (dtype, shape and bytes) of the Zarr store at ``path``."""
    ds = open_cube(str(path)).load()
    out = {}
    for v in sorted(ds.data_vars):
        a = np.ascontiguousarray(ds[v].values)
        out[str(v)] = hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def clean_cube(demo_small: DemoLayout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the S2 cube (16 tiles of 32 x 32) built in this process, uninterrupted."""
    out = tmp_path_factory.mktemp("clean") / "cube.zarr"
    report = build_cube(_config(demo_small, out))
    assert report.n_tiles == 16 and not report.failures
    return out


# ----------------------------------------------------------------------------- a worker killed mid cube build


@pytest.mark.parametrize("when", ["executing", "memory"], ids=["as-it-starts-a-tile", "after-writing-a-tile"])
def test_a_worker_killed_mid_cube_build_is_replaced_and_the_cube_is_identical(
        demo_small: DemoLayout, clean_cube: Path, tmp_path: Path, when: str) -> None:
    """A worker process dies (``os._exit``, as an OOM kill) as it starts a tile, or just after it wrote a tile and
    its marker but before the scheduler got the result; the nanny restarts it, the scheduler reruns the task, and
    the cube's arrays equal the uninterrupted build's (checksums)."""
    from dask.distributed import Client, LocalCluster, WorkerPlugin

    flag = tmp_path / "killed"

    class DieOnce(WorkerPlugin):  # a local class: shipped to the workers by value
        def __init__(self, path: str, finish: str) -> None:
            self.path, self.finish = path, finish

        def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
            if finish == self.finish and "cube-tile" in str(key) and not os.path.exists(self.path):
                with open(self.path, "w") as f:
                    f.write(str(key))
                os._exit(1)

    out = tmp_path / "cube.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.register_plugin(DieOnce(str(flag), when))
        report = build_cube(_config(demo_small, out), client=client)
    assert flag.exists(), "a worker was killed during the build"
    assert report.n_tiles == 16 and report.n_skipped == 0 and not report.failures
    assert len(list(Path(f"{out}.progress").glob("tile_*.json"))) == 16
    assert checksums(out) == checksums(clean_cube)


def test_a_worker_killed_with_sigkill_mid_cube_build(demo_small: DemoLayout, clean_cube: Path,
                                                     tmp_path: Path) -> None:
    """kill -9 of one worker process from outside once a few tiles are written (whatever it was doing, a read or
    a shard write, is lost); the build completes and equals the uninterrupted one."""
    import threading

    from dask.distributed import Client, LocalCluster

    out = tmp_path / "cube.zarr"
    progress = Path(f"{out}.progress")
    killed: list[tuple[int, int]] = []  # (pid, markers seen at the kill)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pid = next(iter(client.run(os.getpid).values()))

        def watch() -> None:
            deadline = time.time() + 120
            while time.time() < deadline:
                n = len(list(progress.glob("tile_*.json"))) if progress.exists() else 0
                if n >= 2:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, n))
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        report = build_cube(_config(demo_small, out), client=client)
        watcher.join(5)
    assert killed and killed[0][1] < 16, f"the kill must land mid-build: {killed}"
    assert report.n_tiles == 16 and not report.failures
    assert checksums(out) == checksums(clean_cube)


# ------------------------------------------------------------------------------- training killed, resumed

#: A training run as a user script: the public estimator with checkpoints, saved with ``save``. ``PAUSE``
#: (``<where>:<n>``) stops it at a chosen point of the n-th checkpoint write so the test can kill -9 it there.
TRAIN_SCRIPT = textwrap.dedent('''
    import json, os, pathlib, sys, time

    import numpy as np
    import pandas as pd

    out, work, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pause = os.environ.get("PAUSE", "")
    where, _, nth = pause.partition(":")


    def hold():  # tell the test where we are, then wait for its kill -9
        pathlib.Path(work, "paused").write_text(pause)
        time.sleep(600)
        os._exit(3)


    calls = {"n": 0}
    if where == "tensors":  # the n-th checkpoint's model.safetensors half-written
        import safetensors.torch

        save_file = safetensors.torch.save_file

        def half(tensors, filename, metadata=None):
            calls["n"] += 1
            save_file(tensors, filename, metadata)
            if calls["n"] == int(nth):
                size = os.path.getsize(filename)
                os.truncate(filename, size // 2)
                hold()

        safetensors.torch.save_file = half
    elif where == "config":  # the n-th checkpoint's config.json half-written
        write_text = pathlib.Path.write_text

        def half_text(self, data, *args, **kwargs):
            if self.name == "config.json" and self.parent.name.endswith(".partial"):
                calls["n"] += 1
                if calls["n"] == int(nth):
                    write_text(self, data[: len(data) // 2], *args, **kwargs)
                    hold()
            return write_text(self, data, *args, **kwargs)

        pathlib.Path.write_text = half_text
    elif where == "renames":  # between the n-th checkpoint's two renames: last -> last.old, last.partial -> last
        rename = pathlib.Path.rename

        def stop_after(self, target):
            result = rename(self, target)
            if self.name == "last" and pathlib.Path(target).name == "last.old":
                calls["n"] += 1
                if calls["n"] + 1 == int(nth):  # the first checkpoint has no previous one to rename
                    hold()
            return result

        pathlib.Path.rename = stop_after

    from geosdm.models import MultiSpeciesSDM

    rng = np.random.default_rng(0)
    n = 20_000
    x, y = rng.uniform(0, 10_000, n), rng.uniform(0, 10_000, n)
    temp = 10 + 8 * x / 1e4 + np.sin(6 * y / 1e4)
    rain = 800 + 300 * np.cos(4 * y / 1e4) + 100 * x / 1e4
    t, r = (temp - 14) / 3, (rain - 800) / 200
    logit = {"sp_a": -1.5 * (t - 0.5) ** 2 + 0.5, "sp_b": 1.2 * r, "sp_c": -(t + 0.8) ** 2 - (r - 0.5) ** 2 + 1}
    X = pd.DataFrame({"x": x, "y": y, "temp": temp, "rain": rain})
    Y = pd.DataFrame({s: (rng.uniform(size=n) < 1 / (1 + np.exp(-v))).astype(float) for s, v in logit.items()})
    kw = dict(loss="bce", covariates=["temp", "rain"], hidden=32, n_blocks=1, epochs=epochs, batch_size=64,
              lr=3e-3, val_size=0.2, patience=1000, device="cpu", precision="32", n_threads=1, seed=0)
    if work != "-":
        kw.update(work_dir=work, checkpoint_every=1, resume=True)
    model = MultiSpeciesSDM(**kw).fit(X, Y)
    model.save(out)
    pathlib.Path(out, "run.json").write_text(json.dumps(
        {"resumed_from": model.training_.resumed_from, "epochs_run": model.training_.epochs_run,
         "best_epoch": model.training_.best_epoch}))
''')
EPOCHS = 12


def _train(tmp: Path, out: Path, work: Path | str, *, pause: str = "", nice: int = 0) -> subprocess.Popen:
    script = tmp / "train.py"
    if not script.exists():
        script.write_text(TRAIN_SCRIPT)
    env = {**os.environ, "PAUSE": pause, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(out), str(work), str(EPOCHS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode(errors="replace")[-4000:]


def _tensors(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    """Every tensor of the two saved models equal (names, dtypes, shapes, values), and the files byte for byte."""
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb) and any(k.startswith("network.") for k in ta)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape, k
        assert np.array_equal(ta[k], tb[k]), f"tensor {k} differs"
    digest = [hashlib.sha256((m / "model.safetensors").read_bytes()).hexdigest() for m in (a, b)]
    assert digest[0] == digest[1]


@pytest.fixture(scope="module")
def straight_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same training, uninterrupted and without checkpoints."""
    tmp = tmp_path_factory.mktemp("straight")
    out = tmp / "model"
    _finish(_train(tmp, out, "-"))
    return out


def _epochs_in(ckpt: Path) -> int:
    return int(json.loads((ckpt / "config.json").read_text())["result"]["epochs_run"])


@pytest.mark.slow  # end to end (> 10 s); make test-all and CI run it
def test_training_killed_with_sigkill_resumes_to_the_same_weights(straight_model: Path, tmp_path: Path) -> None:
    """kill -9 of the whole run, from outside, at whatever it is doing once two epochs are checkpointed; the
    rerun resumes from the last complete checkpoint and ends with exactly the uninterrupted run's weights."""
    from geosdm.models.checkpoint import complete_checkpoint

    work, out = tmp_path / "work", tmp_path / "model"
    last = work / "checkpoints" / "last"
    proc = _train(tmp_path, out, work, nice=19)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if _epochs_in(last) >= 2:
                break
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run must be killed, not finished"
    assert not (out / "model.safetensors").exists()
    found = complete_checkpoint(last)  # `last`, or `last.old` if the kill fell between a save's two renames
    assert found is not None
    at_kill = _epochs_in(found)
    assert 2 <= at_kill < EPOCHS, "the kill must land mid-run"
    _finish(_train(tmp_path, out, work))
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from"] == at_kill and run["epochs_run"] == EPOCHS
    _assert_same_weights(out, straight_model)


@pytest.mark.slow  # end to end (> 10 s); make test-all and CI run it
@pytest.mark.parametrize("where", ["tensors", "config", "renames"])
def test_training_killed_while_writing_a_checkpoint_never_uses_a_half_written_one(
        straight_model: Path, tmp_path: Path, where: str) -> None:
    """kill -9 while the 4th checkpoint is written: its weights file half-written, its config.json half-written,
    or between its two renames (``last`` moved to ``last.old``, the new one not yet renamed). The half-written
    ``last.partial`` is never read: the rerun resumes from the 3rd checkpoint (``last``, or ``last.old`` after
    a kill between the renames) and ends with exactly the uninterrupted run's weights."""
    from geosdm.errors import DataSourceError
    from geosdm.models.checkpoint import load_checkpoint

    work, out = tmp_path / "work", tmp_path / "model"
    ckpts = work / "checkpoints"
    proc = _train(tmp_path, out, work, pause=f"{where}:4")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (work / "paused").exists():
        time.sleep(0.01)
    assert (work / "paused").exists(), proc.communicate()[0].decode(errors="replace")[-4000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    partial = ckpts / "last.partial"
    if where == "renames":
        assert not (ckpts / "last").exists() and _epochs_in(ckpts / "last.old") == 3
        assert _epochs_in(partial) == 4  # complete, but written by a run that did not finish the swap
        resumed_from = 3
    else:
        assert _epochs_in(ckpts / "last") == 3
        with pytest.raises((DataSourceError, FileNotFoundError)):
            load_checkpoint(partial)  # what a resume that trusted it would have read
        resumed_from = 3
    _finish(_train(tmp_path, out, work))
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from"] == resumed_from and run["epochs_run"] == EPOCHS
    assert not partial.exists() and not (ckpts / "last.old").exists()
    _assert_same_weights(out, straight_model)


# ------------------------------------------------------------------- resume fingerprints by content, not path


def _plans_with_late_asset(cfg: CubeConfig, late: Path) -> tuple[list[SourcePlan], Path]:
    """The plans with the first Item's B04 read from ``late`` (absent until the test copies the real file there,
    as an asset host that is down during the first build); returns the plans and the real file."""
    plans = resolve_sources(cfg)
    items = [i.clone() for i in plans[0].items]
    real = Path(items[0].assets["B04"].get_absolute_href())
    items[0].assets["B04"].href = str(late)
    return [dataclasses.replace(plans[0], items=tuple(items))], real


@pytest.mark.slow  # end to end (> 10 s); make test-all and CI run it
def test_cube_resume_rebuilds_tiles_whose_items_failed_once_they_can_be_read(
        demo_small: DemoLayout, clean_cube: Path, tmp_path: Path) -> None:
    """A tile built while an Item could not be read is marked done with the failure recorded. Resuming used to
    keep it until --overwrite (the cube stayed different from a clean build); now a resume rebuilds the tiles
    whose markers record failed Items: while the Item still fails they are rebuilt and reported again, and once it
    can be read the cube equals a clean build (checksums)."""
    out, late = tmp_path / "cube.zarr", tmp_path / "late" / "B04.tif"
    cfg = _config(demo_small, out, retries=0)
    plans, real = _plans_with_late_asset(cfg, late)
    first = build_cube(cfg, plans=plans)
    failed_item = plans[0].items[0].id
    assert [f["item_id"] for f in first.failures["demo-sentinel-2-l2a"]] == [failed_item]
    hit = sorted(tuple(json.loads(p.read_text())["index"]) for p in Path(f"{out}.progress").glob("tile_*.json")
                 if json.loads(p.read_text()).get("failures"))
    assert 0 < len(hit) < 16
    broken = checksums(out)
    assert broken != checksums(clean_cube)

    kept = build_cube(cfg, plans=plans, retry_failed=False)  # on request: keep them, still reported
    assert kept.n_skipped == 16 and kept.retried == [] and kept.failures == first.failures

    again = build_cube(cfg, plans=plans)  # the Item still fails: rebuilt, reported again, nothing else touched
    assert [tuple(t) for t in again.retried] == hit and again.n_skipped == 16 - len(hit)
    assert again.failures == first.failures and checksums(out) == broken

    late.parent.mkdir()
    shutil.copyfile(real, late)  # the asset host is back
    fixed = build_cube(cfg, plans=plans)
    assert [tuple(t) for t in fixed.retried] == hit and not fixed.failures
    assert open_cube(str(out)).attrs["geosdm:failed_items"] == {}
    assert checksums(out) == checksums(clean_cube)
    assert build_cube(cfg, plans=plans).retried == []  # nothing left to retry


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fitted model reading two of the cube's variables."""
    from geosdm.models import MultiSpeciesSDM

    rng = np.random.default_rng(1)
    n = 600
    X = pd.DataFrame({"s2_B04_jja": rng.uniform(0.0, 0.3, n), "s2_ndvi_jja": rng.uniform(-0.2, 0.9, n)})
    Y = pd.DataFrame({"sp_a": (rng.uniform(size=n) < X["s2_ndvi_jja"].clip(0, 1)).astype(float),
                      "sp_b": (rng.uniform(size=n) < 3 * X["s2_B04_jja"]).astype(float)})
    model = MultiSpeciesSDM(loss="bce", covariates=list(X.columns), hidden=8, n_blocks=1, epochs=2, val_size=0,
                            device="cpu", seed=0).fit(X, Y)
    return Path(model.save(tmp_path_factory.mktemp("model") / "m"))


def test_prediction_resume_names_the_cube_by_content(demo_small: DemoLayout, clean_cube: Path, small_model: Path,
                                                     tmp_path: Path) -> None:
    """A prediction resume fingerprint used to name the cube by its path (and build configuration): after the
    cube was repaired in place, resuming kept every stale tile. Now the cube is named by its content (variables'
    metadata, tile markers, shard sizes and versions): a repaired cube is refused until --overwrite, which gives the
    map of a clean cube; the same cube moved elsewhere resumes."""
    from geosdm.predict import open_predictions, write_predictions

    cube, late = tmp_path / "cube.zarr", tmp_path / "late" / "B04.tif"
    cfg = _config(demo_small, cube, retries=0)
    plans, real = _plans_with_late_asset(cfg, late)
    assert build_cube(cfg, plans=plans).failures  # built while an asset host was down
    out = tmp_path / "probability.zarr"
    first = write_predictions(small_model, cube, out, tile_shape=(32, 32), dtype="float32")
    assert first.n_tiles == 16
    stale = open_predictions(out).probability.values

    late.parent.mkdir()
    shutil.copyfile(real, late)
    assert build_cube(cfg, plans=plans).retried  # repaired in place, at the same path
    with pytest.raises(InputError, match="different inputs"):
        write_predictions(small_model, cube, out, tile_shape=(32, 32), dtype="float32")
    redone = write_predictions(small_model, cube, out, tile_shape=(32, 32), dtype="float32", overwrite=True)
    assert redone.n_resumed == 0
    ref = write_predictions(small_model, clean_cube, tmp_path / "ref.zarr", tile_shape=(32, 32), dtype="float32")
    assert ref.n_tiles == 16
    fresh, want = open_predictions(out).probability.values, open_predictions(ref.path).probability.values
    np.testing.assert_array_equal(fresh, want)
    assert not np.array_equal(np.nan_to_num(stale, nan=-1), np.nan_to_num(want, nan=-1))  # resume would have kept

    moved = tmp_path / "elsewhere" / "cube.zarr"
    moved.parent.mkdir()
    os.rename(cube, moved)
    os.rename(f"{cube}.progress", f"{moved}.progress")
    resumed = write_predictions(small_model, moved, out, tile_shape=(32, 32), dtype="float32")
    assert resumed.n_resumed == resumed.n_tiles == 16  # same content, another path: nothing recomputed
    np.testing.assert_array_equal(open_predictions(out).probability.values, want)


def test_content_identity_changes_with_the_content_not_the_path(clean_cube: Path, tmp_path: Path) -> None:
    from geosdm.io.zarr import content_identity

    variables = ["s2_B04_jja", "s2_ndvi_jja"]
    cube = tmp_path / "c.zarr"
    shutil.copytree(clean_cube, cube)  # copytree keeps modification times (copy2)
    shutil.copytree(f"{clean_cube}.progress", f"{cube}.progress")
    base = content_identity(str(cube), variables)
    assert base == content_identity(str(clean_cube), variables)
    assert base == content_identity(f"file://{cube}", variables)
    assert content_identity(str(cube), ["s2_B08_jja"]) != base  # other variables, other identity

    shard = next(p for p in sorted((cube / "s2_ndvi_jja" / "c").rglob("*")) if p.is_file())
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    assert content_identity(str(cube), variables)["objects"] != base["objects"]
    shard.write_bytes(data)  # same bytes, rewritten: the version (mtime) changed, so it counts as changed
    assert content_identity(str(cube), variables)["objects"] != base["objects"]
    marker = sorted(Path(f"{cube}.progress").glob("tile_*.json"))[0]
    marker.write_text(marker.read_text().replace('"index"', '"rebuilt": true, "index"'))
    assert content_identity(str(cube), variables)["tiles"] != base["tiles"]


def test_content_identity_on_an_object_store_follows_etags(clean_cube: Path, s3_server: Any) -> None:
    """On S3 an object's version is its ETag (the MD5 of its bytes): the same cube under two prefixes has one
    identity; a truncated shard changes it; the original bytes put back restore it."""
    import fsspec

    from geosdm.io.zarr import content_identity
    from geosdm.services import create_bucket

    create_bucket(s3_server.endpoint_url, "interruptions")
    opts = s3_server.storage_options
    fs = fsspec.filesystem("s3", **opts)
    for prefix in ("a", "b"):
        fs.put(str(clean_cube), f"interruptions/{prefix}/cube.zarr", recursive=True)
        fs.put(f"{clean_cube}.progress", f"interruptions/{prefix}/cube.zarr.progress", recursive=True)
    variables = ["s2_B04_jja", "s2_ndvi_jja"]
    base = content_identity("s3://interruptions/a/cube.zarr", variables, storage_options=opts)
    assert base["tiles"] and base["objects"] != "unlisted"
    assert content_identity("s3://interruptions/b/cube.zarr", variables, storage_options=opts) == base
    shard = sorted(fs.find("interruptions/a/cube.zarr/s2_ndvi_jja/c"))[0]
    data = fs.cat_file(shard)
    fs.pipe_file(shard, data[: len(data) // 2])
    assert content_identity("s3://interruptions/a/cube.zarr", variables, storage_options=opts) != base
    fs.pipe_file(shard, data)
    assert content_identity("s3://interruptions/a/cube.zarr", variables, storage_options=opts) == base
