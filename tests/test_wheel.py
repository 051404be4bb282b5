"""A built wheel carries the catalogs and pipelines, and geosdm installed from it finds them (not the checkout's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_catalogs_and_pipelines(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the in-tree build/ folder does not land in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "constraints.txt"):
        shutil.copy2(REPO / name, src / name)
    for name in ("geosdm", "catalogs", "pipelines"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("geosdm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("catalogs", "pipelines"):
        shipped = {f"geosdm/{folder}/{p.name}" for p in (REPO / folder).glob("*.yaml")}
        assert shipped and shipped <= names, sorted(shipped - names)

    # the wheel's geosdm, unpacked alone on sys.path, from an unrelated folder: its own catalogs and pipelines
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import geosdm, geosdm.sources as s, geosdm.pipeline as p; "
            "print(geosdm.__file__); print(s.catalog_dirs()); print(p.find_pipeline('demo-small')); "
            "print(s.load_source('demo-sentinel-2-l2a').name); print(p.load_pipeline('demo-small').name)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOSDM_")}
    env["PYTHONPATH"] = str(site)
    res = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout.splitlines()
    assert out[0].startswith(str(site)), out
    assert str(site / "geosdm" / "catalogs") in out[1] and str(REPO) not in out[1], out
    assert out[2] == str(site / "geosdm" / "pipelines" / "demo-small.yaml"), out
    assert out[3:] == ["demo-sentinel-2-l2a", "demo-small"], out
