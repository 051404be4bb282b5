"""`geosdm scenario build`: build the scenario cubes of a pipeline (its `scenarios:` section) onto the baseline cube."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Scenario cubes: future covariates on the baseline cube's grid.", no_args_is_help=True)


@app.command("build")
def build(
    config: Path = typer.Argument(..., help="Pipeline YAML with a `scenarios:` section (or the section itself)."),
    name: list[str] = typer.Option(None, "--name", "-n", help="Build only this scenario (repeatable)."),
    baseline: str = typer.Option(None, "--baseline", help="Baseline cube (default: scenarios.baseline, else the "
                                                          "pipeline's cube output)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://...) to run tiles on."),
    workers: int = typer.Option(0, "--workers", help="Start a LocalCluster with this many worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete existing scenario stores instead of resuming."),
) -> None:
    """Build (or resume) each scenario store; prints what each replaced."""
    from rich.console import Console

    from geosdm.cli._cluster import dask_client
    from geosdm.scenarios import ScenariosConfig, build_scenarios

    cfg = ScenariosConfig.from_yaml(config)
    base = baseline or cfg.baseline
    if base is None:
        from geosdm.cube import CubeConfig

        base = CubeConfig.from_yaml(config).output.path
    with dask_client(scheduler, workers) as client:
        reports = build_scenarios(cfg, baseline=base, names=list(name) if name else None, client=client,
                                  progress=True, overwrite=overwrite)
    console = Console()
    for n, r in reports.items():
        console.print(f"[bold]scenario[/bold] {n} ({r.period}) {r.path}: {len(r.variables)} covariates replaced "
                      f"{r.sources}, {r.n_tiles} tiles ({r.n_skipped} resumed) in {r.seconds:.1f} s")
