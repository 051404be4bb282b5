"""Read configuration files: the one YAML reader and the one ``${VAR}`` substitution of every config loader.

Pipelines (:func:`geosdm.pipeline.load_pipeline`), source definitions (:func:`geosdm.sources.load_source`)
and the step configurations read from a file of their own or a pipeline's section (``CubeConfig``,
``TrainConfig``, ``EvaluateConfig``, ``PredictConfig``, ``ExplainConfig``, ``InteractionsConfig``
``.from_yaml``, so ``geosdm cube build pipelines/demo.yaml`` and ``geosdm train -c pipelines/demo.yaml``) all
read through :func:`read_yaml` and :func:`substitute_env`: ``${VAR}`` is the variable's value (an error naming
the file, key and variable when it is not set), ``${VAR:-default}`` falls back to ``default`` (which may be
empty) when it is not set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from geosdm.errors import InputError

__all__ = ["model_from_yaml", "read_yaml", "substitute_env"]

M = TypeVar("M", bound=BaseModel)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, env: Mapping[str, str] | None = None, *, origin: str = "<config>",
                   key: str = "") -> Any:
    """``value`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string of a nested dict/list.

    Parameters
    ----------
    value
        A YAML value (mapping, list, scalar); keys and non-string scalars are kept as they are.
    env
        The variables (default: ``os.environ``).
    origin
        Where the value comes from (a file), named in errors.
    key
        The dotted key of ``value`` in that file (e.g. ``train`` for a pipeline's section), named in errors.

    Raises
    ------
    InputError
        A ``${VAR}`` without default is not set; the message names the file, the key and the variable.

    Examples
    --------
    >>> substitute_env({"out": "${OUT:-demo-output}/cube.zarr", "n": 3}, {})
    {'out': 'demo-output/cube.zarr', 'n': 3}
    >>> substitute_env(["${OUT}/m"], {"OUT": "/data"})
    ['/data/m']
    """
    env = os.environ if env is None else env

    def repl(m: re.Match[str], path: str) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        raise InputError(
            f"{origin}: `{path or '<top>'}` refers to environment variable {var!r}, which is not set; set "
            f"it (export {var}=...) or give a default in the file (${{{var}:-default}})"
        )

    return map_strings(value, lambda v, path: _ENV_RE.sub(lambda m: repl(m, path), v), key)


def map_strings(value: Any, func: Any, path: str = "") -> Any:
    """``value`` (nested mappings and lists, as read from YAML) with every string ``s`` replaced by
    ``func(s, path)``, ``path`` being its dotted key (``train.model``, ``inputs[0]``) for error messages."""
    if isinstance(value, str):
        return func(value, path)
    if isinstance(value, Mapping):
        return {k: map_strings(x, func, f"{path}.{k}" if path else str(k)) for k, x in value.items()}
    if isinstance(value, list):
        return [map_strings(x, func, f"{path}[{i}]") for i, x in enumerate(value)]
    return value


def read_yaml(path: str | PathLike[str], *, what: str = "configuration", substitute: bool = True,
              env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (``yaml.safe_load``: no Python objects); an empty file is ``{}``.

    ``${VAR}`` / ``${VAR:-default}`` are substituted from ``env`` (default: the environment) by
    :func:`substitute_env` unless ``substitute=False`` (a caller that substitutes a part of the file, or after
    merging overrides, calls :func:`substitute_env` itself).

    Raises
    ------
    InputError
        The file is not UTF-8 text, not valid YAML (the message gives the file, line and column), its top
        level is not a mapping of keys, or it refers to an unset ``${VAR}`` without default.
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
    return substitute_env(raw, env, origin=str(p)) if substitute else raw


def model_from_yaml(cls: type[M], path: str | PathLike[str], *, section: str | None, what: str,
                    env: Mapping[str, str] | None = None) -> M:
    """``cls`` validated from ``path``: its ``section`` when present (a pipeline file), else the whole file.

    ``${VAR}`` / ``${VAR:-default}`` placeholders of the part read are substituted from the environment first,
    as for pipelines (so ``geosdm cube build pipelines/nsw.yaml`` reads the same paths as ``geosdm run nsw``);
    an unset variable in another section of a pipeline does not matter here.

    Raises
    ------
    InputError
        The file is missing, refers to an unset ``${VAR}`` without default, or its content does not validate
        (the message lists every bad key).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} configuration {str(p)!r} does not exist")
    raw: Any = read_yaml(p, what=f"{what} configuration", substitute=False)
    key = ""
    if section and section in raw:
        raw, key = raw[section], section
    raw = substitute_env(raw, env, origin=str(p), key=key)
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise InputError(f"invalid {what} configuration in {str(p)!r}:\n{err}") from None
