"""glibc allocator tuning for Dask workers: large temporaries reused instead of mapped afresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geosdm import _allocator

SCRIPT = """
import json, resource
import numpy as np
from geosdm._allocator import keep_heap_reuse

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
        a = np.ones(1 << 20, dtype=np.float32)  # 4 MiB: over the frozen 128 KiB mmap threshold
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

frozen = faults()
tuned = keep_heap_reuse()
print(json.dumps({"frozen": frozen, "tuned": tuned, "after": faults(), "again": keep_heap_reuse()}))
"""


def _run(env: dict[str, str]) -> dict[str, object]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=full, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _allocator._glibc(), reason="glibc only")
def test_dask_worker_malloc_setting_no_longer_maps_every_buffer_afresh() -> None:
    worker = _run({"MALLOC_TRIM_THRESHOLD_": "65536"})  # what distributed's nanny puts in a worker's environment
    assert worker["tuned"] is True and worker["again"] is False  # once per process
    assert worker["frozen"] > 40 * 500, "each 4 MiB buffer was a fresh mapping (1024 pages faulted in)"
    assert worker["after"] < worker["frozen"] / 10, worker
    plain = _run({})
    assert plain["tuned"] is False, "glibc's dynamic threshold is left alone"
    assert _run({"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "1000000"})["tuned"] is False
