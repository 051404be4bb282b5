"""Load a configuration model from a YAML file (a pipeline section or a file of its own), validated once."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from geosdm.errors import InputError

__all__ = ["model_from_yaml", "read_yaml"]

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | PathLike[str], *, what: str = "configuration") -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``yaml.safe_load``: no Python objects); an empty file is ``{}``.

    Raises
    ------
    InputError
        The file is not UTF-8 text, not valid YAML (the message gives the file, line and column), or its top
        level is not a mapping of keys.
    """
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{what} {str(p)!r} is not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                         "UTF-8") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{what} {str(p)!r} is not valid YAML{at}: {problem}; fix the syntax there") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{what} {str(p)!r} holds a {type(raw).__name__}, not a mapping of keys")
    return raw


def model_from_yaml(cls: type[M], path: str | PathLike[str], *, section: str | None, what: str) -> M:
    """``cls`` validated from ``path``: its ``section`` when present (a pipeline file), else the whole file.

    ``${VAR}`` / ``${VAR:-default}`` placeholders are substituted from the environment first, as for pipelines
    (so ``geosdm cube build pipelines/nsw.yaml`` reads the same paths as ``geosdm run nsw``).

    Raises
    ------
    InputError
        The file is missing or its content does not validate (the message lists every bad key).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} configuration {str(p)!r} does not exist")
    from geosdm.sources import substitute_env

    raw = substitute_env(read_yaml(p, what=f"{what} configuration"), origin=str(p))
    if section and section in raw:
        raw = raw[section]
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"invalid {what} configuration in {str(p)!r}:\n{err}") from None
