"""The whole local stack over a demo folder: range HTTP server, S3 server (moto) and STAC API (rustac)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from geosdm.errors import DataSourceError, InputError, ServiceError
from geosdm.services._process import log_tail
from geosdm.services.hrefs import demo_collections, write_served_stac
from geosdm.services.http import HttpServer
from geosdm.services.s3 import S3Server, create_bucket, gdal_s3_env, upload_folder
from geosdm.services.stac_api import StacApiServer

__all__ = ["ServedDemo", "serve_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedDemo:
    """URLs and settings of a served demo folder (valid inside :func:`serve_demo` only).

    Attributes
    ----------
    root
        The demo folder (read only).
    stac_url
        STAC API landing page; its asset hrefs point at ``asset_hrefs`` (``http`` or ``s3``).
    http_url
        Base URL of the range HTTP server over ``root``.
    s3_endpoint
        ``http://HOST:PORT`` of the S3 server; ``s3://<bucket>/<path>`` mirrors ``<root>/<path>``.
    bucket
        Bucket holding a copy of ``root``.
    storage_options
        fsspec/s3fs options for ``s3://`` reads and writes (xarray/zarr).
    collections
        Collection ids loaded into the STAC API.
    stac_dir, s3_stac_dir
        Rewritten STAC copies with ``http://`` and ``s3://`` asset hrefs (``item-collections/<id>.json``).
    """

    root: Path
    stac_url: str
    http_url: str
    s3_endpoint: str
    bucket: str
    storage_options: dict[str, Any] = field(hash=False)
    collections: tuple[str, ...]
    asset_hrefs: Literal["http", "s3"]
    stac_dir: Path
    s3_stac_dir: Path
    stac: StacApiServer = field(repr=False, compare=False, hash=False)
    http: HttpServer = field(repr=False, compare=False, hash=False)
    s3: S3Server = field(repr=False, compare=False, hash=False)

    def http_href(self, relative: str) -> str:
        """HTTP URL of a path relative to the demo root."""
        return self.http.url_for(relative)

    def s3_href(self, relative: str) -> str:
        """``s3://`` URL of a path relative to the demo root."""
        return f"s3://{self.bucket}/{relative.lstrip('/')}"

    def gdal_env(self) -> AbstractContextManager[dict[str, str]]:
        """Context manager pointing GDAL/boto3/s3fs at the S3 server (see :func:`gdal_s3_env`)."""
        return gdal_s3_env(self.s3_endpoint, region=self.s3.region)

    def check_alive(self) -> None:
        """Raise :class:`ServiceError` naming any service that has stopped."""
        dead = [svc for svc in (self.stac, self.http, self.s3) if not svc.running]
        if dead:
            logs = "\n".join(f"--- {svc.log_path}:\n{log_tail(svc.log_path)}" for svc in dead if svc.log_path)
            names = [type(svc).__name__ for svc in dead]
            raise ServiceError(
                f"local services stopped unexpectedly: {names}; restart them (serve_demo / geosdm serve). Logs:\n{logs}"
            )


@contextmanager
def serve_demo(
    root: str | PathLike[str],
    *,
    host: str = "127.0.0.1",
    bucket: str = "geosdm-demo",
    asset_hrefs: Literal["http", "s3"] = "http",
    upload: bool = True,
    workdir: str | PathLike[str] | None = None,
) -> Iterator[ServedDemo]:
    """Serve a demo folder over HTTP, S3 and a STAC API on ``host``; stop everything on exit.

    Starts the range HTTP server over ``root``, the S3 server with ``root`` uploaded to ``bucket``, writes
    copies of the demo's ItemCollections with absolute hrefs (the demo folder is never modified) and loads them
    into ``rustac serve``. Each service is a child process; on exit (also on error or Ctrl-C) all three are
    terminated and reaped, freeing every port. Children also die with this process (Linux), see
    :mod:`geosdm.services._child`.

    Parameters
    ----------
    root
        Demo folder (:class:`geosdm.demo.layout.DemoLayout`) with ``stac/item-collections/*.json``.
    host
        Loopback address for all three services.
    bucket
        S3 bucket receiving a copy of ``root``.
    asset_hrefs
        Which copy the STAC API serves: hrefs to the HTTP server (``"http"``) or ``s3://bucket/...``.
    upload
        Copy ``root`` into the bucket (skip for a faster start when S3 is not needed).
    workdir
        Folder for the rewritten STAC copies and the rustac log; a temporary folder (removed on exit) if None.

    Yields
    ------
    ServedDemo

    Raises
    ------
    DataSourceError
        If ``root`` holds no ItemCollections.
    ServiceError
        If a service fails to start (the message carries rustac's log tail).

    Example
    -------
    >>> with serve_demo("demo-output") as demo:  # doctest: +SKIP
    ...     items = pystac_client.Client.open(demo.stac_url).search(collections=["sentinel-2-l2a"]).items()
    """
    from geosdm.demo.layout import DemoLayout  # lazy: geosdm.demo's package import is heavy

    if asset_hrefs not in ("http", "s3"):
        raise InputError(f"asset_hrefs must be 'http' or 's3', got {asset_hrefs!r}")
    layout = DemoLayout.at(root)
    if not layout.root.is_dir():
        raise DataSourceError(f"demo folder {str(layout.root)!r} does not exist; run `geosdm demo run --out <folder>`")
    collections = demo_collections(layout.root)
    with ExitStack() as stack:
        if workdir is None:
            work = Path(tempfile.mkdtemp(prefix="geosdm-serve-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        else:
            work = Path(workdir)
            work.mkdir(parents=True, exist_ok=True)
        # Start the children side by side (each takes a Python start-up), then wait for each in turn.
        http = HttpServer(layout.root, host=host, workdir=work)
        s3 = S3Server(host=host, workdir=work)
        stack.callback(s3.stop)
        stack.callback(http.stop)
        http.start(wait=False)
        s3.start(wait=False)
        http.wait_ready()
        http_files = write_served_stac(layout.root, work / "stac-http", http.url, collections=collections)
        s3_files = write_served_stac(layout.root, work / "stac-s3", f"s3://{bucket}", collections=collections)
        api = StacApiServer(http_files if asset_hrefs == "http" else s3_files, host=host, workdir=work)
        stack.callback(api.stop)
        api.start(wait=False)
        s3.wait_ready()
        create_bucket(s3.endpoint_url, bucket, region=s3.region)
        if upload:
            upload_folder(s3.endpoint_url, layout.root, bucket, region=s3.region)
        api.wait_ready()
        served = ServedDemo(
            root=layout.root,
            stac_url=api.url,
            http_url=http.url,
            s3_endpoint=s3.endpoint_url,
            bucket=bucket,
            storage_options=s3.storage_options,
            collections=tuple(collections),
            asset_hrefs=asset_hrefs,
            stac_dir=work / "stac-http",
            s3_stac_dir=work / "stac-s3",
            stac=api,
            http=http,
            s3=s3,
        )
        log.info("serving %s: STAC %s, HTTP %s, S3 %s/%s", layout.root, api.url, http.url, s3.endpoint_url, bucket)
        try:
            yield served
        finally:
            log.info("stopping services for %s", layout.root)
