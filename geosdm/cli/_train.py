"""`geosdm train ...`: fit a multi-species SDM from a YAML ``TrainConfig`` and describe saved models.

    geosdm train -c train.yaml [--output DIR] [--epochs N] [--seed N] [--max-correlation 0.7]
    geosdm train fit train.yaml                                       # the same
    geosdm train info DIR                                             # species, covariates, training summary

Each command loads the configuration, calls one library function (:func:`geosdm.models.train_from_config`)
and prints a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["app"]

app = typer.Typer(help="Train multi-species deep SDMs from a YAML TrainConfig.", no_args_is_help=True)

SECTION_OPT = typer.Option("train", "--section", help="YAML section holding the config (pipelines: train).")
OUTPUT_OPT = typer.Option(None, "--output", "-o", help="Override the output model folder.")
EPOCHS_OPT = typer.Option(None, "--epochs", help="Override model.epochs.")
SEED_OPT = typer.Option(None, "--seed", help="Override model.seed.")
MAXCORR_OPT = typer.Option(None, "--max-correlation", min=0.0, max=1.0,
                           help="Drop collinear covariates first: keep |r| below this (0.7 is usual; 1 keeps all).")


def _run(config: Path, section: str, output: str | None, epochs: int | None, seed: int | None,
         max_correlation: float | None = None) -> None:
    from geosdm.cli._options import validated
    from geosdm.models import TrainConfig, train_from_config

    cfg = TrainConfig.from_yaml(config, section=section)
    model_over: dict[str, Any] = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
    update: dict[str, Any] = {"model": {**cfg.model, **model_over}}
    if output:
        update["output"] = output
    if max_correlation is not None:
        update["max_correlation"] = None if max_correlation >= 1 else max_correlation
    cfg = validated(TrainConfig, {**cfg.model_dump(), **update}, f"train configuration ({config} and options)")
    model = train_from_config(cfg)
    _summary(model, cfg.output)


def _summary(model: Any, output: str) -> None:
    t = model.training_
    typer.echo(
        f"model {output}: {len(model.species_)} species, {len(model.feature_names_)} covariates, "
        f"{model.n_sites_} sites ({model.n_dropped_nan_} dropped for NaN covariates); "
        f"data sets {[d['name'] for d in model.datasets_]}; best epoch {t.best_epoch} of {t.epochs_run}"
        f"{' (early stop)' if t.stopped_early else ''}; fit {model.fit_seconds_:.1f} s"
    )
    from geosdm.records import CovariateSelection

    selection = CovariateSelection.load(output)
    if selection is not None:
        typer.echo(f"collinearity filter: {selection.summary()}")


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", "-c", help="YAML TrainConfig (or a pipeline with `train:`)."),
    section: str = SECTION_OPT,
    output: str = OUTPUT_OPT,
    epochs: int = EPOCHS_OPT,
    seed: int = SEED_OPT,
    max_correlation: float = MAXCORR_OPT,
) -> None:
    """Fit a model from ``--config`` and save it (safetensors + JSON) to the configured output folder."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(code=0)
    _run(config, section, output, epochs, seed, max_correlation)


@app.command("fit")
def fit(
    config: Path = typer.Argument(..., help="YAML TrainConfig (or a pipeline with `train:`)."),
    section: str = SECTION_OPT,
    output: str = OUTPUT_OPT,
    epochs: int = EPOCHS_OPT,
    seed: int = SEED_OPT,
    max_correlation: float = MAXCORR_OPT,
) -> None:
    """Fit a model from CONFIG and save it (same as ``geosdm train -c CONFIG``)."""
    _run(config, section, output, epochs, seed, max_correlation)


@app.command("info")
def info(model_dir: Path = typer.Argument(..., help="A model folder written by MultiSpeciesSDM.save.")) -> None:
    """Describe a saved model: species, covariates, data sets, training."""
    from geosdm.models import load_model

    model = load_model(model_dir)
    _summary(model, str(model_dir))
    typer.echo(f"network {model.network} / loss {model.loss}; covariates {model.feature_names_}")
    typer.echo(f"species {model.species_}")
