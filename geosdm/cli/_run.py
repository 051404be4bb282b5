"""`geosdm run PIPELINE`: run a declarative pipeline (a YAML path or a name in pipelines/)."""

from __future__ import annotations

from typing import Any

import typer


def print_event(step: str, message: str, data: dict[str, Any]) -> None:
    """Print one pipeline event (the library itself never prints)."""
    from rich.console import Console

    Console().print(f"[bold cyan]{step:>7}[/bold cyan]  {message}")


def run(
    pipeline: str = typer.Argument(..., help="Pipeline YAML path or name (e.g. demo, demo-small)."),
    steps: str = typer.Option(None, "--steps", help="Comma-separated subset of steps to run."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address: tiles run on its workers."),
    workers: int = typer.Option(0, "--workers", min=0, help="Start a LocalCluster of this many worker processes."),
) -> None:
    """Run a pipeline step by step (demo -> serve -> search -> cube -> ...)."""
    from geosdm.cli._cluster import dask_client
    from geosdm.pipeline import load_pipeline, run_pipeline

    cfg = load_pipeline(pipeline)
    with dask_client(scheduler, workers) as client:
        run_pipeline(cfg, steps=tuple(steps.split(",")) if steps else None, on_event=print_event, progress=True,
                     client=client)
