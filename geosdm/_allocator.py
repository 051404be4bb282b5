"""The process's C allocator (glibc malloc), tuned where large NumPy/torch arrays churn.

Two jobs, both no-ops where the C library is not glibc:

* :func:`release_freed_memory` hands freed arena memory back to the OS between the phases of a cube tile.
* :func:`keep_heap_reuse` undoes the side effect of ``MALLOC_TRIM_THRESHOLD_`` (Dask's nanny sets it to 65536 in
  every worker's environment, ``distributed.nanny.pre-spawn-environ``): setting any malloc tunable disables
  glibc's dynamic mmap threshold, so every allocation over 128 KiB (a network layer's activations, a batch's
  outputs) is a fresh ``mmap`` whose pages are faulted in and zeroed, then unmapped. A 300-species forward
  pass on one worker took 1.7x as long as the same pass in a plain process (17.5 s vs 10.4 s per 1024 x 1024
  tile, ``benchmarks/scale.py``). Setting the two thresholds to what glibc's dynamic rule reaches in a plain
  process (mmap 32 MiB, trim 2 x that) lets those buffers be reused from the heap again. Memory still goes
  back to the OS through explicit trims (:func:`release_freed_memory` after each cube tile, and Dask's own).
  A worker environment that sets ``MALLOC_MMAP_THRESHOLD_`` itself is left alone.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = ["keep_heap_reuse", "release_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for its dynamic threshold on 64-bit systems
_FIXED_BY = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")  # env tunables that fix the threshold
_libc: Any = None
_lock = threading.Lock()
_tuned = False


def _glibc() -> Any:
    global _libc
    if _libc is None:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:  # not glibc
            _libc = False
    return _libc


def release_freed_memory() -> None:
    """Hand memory freed by this process back to the OS (glibc ``malloc_trim``; nothing elsewhere).

    Threads allocate in their own malloc arenas, and glibc keeps freed arrays there (its mmap threshold rises
    after the first large free), where the next phase's threads cannot reuse them: without a trim, RSS crept
    up from cube tile to cube tile although every tile needs the same memory (Dask's workers trim for the same
    reason).
    """
    lib = _glibc()
    if lib:
        lib.malloc_trim(0)


def keep_heap_reuse() -> bool:
    """Once per process: where a malloc tunable in the environment froze glibc's mmap threshold at 128 KiB,
    set it to 32 MiB and the trim threshold to 64 MiB (glibc's dynamic values at their ceiling), so large
    temporary buffers are reused instead of mapped afresh. Returns whether it did."""
    global _tuned
    if _tuned:
        return False
    with _lock:
        if _tuned:
            return False
        _tuned = True
        if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not any(os.environ.get(k) for k in _FIXED_BY):
            return False  # the user chose a threshold, or glibc's dynamic one is in force
        lib = _glibc()
        return bool(lib) and bool(lib.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
            lib.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD))
