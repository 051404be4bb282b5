"""`geosdm explain run MODEL CUBE TABLE OUTPUT` (importance, response curves, attribution + MESS maps, figures)
and `geosdm explain importance MODEL TABLE` (a quick ranking printed as a table).

Registered as ``app.add_typer(_explain.app, name="explain")``; each command parses arguments, calls one library
function (:func:`geosdm.explain.run_explain`, :func:`geosdm.explain.permutation_importance`) and prints a summary.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(help="Explain a fitted model: variable importance, response curves, attribution and MESS maps.",
                  no_args_is_help=True)


class Scoring(str, Enum):
    correlation = "correlation"
    mse = "mse"
    auc = "auc"


class Scale(str, Enum):
    probability = "probability"
    log_intensity = "log_intensity"


class Method(str, Enum):
    integrated_gradients = "integrated_gradients"
    gradient_x_input = "gradient_x_input"


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def _regions(text: str | None) -> str | float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


@app.command("run")
def run(
    model: Path = typer.Argument(..., help="Model folder written by MultiSpeciesSDM.save."),
    cube: str = typer.Argument(..., help="Covariate cube: Zarr path or s3:// URL."),
    table: str = typer.Argument(..., help="Training table (Parquet) the model was fitted on."),
    output: str = typer.Argument(..., help="Output folder (CSV tables, attribution.zarr, mess.zarr, figures/)."),
    species: str = typer.Option(None, "--species", help="Comma-separated species to explain (default: all)."),
    attribution_species: str = typer.Option(
        None, "--attribution-species", help="Comma-separated species to map attributions for (default: --species)."),
    scoring: Scoring = typer.Option(Scoring.correlation, "--scoring", help="Permutation importance score."),
    scale: Scale = typer.Option(Scale.log_intensity, "--scale",
                                help="Score permutations on the log-intensity or the presence probability."),
    area: float = typer.Option(None, "--area", help="m² of the scored probabilities with --scale probability (default: the model's unit)."),
    repeats: int = typer.Option(5, "--repeats", help="Permutations per variable."),
    points: int = typer.Option(5000, "--points", help="Evaluation sites sampled from the table."),
    regions: str = typer.Option(None, "--regions",
                                help="Polygons file (GeoJSON...) or block side in CRS units (default: tiles)."),
    region_field: str = typer.Option(None, "--region-field", help="Region name column of the polygons."),
    method: Method = typer.Option(Method.integrated_gradients, "--method", help="Attribution method."),
    steps: int = typer.Option(32, "--steps", help="Integrated-gradients steps."),
    attribution: bool = typer.Option(True, "--attribution/--no-attribution", help="Write attribution maps."),
    mess: bool = typer.Option(True, "--mess/--no-mess", help="Write the MESS extrapolation map."),
    cogs: bool = typer.Option(True, "--cogs/--no-cogs", help="Export COGs of the maps."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Save PNG figures."),
    tile: int = typer.Option(0, "--tile", help="Tile (= shard) side in cells (default: the cube's shards)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://...) to run tiles on."),
    workers: int = typer.Option(0, "--workers", help="Start a LocalCluster with this many worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite the stores instead of resuming them."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Compute importance, response curves, attribution and MESS maps; prints what was found and written."""
    from rich.console import Console

    from geosdm.cli._cluster import dask_client
    from geosdm.cli._options import validated
    from geosdm.explain import ExplainConfig, run_explain

    cfg = validated(ExplainConfig, dict(
        model=str(model), cube=cube, table=table, output=output, species=_names(species),
        attribution_species=_names(attribution_species), scoring=scoring.value, scale=scale.value, area=area,
        n_repeats=repeats, n_points=points,
        regions=_regions(regions), region_field=region_field, method=method.value, steps=steps,
        attribution=attribution, mess=mess, cogs=cogs, stac=cogs, figures=figures,
        tile_shape=(tile, tile) if tile else None,
    ), "explain options")
    with dask_client(scheduler, workers) as client:
        report = run_explain(cfg, client=client, progress=progress, overwrite=overwrite)
    console = Console()
    for s, top in list(report.top_variables.items())[:10]:
        groups = report.top_groups.get(s)
        console.print(f"[bold]{s}[/bold]: {', '.join(top)}" + (f"  (groups: {', '.join(groups)})" if groups else ""))
    if len(report.top_variables) > 10:
        console.print(f"... {len(report.top_variables) - 10} more species in {report.files.get('importance')}")
    if report.attribution:
        a = report.attribution
        console.print(f"attribution {a.path}: {a.layers} maps, {a.n_tiles} tiles ({a.n_resumed} resumed)"
                      + (f", completeness error {report.completeness_error:.2%}" if report.completeness_error is not None
                         else ""))
    if report.mess:
        console.print(f"MESS {report.mess.path}: {report.extrapolated_fraction:.1%} of valid cells outside the "
                      "training range")
    console.print(f"tables: {', '.join(sorted(report.files))}; {len(report.figures)} figures; {len(report.cogs)} COGs")
    console.print(f"done in {report.seconds:.1f} s")


@app.command("importance")
def importance(
    model: Path = typer.Argument(..., help="Model folder written by MultiSpeciesSDM.save."),
    table: str = typer.Argument(..., help="Table (Parquet) with the model's covariates, e.g. the training table."),
    species: str = typer.Option(None, "--species", help="Comma-separated species (default: all)."),
    groups: bool = typer.Option(False, "--groups", help="Score variable groups by source instead of variables."),
    scoring: Scoring = typer.Option(Scoring.correlation, "--scoring", help="Permutation importance score."),
    scale: Scale = typer.Option(Scale.log_intensity, "--scale",
                                help="Score permutations on the log-intensity or the presence probability."),
    area: float = typer.Option(None, "--area", help="m² of the scored probabilities with --scale probability (default: the model's unit)."),
    repeats: int = typer.Option(5, "--repeats", help="Permutations per variable."),
    points: int = typer.Option(5000, "--points", help="Evaluation rows sampled from the table."),
    top: int = typer.Option(5, "--top", help="Variables shown per species."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the permutations."),
) -> None:
    """Print the most important variables of each species (mean ± sd over repeats)."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from geosdm.explain import labels_from_records, permutation_importance
    from geosdm.models import load_model

    m = load_model(model)
    frame = pd.read_parquet(table)
    if scoring is not Scoring.auc:
        frame = frame.drop_duplicates(subset=[c for c in ("x", "y", "crs") if c in frame.columns] or None)
    frame = frame.sample(n=min(points, len(frame)), random_state=seed)
    y = labels_from_records(frame, m.species_) if scoring is Scoring.auc else None
    imp = permutation_importance(m, frame, species=list(_names(species) or m.species_),
                                 groups="auto" if groups else None, scoring=scoring.value, scale=scale.value, area=area,
                                 y=y, n_repeats=repeats,
                                 seed=seed)
    out = Table(title=f"permutation importance ({scoring.value} of the {scale.value.replace('_', '-')}, {repeats} repeats, {len(frame)} points)")
    out.add_column("species")
    out.add_column("top variables (mean ± sd)")
    mean, sd = imp["importance_mean"], imp["importance_std"]
    for s in imp["species"].values:
        order = mean.sel(species=s).to_series().sort_values(ascending=False).index[:top]
        out.add_row(str(s), ", ".join(f"{v} {float(mean.sel(species=s, variable=v)):.3f}±"
                                      f"{float(sd.sel(species=s, variable=v)):.3f}" for v in order))
    Console().print(out)
