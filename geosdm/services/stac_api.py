"""A STAC API on loopback: ``rustac serve`` (in-memory backend) run as a child process.

rustac's memory backend answers core / collections / features / item-search requests (``bbox``, ``datetime``,
``collections``, ``ids``, ``intersects``, ``limit`` with paging) but **not** the Query or Filter (CQL2)
extensions: its conformance lists neither, a search with ``query=`` returns no items at all and a POSTed
``filter`` is ignored. For cloud-cover limits use
:func:`geosdm.stac.cloud_cover_search_kwargs` with :func:`geosdm.stac.filter_items`, which work on this and
on full APIs.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from urllib.error import URLError
from urllib.request import ProxyHandler, build_opener

from geosdm.errors import DataSourceError, ServiceError
from geosdm.services._ports import free_port
from geosdm.services._process import ChildProcess, child_argv, run_dir

__all__ = ["StacApiServer", "rustac_command"]

log = logging.getLogger(__name__)

_NO_PROXY = build_opener(ProxyHandler({}))  # loopback checks must never go through a proxy


def rustac_command() -> list[str]:
    """The command that runs the ``rustac`` CLI: its console script next to this Python, else on ``PATH``.

    Raises
    ------
    ServiceError
        If rustac is not installed.

    Example
    -------
    >>> rustac_command()[-1].endswith("rustac")  # doctest: +SKIP
    True
    """
    local = Path(sys.executable).parent / "rustac"
    if local.is_file():
        return [str(local)]
    found = shutil.which("rustac")
    if found:
        return [found]
    raise ServiceError("the `rustac` command is not installed; install it with `pip install rustac`")


class StacApiServer:
    """``rustac serve`` over STAC JSON files, on ``host`` and a free port, as a child process.

    Parameters
    ----------
    hrefs
        Collection JSON and ItemCollection JSON (or ndjson / stac-geoparquet) files to load; asset hrefs should
        already be absolute (see :func:`geosdm.services.hrefs.write_served_stac`). Items whose collection has no
        file get a collection derived from them (``--create-collections``).
    host
        Loopback address to bind.
    workdir
        Folder for rustac's log (``rustac.log``); a temporary folder (removed on stop) if None.
    startup_timeout
        Seconds to wait for the API to answer ``GET /``.

    Raises
    ------
    DataSourceError
        On start, if an href is not an existing file.
    ServiceError
        On start, if rustac is missing, exits or does not answer in time (the message holds its log tail).

    Example
    -------
    >>> with StacApiServer(["run/item-collections/sentinel-2-l2a.json"]) as api:  # doctest: +SKIP
    ...     pystac_client.Client.open(api.url).search(collections=["sentinel-2-l2a"]).item_collection()
    """

    def __init__(
        self,
        hrefs: Sequence[str | PathLike[str]],
        *,
        host: str = "127.0.0.1",
        workdir: str | PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.hrefs = [Path(h) for h in hrefs]
        self.host = host
        self.startup_timeout = startup_timeout
        self._workdir = workdir
        self._dir: Path | None = None
        self._owned = False
        self._child: ChildProcess | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """Bound TCP port (only while running)."""
        if self._port is None:
            raise ServiceError("STAC API is not running; call start() or use it as a context manager")
        return self._port

    @property
    def url(self) -> str:
        """Landing page URL without a trailing slash, e.g. ``http://127.0.0.1:7822``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the rustac child (None when stopped)."""
        return None if self._child is None else self._child.pid

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "rustac.log"

    def _answers(self) -> bool:
        try:
            with _NO_PROXY.open(f"{self.url}/", timeout=1.0) as resp:
                return resp.status == 200 and "links" in json.loads(resp.read())
        except (URLError, OSError, ValueError):
            return False

    def start(self, *, wait: bool = True) -> StacApiServer:
        """Start rustac; with ``wait`` (default) return once ``GET /`` answers, else call :meth:`wait_ready`."""
        if self._child is not None:
            return self
        missing = [str(h) for h in self.hrefs if not h.is_file()]
        if missing:
            raise DataSourceError(f"STAC API cannot load {missing}: no such file; write them first (write_served_stac)")
        self._dir, self._owned = run_dir(self._workdir, "geosdm-rustac-")
        self._launch()
        return self.wait_ready() if wait else self

    def _launch(self) -> None:
        if self._dir is None:
            raise ServiceError("STAC API: call start() before wait_ready()")
        self._port = free_port(self.host)
        rustac = [*rustac_command(), "serve", "--addr", f"{self.host}:{self._port}", "--create-collections"]
        argv = child_argv("exec", "--", *rustac, *(str(h) for h in self.hrefs))
        self._child = ChildProcess("STAC API (rustac serve)", argv, log_path=self._dir / "rustac.log")
        try:
            self._child.spawn()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> StacApiServer:
        """Wait until a server started with ``start(wait=False)`` answers ``GET /``; returns ``self``."""
        for attempt in range(3):  # the free port can be taken between picking and binding
            if self._child is None:
                raise ServiceError("STAC API is not running; call start() first")
            try:
                self._child.wait_ready(
                    self._answers,
                    timeout=self.startup_timeout,
                    hint=f"check that {[str(h) for h in self.hrefs]} are valid STAC JSON (`rustac validate FILE`)",
                )
            except ServiceError as exc:
                if "in use" in str(exc).lower() and attempt < 2:
                    log.debug("port %s taken, retrying: %s", self._port, exc)
                    self._launch()
                    continue
                self.stop()
                raise
            break
        log.info("STAC API (rustac, memory backend) at %s, pid %s", self.url, self.pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate rustac (kill after ``timeout`` seconds), reap it and free its port (idempotent)."""
        if self._child is not None:
            self._child.stop(timeout)
            log.info("STAC API stopped")
        self._child = None
        self._port = None
        if self._dir is not None and self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> StacApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
