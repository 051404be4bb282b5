"""`geosdm evaluate run MODEL TABLE OUTPUT` (held-out metrics, calibration, truth) or `geosdm evaluate run -c FILE`.

Registered as ``app.add_typer(_evaluate.app, name="evaluate")``; the command parses arguments, builds an
:class:`~geosdm.evaluate.EvaluateConfig`, calls :func:`geosdm.evaluate.run_evaluation` and prints a summary.
"""

from __future__ import annotations

from pathlib import Path
import typer

__all__ = ["app"]

app = typer.Typer(help="Evaluate and calibrate SDMs on held-out spatial folds (and a known truth).",
                  no_args_is_help=True)


@app.command("run")
def run(
    model: str = typer.Argument(None, help="Model folder written by MultiSpeciesSDM.save."),
    table: str = typer.Argument(None, help="Training table (Parquet with records, background, covariates, fold)."),
    output: str = typer.Argument(None, help="Output folder for tables, figures and summary.json."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML EvaluateConfig (or a pipeline with `evaluate:`)."),
    section: str = typer.Option("evaluate", "--section", help="YAML section holding the config."),
    cube: str = typer.Option(None, "--cube", help="Covariate cube (missing covariates; grid for --truth)."),
    bias_cube: str = typer.Option(None, "--bias-cube", help="Where the model's bias covariates are read."),
    log_bias: bool = typer.Option(False, "--log-bias", help="Take the log of the bias covariates."),
    calibration: str = typer.Option("platt", "--calibration",
                                    help="platt, isotonic, temperature, auto (best held-out Brier) or none."),
    calibrated_model: str = typer.Option(None, "--calibrated-model", help="Save the calibrated model here."),
    detection: str = typer.Option("auto", "--detection", help="auto (repeat-visit correction) or none."),
    truth: str = typer.Option(None, "--truth", help="Truth Zarr (probability/occurrence) on the cube's grid."),
    prefit: bool = typer.Option(False, "--prefit", help="The table is held out already: no per-fold refits."),
) -> None:
    """Held-out metrics (per species, macro, micro, per fold), calibration and truth agreement; writes a report."""
    from geosdm.cli._options import validated
    from geosdm.evaluate import EvaluateConfig, run_evaluation

    if config is not None:
        cfg = EvaluateConfig.from_yaml(config, section=section)
        overrides = {k: v for k, v in {"model": model, "table": table, "output": output,
                                       "calibrated_model": calibrated_model}.items() if v}
        if overrides:
            cfg = validated(EvaluateConfig, {**cfg.model_dump(), **overrides},
                            f"evaluate configuration ({config} and arguments)")
    else:
        if not (model and table and output):
            raise typer.BadParameter("give MODEL TABLE OUTPUT, or --config FILE")
        values = dict(model=model, table=table, output=output, cube=cube, bias_cube=bias_cube, log_bias=log_bias,
                      calibration=None if calibration == "none" else calibration, calibrated_model=calibrated_model,
                      detection=detection, truth=truth, cv="prefit" if prefit else "folds")
        cfg = validated(EvaluateConfig, values, "evaluate options")
    report = run_evaluation(cfg)
    for line in report.lines():
        typer.echo(line)
    if cfg.calibrated_model and report.calibrator is not None:
        typer.echo(f"calibrated model ({report.calibrator.method}) saved to {cfg.calibrated_model}")
    typer.echo(f"report: {report.files.get('index', cfg.output)} ({report.seconds:.1f} s)")
