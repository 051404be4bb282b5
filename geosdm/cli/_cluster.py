"""The Dask client behind ``--scheduler ADDRESS`` / ``--workers N`` options (one place for every command)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[Any | None]:
    """A client to ``scheduler``, or to a new LocalCluster of ``workers`` processes, or None (run in-process)."""
    if not scheduler and not workers:
        yield None
        return
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client
