"""Option types and parsers shared by several sub-commands (one definition each)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import typer

__all__ = ["Dtype", "json_option", "print_outputs"]


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
