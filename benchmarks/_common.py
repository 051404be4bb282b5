"""Shared helpers for the benchmarks: run one measured step in a fresh subprocess, sample the peak resident
memory of its whole process tree, and read its result (one JSON object on the last stdout line).

A measured step is a separate Python process so that its peak RSS is its own (nothing imported, allocated or
cached by an earlier step counts) and so that worker processes it starts (dask, GDAL helpers) are included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil

__all__ = ["Measured", "TreePeakRSS", "du_mb", "emit", "last_json_line", "run_measured", "run_worker", "tree_rss"]


def tree_rss(procs: Sequence[psutil.Process]) -> int:
    """Sum of the resident set sizes (bytes) of ``procs``; processes that have exited count 0.

    RSS counts pages shared between processes once per process, so a tree of forked workers is over-counted
    a little; for the single-process builds measured here it is exact.
    """
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


class TreePeakRSS:
    """Sample the RSS of a process and all its descendants in a background thread; keep the peak.

    The list of descendants is refreshed every ``refresh`` seconds (walking /proc is costlier than reading
    one process's RSS), the RSS every ``interval`` seconds.
    """

    def __init__(self, pid: int, *, interval: float = 0.02, refresh: float = 0.5) -> None:
        self.root = psutil.Process(pid)
        self.interval, self.refresh = interval, refresh
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return []

    def _run(self) -> None:
        procs, listed = self._tree(), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - listed > self.refresh:
                procs, listed = self._tree(), time.monotonic()
            self.peak = max(self.peak, tree_rss(procs))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@dataclass
class Measured:
    """One measured subprocess: its JSON result, the peak RSS of its process tree and its wall time."""

    result: dict[str, Any]
    peak_rss_mb: float
    wall_s: float
    samples: int
    returncode: int
    log: str = field(repr=False, default="")


def last_json_line(text: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of ``text`` (a benchmark's result line)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line:
            return json.loads(line)
    raise ValueError("no output: expected a JSON object on the last line")


def run_measured(
    cmd: Sequence[str],
    *,
    interval: float = 0.02,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    echo: bool = True,
) -> Measured:
    """Run ``cmd`` (e.g. ``[sys.executable, script, "--worker", ...]``) and sample its tree's RSS until it exits.

    The child's stdout goes to a temporary file (no pipe to fill up); its stderr is passed through. Its last
    stdout line must be one JSON object, returned as ``result``. A non-zero exit raises ``RuntimeError`` with
    the tail of its output.
    """
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=None, env={**os.environ, **(env or {})})
        with TreePeakRSS(proc.pid, interval=interval) as mem:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if echo:
        for line in text.strip().splitlines()[:-1]:
            print(f"  | {line}", flush=True)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}; output:\n{text[-3000:]}")
    return Measured(last_json_line(text), mem.peak_mb, wall, mem.samples, rc, text)


def run_worker(cmd: Sequence[str], label: str, *, interval: float = 0.02, env: Mapping[str, str] | None = None,
               **options: Any) -> dict[str, Any]:
    """One measured step of a benchmark: ``cmd`` plus ``--key value`` for each of ``options`` (underscores in
    keys become dashes), run by :func:`run_measured`; returns its result with ``peak_rss_mb`` and ``wall_s`` and
    prints it after ``label``."""
    full = list(cmd)
    for k, v in options.items():
        full += [f"--{k.replace('_', '-')}", str(v)]
    m = run_measured(full, interval=interval, env=env)
    out = {**m.result, "peak_rss_mb": round(m.peak_rss_mb, 1), "wall_s": round(m.wall_s, 1)}
    print(f"{label} {options or ''}: {json.dumps(out, default=str)[:600]}", flush=True)
    return out


def emit(result: Mapping[str, Any]) -> None:
    """Print ``result`` as the one-line JSON object that ends a benchmark's output."""
    print(json.dumps(dict(result), default=str), flush=True)
    sys.stdout.flush()


def du_mb(path: str | os.PathLike[str]) -> float:
    """Size of the files under ``path`` in MiB."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20 if p.exists() else 0.0
