"""`geosdm project run PIPELINE.yaml`: project a model onto the scenario cubes of a pipeline (its `project:` and
`scenarios:` sections); prints the stores, the range changes and where the COGs and STAC went."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Projections of a model onto scenario cubes (change maps, ranges, MESS, COGs, STAC).",
                  no_args_is_help=True)


@app.command("run")
def run(
    config: Path = typer.Argument(..., help="Pipeline YAML with `project:` and `scenarios:` sections."),
    name: list[str] = typer.Option(None, "--name", "-n", help="Project only this scenario (repeatable)."),
    model: str = typer.Option(None, "--model", help="Model folder (default: project.model, else predict.model)."),
    baseline: str = typer.Option(None, "--baseline", help="Baseline cube (default: project.baseline, "
                                                          "scenarios.baseline, else the pipeline's cube)."),
    output: str = typer.Option(None, "--output", help="Output folder (default: project.output)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://...) to run tiles on."),
    workers: int = typer.Option(0, "--workers", help="Start a LocalCluster with this many worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite the stores instead of resuming them."),
) -> None:
    """Write (or resume) the projection stores, ranges, COGs and STAC Items."""
    from rich.console import Console

    from geosdm._yaml import read_yaml
    from geosdm.cli._cluster import dask_client
    from geosdm.project import ProjectConfig, run_projection
    from geosdm.scenarios import ScenariosConfig

    raw = read_yaml(config, what="pipeline") or {}
    cfg = ProjectConfig.from_yaml(config)
    scen = ScenariosConfig.from_yaml(cfg.scenarios or config)
    update = {k: v for k, v in {"model": model or cfg.model or (raw.get("predict") or {}).get("model"),
                                "baseline": baseline or cfg.baseline or scen.baseline
                                or ((raw.get("cube") or {}).get("output") or {}).get("path"),
                                "output": output, "names": tuple(name) if name else None}.items() if v}
    cfg = cfg.model_copy(update=update)
    with dask_client(scheduler, workers) as client:
        report = run_projection(cfg, scenarios=scen, client=client, progress=True, overwrite=overwrite)
    console = Console()
    s = report.summary()
    for n, w in report.stores.items():
        console.print(f"[bold]{n}[/bold] {w.path}: {w.n_tiles} tiles ({w.n_resumed} resumed), {w.layers} layers")
    console.print(f"mean range change (%): {s['mean_range_change_pct']}; mean centroid shift (m): {s['mean_shift_m']}")
    console.print(f"{s['cogs']} COGs, STAC {s['stac']}, {cfg.output}/ranges.csv in {s['seconds']:.1f} s")
