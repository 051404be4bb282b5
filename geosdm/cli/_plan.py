"""`geosdm plan PIPELINE`: what a pipeline's tile-based steps will do, before running them."""

from __future__ import annotations

from pathlib import Path

import typer


def plan(
    pipeline: str = typer.Argument(..., help="Pipeline YAML path or name (e.g. france, demo)."),
    calibrate: int = typer.Option(0, "--calibrate", min=0, help="Tiles to run per stage to project wall time."),
    species: int = typer.Option(None, "--species", min=1, help="Species to predict when no model exists yet."),
    workers: str = typer.Option(None, "--workers", help="Comma-separated worker counts to project, e.g. 1,16,64."),
    json_out: Path = typer.Option(None, "--json", help="Also write the plan as JSON to this file ('-': stdout)."),
) -> None:
    """Plan a pipeline: grid, tiles, objects, bytes, Dask tasks and memory per step; wall time with --calibrate."""
    from rich.console import Console

    from geosdm.planning import plan as make_plan

    counts = tuple(int(w) for w in workers.split(",")) if workers else None
    result = make_plan(pipeline, calibrate=calibrate, species=species, workers=counts)
    console = Console()
    console.print(result.table())
    for s in result.steps:
        for a in s.assumptions:
            console.print(f"[dim]{s.step}: assumed {a}[/dim]")
    if json_out is not None:
        text = result.to_json()
        if str(json_out) == "-":
            print(text)
        else:
            json_out.write_text(text)
            console.print(f"plan written to {json_out}")
