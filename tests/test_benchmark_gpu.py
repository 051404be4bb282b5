"""benchmarks/gpu.py (issue 16): the GPU-path benchmark runs on CPU at its tiny size and reports what it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def test_tiny_run_reports_rates_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, also on a machine with a GPU
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "gpu" and out["size"] == "tiny" and out["cuda"] is False
    assert out["gpu_busy_method"] is None and "no CUDA" in out["gpu_busy_reason"]
    assert set(out["train"]) == {"cnn", "additive", "mlp"}
    for net, entry in out["train"].items():
        assert entry["gpu"] is None and entry["speedup"] is None and entry["gpu_busy"] is None, net
        cpu = entry["cpu"]
        assert cpu["samples_per_s"] > 0 and cpu["samples"] == cpu["sites"] * cpu["epochs"] > 0, net
        assert cpu["loader_samples_per_s"] > 0 and cpu["train_s"] > 0 and cpu["workers"] >= 1, net
    assert set(out["predict"]) == {"mlp", "additive"}
    for net, entry in out["predict"].items():
        assert entry["tiles"] == 16 and entry["gpu"] is None and entry["speedup"] is None, net
        cpu = entry["cpu"]
        assert cpu["tiles_written"] == 16 and cpu["cells"] == 16 * entry["tile_shape"][0] * entry["tile_shape"][1]
        assert cpu["cell_species_per_s"] > 0, net
    summary = out["summary"]
    assert summary["train_speedup_cnn"] is None and summary["cnn_gpu_busy"] is None
    assert summary["train_samples_per_s_cnn_cpu"] > 0
    assert out["wall_s"] < 40


def test_starved_by_reads_the_rates() -> None:
    gpu = load_benchmark("gpu")
    assert gpu.starved_by({"gpu_busy": 0.9, "samples_per_s": 1e4, "loader_samples_per_s": 1e4}) is None
    assert gpu.starved_by({"gpu_busy": None}) is None
    slow_loader = gpu.starved_by({"gpu_busy": 0.4, "samples_per_s": 1e4, "loader_samples_per_s": 1.1e4})
    assert slow_loader.startswith("data loading")
    fast_loader = gpu.starved_by({"gpu_busy": 0.4, "samples_per_s": 1e4, "loader_samples_per_s": 1e5})
    assert fast_loader.startswith("host overhead")


def test_busy_sampler_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a real GPU is present: the sampler would use NVML")
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nwhile true; do echo 75; sleep 0.02; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    busy = load_benchmark("gpu").GpuBusy(torch.device("cuda", 0), interval=0.02)
    assert busy.method == "nvidia-smi" and busy._smi_id() == "0"
    t0 = time.monotonic()
    busy.start()
    time.sleep(0.3)
    busy.stop()
    frac, n = busy.fraction(t0, time.monotonic())
    assert n > 0 and frac == pytest.approx(0.75)
    assert busy.fraction(t0 - 10, t0 - 5) == (None, 0)
