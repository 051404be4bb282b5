"""`geosdm cube build`: build a covariate cube from a YAML configuration."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build environmental datacubes from STAC sources.", no_args_is_help=True)


@app.command("build")
def build(
    config: Path = typer.Argument(..., help="Pipeline or cube YAML (a `cube:` section, or the cube config itself)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://...) to run tiles on."),
    workers: int = typer.Option(0, "--workers", help="Start a LocalCluster with this many worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing output instead of resuming it."),
    backend: str = typer.Option(None, "--backend", help="Override the loader: odc or stackstac."),
) -> None:
    """Build (or resume) the cube; prints the report."""
    from rich.console import Console

    from geosdm.cli._cluster import dask_client
    from geosdm.cube import CubeConfig, build_cube

    cfg = CubeConfig.from_yaml(config)
    if backend:
        cfg = cfg.model_copy(update={"backend": backend})
    with dask_client(scheduler, workers) as client:
        report = build_cube(cfg, client=client, progress=True, overwrite=overwrite)
    console = Console()
    console.print(f"[bold]cube[/bold] {report.path}: {len(report.variables)} variables, {report.n_tiles} tiles "
                  f"({report.n_skipped} resumed) in {report.seconds:.1f} s")
    if report.failures:
        console.print(f"[yellow]items left out after failed reads:[/yellow] {report.failures}")
    for src, gaps in report.gap_fraction.items():
        bad = {p: round(v, 3) for p, v in gaps.items() if v > 0}
        if bad:
            console.print(f"[yellow]gaps (no clear observation) in {src}:[/yellow] {bad}")
