"""Load a configuration model from a YAML file (a pipeline section or a file of its own), validated once."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from geosdm.errors import InputError

__all__ = ["model_from_yaml"]

M = TypeVar("M", bound=BaseModel)


def model_from_yaml(cls: type[M], path: str | PathLike[str], *, section: str | None, what: str) -> M:
    """``cls`` validated from ``path``: its ``section`` when present (a pipeline file), else the whole file.

    ``${VAR}`` / ``${VAR:-default}`` placeholders are substituted from the environment first, as for pipelines
    (so ``geosdm cube build pipelines/nsw.yaml`` reads the same paths as ``geosdm run nsw``).

    Raises
    ------
    InputError
        The file is missing or its content does not validate (the message lists every bad key).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} configuration {str(p)!r} does not exist")
    from geosdm.sources import substitute_env

    raw = substitute_env(yaml.safe_load(p.read_text()) or {}, origin=str(p))
    if section and section in raw:
        raw = raw[section]
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"invalid {what} configuration in {str(p)!r}:\n{err}") from None
