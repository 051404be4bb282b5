"""Run a list of independent Dask tasks here (threads) or on a ``dask.distributed`` client, with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["run_tasks", "connect", "shared_input"]


def _bar(total: int, initial: int, enabled: bool, desc: str, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled)


@contextmanager
def connect(client: Any | str | None) -> Iterator[Any | None]:
    """A ``dask.distributed.Client`` for ``client``: used as is, connected to when a scheduler address, or None."""
    if client is None or not isinstance(client, str):
        yield client
        return
    from dask.distributed import Client

    with Client(client) as c:
        yield c


def run_tasks(tasks: Sequence[Any], *, client: Any | None, progress: bool, total: int, initial: int = 0,
              desc: str = "predict", unit: str = "tile", batch: int | None = None) -> list[Any]:
    """Compute Delayed ``tasks`` (locally with threads, or on ``client``); returns their results in order.

    ``total``/``initial`` size the progress bar (tasks already done in an earlier run count as ``initial``).
    ``batch`` computes that many tasks per graph, so graphs stay small on country-scale grids (the tasks'
    shared inputs, such as the model, are sent once per batch).
    """
    import dask

    bar = _bar(total, initial, progress, desc, unit)
    step = max(1, int(batch)) if batch else max(1, len(tasks))
    results: list[Any] = []
    try:
        for start in range(0, len(tasks), step):
            part = tasks[start : start + step]
            if client is None:
                from dask.callbacks import Callback

                keys = {t.key for t in part}

                class _Tick(Callback):  # type: ignore[misc]
                    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                        if key in keys:
                            bar.update(1)

                with _Tick():
                    results += list(dask.compute(*part, scheduler="threads"))
                continue
            from dask.distributed import as_completed

            futures = client.compute(list(part))
            for fut in as_completed(futures):
                fut.result()  # raise a failed task's error here
                bar.update(1)
            results += [f.result() for f in futures]
            del futures
        return results
    finally:
        bar.close()


def _identity(value: Any) -> Any:
    return value


def shared_input(client: Any, value: Any, *, key: str) -> Any:
    """A future holding ``value`` for many tasks of ``client``, made by a task (not ``client.scatter``): when the
    workers holding it die (an OOM kill, a pre-empted node), the scheduler recomputes it from its task, where
    scattered data would be lost for good ("lost scattered data, which can't be recovered") and every task
    depending on it would fail."""
    return client.submit(_identity, value, key=key, pure=False)
