"""`geosdm serve`: start the local STAC API, HTTP and S3 services over a demo folder."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import typer

__all__ = ["serve"]


class AssetHrefs(str, Enum):
    http = "http"
    s3 = "s3"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT / SIGTERM / SIGHUP into KeyboardInterrupt so every service is stopped on the way out.

    SIGINT is set explicitly: a process started with SIGINT ignored (a background job, some test runners)
    would otherwise never see Ctrl-C.
    """
    names = [n for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), _interrupt) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)


def serve(
    root: Path = typer.Argument(Path("demo-output"), help="Demo output folder to serve."),
    bucket: str = typer.Option("geosdm-demo", help="S3 bucket that receives a copy of ROOT."),
    hrefs: AssetHrefs = typer.Option(AssetHrefs.http, help="Asset hrefs in the STAC API: HTTP server or s3://."),
    upload: bool = typer.Option(True, help="Copy ROOT into the S3 bucket (--no-upload starts faster)."),
    workdir: Path | None = typer.Option(None, help="Keep the rewritten STAC files and service logs here."),
) -> None:
    """Serve a demo folder over a local STAC API, a range-capable HTTP server and an S3 server (127.0.0.1)."""
    from rich.console import Console
    from rich.table import Table

    from geosdm.services import serve_demo

    console = Console()
    console.print(f"Starting services for {root} ...")
    try:
        with _stop_on_signals(), serve_demo(
            root, bucket=bucket, asset_hrefs=hrefs.value, upload=upload, workdir=workdir
        ) as served:
            table = Table(title=f"geosdm services for {served.root}", show_header=False)
            table.add_row("STAC API", served.stac_url)
            table.add_row("HTTP (Range)", served.http_url)
            table.add_row("S3 endpoint", served.s3_endpoint)
            table.add_row("S3 bucket", f"s3://{served.bucket}/")
            table.add_row("Collections", ", ".join(served.collections))
            table.add_row("Asset hrefs", served.asset_hrefs)
            console.print(table)
            console.print(
                f"GDAL /vsis3/: AWS_S3_ENDPOINT={served.s3_endpoint.split('://', 1)[1]} AWS_HTTPS=NO "
                "AWS_VIRTUAL_HOSTING=FALSE plus any key pair (geosdm.services.gdal_s3_env sets them).",
                soft_wrap=True,
            )
            console.print("Serving; press Ctrl-C to stop.")
            while True:
                time.sleep(0.5)
                served.check_alive()
    except KeyboardInterrupt:
        console.print("Stopped all services.")
