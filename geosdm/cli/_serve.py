"""`geosdm serve`: start the local STAC API, HTTP and S3 services over a demo folder."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(root: Path = typer.Argument(Path("demo-output"), help="Demo output folder to serve.")) -> None:
    """Serve a demo folder over a local STAC API, a range-capable HTTP server and an S3 server (127.0.0.1)."""
    raise typer.Exit(code=1)  # filled in by geosdm.services
