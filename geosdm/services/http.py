"""A static file server with HTTP Range support on loopback, in a child process.

GDAL's ``/vsicurl/`` reads Cloud-Optimized GeoTIFFs with ``Range`` requests; this server answers them with
``206 Partial Content`` (handler from the ``rangehttpserver`` package, with a fixed byte-range copy). It runs
in a child process: rasterio holds the GIL while GDAL opens a remote file, so a server thread in the reading
process would deadlock.
"""

from __future__ import annotations

import logging
import shutil
from http.server import ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from RangeHTTPServer import RangeRequestHandler

from geosdm.errors import DataSourceError
from geosdm.services._process import PortFileService

__all__ = ["HttpServer", "RangeHandler", "RangeServer"]

log = logging.getLogger(__name__)


class RangeHandler(RangeRequestHandler):
    """Range-capable request handler that logs through :mod:`logging` and copies exactly the requested bytes."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:
        # The package's copy reads to EOF for "bytes=0-0" (stop == 0 is falsy); copy start..stop inclusive.
        byte_range = getattr(self, "range", None)
        if not byte_range:
            shutil.copyfileobj(source, outputfile)
            return
        start, stop = byte_range
        source.seek(start or 0)
        remaining = None if stop is None else stop - (start or 0) + 1
        while remaining is None or remaining > 0:
            chunk = source.read(65536 if remaining is None else min(65536, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)


class RangeServer(ThreadingHTTPServer):
    """Threading HTTP server whose failed requests (clients hanging up early) go to the debug log."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class HttpServer(PortFileService):
    """Serve a folder over HTTP (with Range requests) on ``host`` and a free port, from a child process.

    Parameters
    ----------
    root
        Folder to serve; URL paths map to paths below it.
    host
        Loopback address to bind.
    workdir
        Folder for the server's log; a temporary folder (removed on stop) if None.
    startup_timeout
        Seconds to wait for the server to listen.

    Raises
    ------
    DataSourceError
        On start, if ``root`` is not a folder.
    ServiceError
        On start, if the server does not come up (the message holds its log tail).

    Example
    -------
    >>> with HttpServer("demo-output") as http:  # doctest: +SKIP
    ...     rasterio.open(f"/vsicurl/{http.url}/cogs/cop-dem-glo-30/dem/elevation.tif")
    """

    kind = "http"
    label = "HTTP server"

    def __init__(
        self,
        root: str | PathLike[str],
        *,
        host: str = "127.0.0.1",
        workdir: str | PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(host=host, workdir=workdir, startup_timeout=startup_timeout)
        self.root = Path(root).resolve()

    def _child_args(self) -> list[str]:
        return ["--root", str(self.root)]

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:8000``."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, relative: str) -> str:
        """URL of a path relative to :attr:`root`."""
        return f"{self.url}/{quote(relative.lstrip('/'), safe='/')}"

    def _check_can_start(self) -> None:
        if not self.root.is_dir():
            raise DataSourceError(f"cannot serve {str(self.root)!r} over HTTP: not a folder; pass an existing folder")
