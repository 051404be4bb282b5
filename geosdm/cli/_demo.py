"""`geosdm demo ...`: generate the offline demo region and run the main job on it."""

from __future__ import annotations

import typer

app = typer.Typer(help="Generate the offline demo region and run the main job on it.", no_args_is_help=True)
