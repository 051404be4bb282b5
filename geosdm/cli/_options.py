"""Option types and parsers shared by several sub-commands (one definition each)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, TypeVar

import typer
from pydantic import BaseModel

__all__ = ["Dtype", "json_option", "print_outputs", "validated"]

M = TypeVar("M", bound=BaseModel)


class Dtype(str, Enum):
    """Storage of probability layers: uint8 (0-250, 255 nodata), float16 or float32."""

    uint8 = "uint8"
    float16 = "float16"
    float32 = "float32"


def json_option(text: str | None, what: str) -> dict[str, Any] | None:
    """A JSON-object option (e.g. ``--storage-options``), None when not given; a clear error otherwise."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"{what} must be a JSON object, e.g. '{{\"key\": \"...\"}}' ({err})") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{what} must be a JSON object")
    return value


def print_outputs(console: Any, report: Any, output: str) -> None:
    """The tail of a step's summary: its COGs (invalid ones in red), its STAC Collection and its duration."""
    if report.cogs:
        bad = [c.path for c in report.cogs if c.valid is False]
        warn = f" [red]invalid: {bad}[/red]" if bad else ""
        console.print(f"COGs: {len(report.cogs)} in {output.rstrip('/')}/cogs{warn}")
    if report.stac:
        console.print(f"STAC: {report.stac.collection}")
    console.print(f"done in {report.seconds:.1f} s")


def validated(cls: type[M], values: dict[str, Any], what: str) -> M:
    """``cls`` validated from a command's arguments (and overrides of a configuration file's values).

    Raises
    ------
    InputError
        A value does not validate: one line per bad key, with the value given (pydantic's ValidationError would
        end the command with a traceback).
    """
    from pydantic import ValidationError

    from geosdm.errors import InputError

    try:
        return cls.model_validate(values)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"]) or "<config>"
            got = "" if e["type"] == "missing" else f" (got {_short(e.get('input'))})"
            problems.append(f"`{loc}`: {e['msg']}{got}")
        raise InputError(f"invalid {what}: " + "; ".join(problems) + "; fix the option or the configuration file "
                         "(--help lists the options)") from None


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
