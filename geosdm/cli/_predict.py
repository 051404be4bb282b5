"""`geosdm predict run MODEL CUBE OUTPUT` (Zarr + COGs + STAC) or `geosdm predict run -c FILE`, and
`geosdm predict cogs STORE OUT_DIR`.

Registered by the lead as ``app.add_typer(_predict.app, name="predict")``; each command parses arguments,
calls one library function (:func:`geosdm.predict.run_prediction`, :func:`geosdm.predict.export_cogs`) and
prints a summary.
"""

from __future__ import annotations

from pathlib import Path

import typer

from geosdm.cli._options import Dtype, json_option, print_outputs, validated

__all__ = ["app"]

app = typer.Typer(help="Predict species distributions over a covariate cube (Zarr + COGs + STAC).",
                  no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    model: str = typer.Argument(None, help="Model folder written by MultiSpeciesSDM.save."),
    cube: str = typer.Argument(None, help="Covariate cube: Zarr path or s3:// URL."),
    output: str = typer.Argument(None, help="Output folder or s3:// prefix (probability.zarr, cogs/, stac/)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML PredictConfig (or a pipeline with `predict:`); "
                                "arguments and options given on the command line override its values."),
    section: str = typer.Option("predict", "--section", help="YAML section holding the config."),
    dtype: Dtype = typer.Option(Dtype.uint8, "--dtype", help="Stored as uint8 (0-250), float16, float32."),
    area: float = typer.Option(None, "--area", help="Area in m2 of the probabilities (default: the model's unit)."),
    log_intensity: bool = typer.Option(False, "--log-intensity", help="Also write log relative intensities."),
    tile: int = typer.Option(0, "--tile", help="Tile (= shard) side in cells (default: the cube's shards)."),
    cogs: bool = typer.Option(True, "--cogs/--no-cogs", help="Export COGs (per species and multi-band)."),
    multiband: bool = typer.Option(True, "--multiband/--no-multiband", help="Also write one multi-band COG."),
    species: str = typer.Option(None, "--species", help="Comma-separated species to export as COGs (default: all)."),
    stac: bool = typer.Option(True, "--stac/--no-stac", help="Write STAC Items and a Collection."),
    collection: str = typer.Option("geosdm-predictions", "--collection", help="STAC Collection id."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://...) to run tiles on."),
    workers: int = typer.Option(0, "--workers", help="Start a LocalCluster with this many worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite the cube instead of resuming it."),
    storage_options: str = typer.Option(None, "--storage-options", help="JSON fsspec options for the output."),
    cube_storage_options: str = typer.Option(None, "--cube-storage-options", help="JSON fsspec options for the cube."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Write (or resume) the probability cube, then COGs and STAC; prints what was written."""
    from click.core import ParameterSource
    from rich.console import Console

    from geosdm.cli._cluster import dask_client
    from geosdm.predict import PredictConfig, run_prediction

    values = {
        "model": model, "cube": cube, "output": output, "dtype": dtype.value, "area": area,
        "log_intensity": log_intensity, "tile_shape": (tile, tile) if tile else None, "cogs": cogs,
        "multiband": multiband,
        "species": tuple(s.strip() for s in species.split(",") if s.strip()) if species else None, "stac": stac,
        "collection_id": collection, "storage_options": json_option(storage_options, "--storage-options"),
        "cube_storage_options": json_option(cube_storage_options, "--cube-storage-options"),
    }
    if config is not None:
        params = {"dtype": "dtype", "area": "area", "log_intensity": "log_intensity", "tile_shape": "tile",
                  "cogs": "cogs", "multiband": "multiband", "species": "species", "stac": "stac",
                  "collection_id": "collection", "storage_options": "storage_options",
                  "cube_storage_options": "cube_storage_options"}
        given = {k: v for k, v in values.items()
                 if (k in ("model", "cube", "output") and v is not None)
                 or (k in params and ctx.get_parameter_source(params[k]) == ParameterSource.COMMANDLINE)}
        cfg = PredictConfig.from_yaml(config, section=section)
        cfg = validated(PredictConfig, {**cfg.model_dump(), **given}, f"predict configuration ({config} and options)")
    else:
        if not (model and cube and output):
            raise typer.BadParameter("give MODEL CUBE OUTPUT, or --config FILE")
        cfg = validated(PredictConfig, values, "predict options")
    output = cfg.output
    with dask_client(scheduler, workers) as client:
        report = run_prediction(cfg, client=client, progress=progress, overwrite=overwrite)
    w = report.write
    console = Console()
    console.print(f"[bold]predictions[/bold] {w.path}: {w.species} species, {w.n_tiles} tiles ({w.n_resumed} resumed, "
                  f"{w.n_empty} without valid cells), valid fraction {w.valid_fraction:.3f}, model {w.model_hash}")
    print_outputs(console, report, output)


@app.command("cogs")
def cogs_command(
    store: str = typer.Argument(..., help="Prediction store (probability.zarr) written by `geosdm predict run`."),
    out_dir: str = typer.Argument(..., help="Folder or s3:// prefix for the COGs."),
    variable: str = typer.Option("probability", "--variable", help="probability or log_intensity."),
    layers: str = typer.Option(None, "--layers", "--species",
                               help="Comma-separated layer labels, e.g. species (default: all)."),
    multiband: bool = typer.Option(True, "--multiband/--no-multiband", help="Also write one multi-band COG."),
    storage_options: str = typer.Option(None, "--storage-options", help="JSON fsspec options for store and output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Export COGs (one per layer, e.g. species, plus one multi-band) from an existing prediction or layer store."""
    from rich.console import Console

    from geosdm.predict import export_cogs

    outs = export_cogs(store, out_dir, variable=variable, multiband=multiband,
                       layers=[s.strip() for s in layers.split(",") if s.strip()] if layers else None,
                       storage_options=json_option(storage_options, "--storage-options"), progress=progress)
    bad = [c.path for c in outs if c.valid is False]
    Console().print(f"COGs: {len(outs)} in {out_dir}" + (f" [red]invalid: {bad}[/red]" if bad else ""))
