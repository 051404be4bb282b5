"""Command-line interface: a thin typer layer over library functions.

Each sub-command lives in its own private module and only parses arguments, calls one library function and
prints a summary. Nothing in the library imports this package.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

__all__ = ["app"]


class _Group(TyperGroup):
    """The top-level command group, the one place where a command's error is reported.

    geosdm's own errors (bad input, missing data, grid problems: :class:`~geosdm.errors.GeoSDMError`) end the
    command with ``error: <Type>: <message>`` on stderr and exit code 1, not a traceback; with ``-v`` the
    traceback is printed first, for bug reports. Anything else is a bug and keeps its traceback. Commands do not
    catch errors themselves: the library (or the command's argument parsing) raises a GeoSDMError whose message
    names the input and the fix.
    """

    def invoke(self, ctx: Any) -> Any:
        from geosdm.errors import GeoSDMError

        try:
            return super().invoke(ctx)
        except GeoSDMError as err:
            if ctx.params.get("verbose"):
                typer.echo(traceback.format_exc().rstrip(), err=True)
            typer.secho(f"error: {type(err).__name__}: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None


app = typer.Typer(help="geosdm: species distribution and interaction maps from STAC datacubes.", no_args_is_help=True,
                  cls=_Group)


@app.callback()
def _main(verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                      help="More log output (-v, -vv); -v also prints an error's traceback.")) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    """Attach sub-command groups; each module owns one group."""
    from geosdm.cli import (_cube, _demo, _evaluate, _explain, _interactions, _plan, _predict, _project, _records, _run,
                            _scenario, _serve, _train)

    app.add_typer(_demo.app, name="demo")
    app.add_typer(_cube.app, name="cube")
    app.add_typer(_scenario.app, name="scenario")
    app.add_typer(_records.app, name="records")
    app.add_typer(_train.app, name="train")
    app.add_typer(_predict.app, name="predict")
    app.add_typer(_evaluate.app, name="evaluate")
    app.add_typer(_explain.app, name="explain")
    app.add_typer(_interactions.app, name="interactions")
    app.add_typer(_project.app, name="project")
    app.command("serve")(_serve.serve)
    app.command("run")(_run.run)
    app.command("plan")(_plan.plan)


_register()
