"""`geosdm demo ...`: generate the offline demo region, or run the main job on it."""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(help="Generate the offline demo region and run the main job on it.", no_args_is_help=True)


@app.command("generate")
def generate(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder."),
    preset: str = typer.Option("default", "--preset", help="small (tests, seconds) or default (the demo)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Regenerate even if the folder exists."),
) -> None:
    """Write the demo region (COGs, STAC, records, network, truth)."""
    from rich.console import Console

    from geosdm.demo import generate as _generate

    layout = _generate(out, preset=preset, seed=seed, overwrite=overwrite)
    region = layout.region()
    Console().print(f"demo {preset!r} in {layout.root}: {region['n_items']}, {region['n_species']} species")


@app.command("run")
def run(
    out: Path = typer.Option(Path("demo-output"), "--out", help="Output folder."),
    preset: str = typer.Option("default", "--preset", help="small or default."),
) -> None:
    """The main job on the demo region: pipelines/demo.yaml (or demo-small.yaml) with GEOSDM_DEMO_DIR=OUT."""
    from geosdm.cli._run import print_event
    from geosdm.pipeline import load_pipeline, run_pipeline

    name = "demo" if preset == "default" else f"demo-{preset}"
    # the catalogs the steps load (demo-cmip6-bioclim, ...) substitute ${GEOSDM_DEMO_DIR} from the process's
    # environment when they are read, not from the pipeline's: set it for the whole run
    os.environ["GEOSDM_DEMO_DIR"] = str(out)
    cfg = load_pipeline(name, env=dict(os.environ))
    run_pipeline(cfg, on_event=print_event, progress=True)
