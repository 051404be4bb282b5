"""Finding, reading and validating source definitions: the catalog folders, ``{parameter}`` templates,
``${VAR}`` substitution, and validation errors reworded to name the key and its allowed values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from geosdm._yaml import map_strings, substitute_env
from geosdm.errors import InputError
from geosdm.sources.schema import ParameterConfig, SourceConfig

__all__ = ["available_sources", "catalog_dirs", "fill_parameters", "find_source", "load_source", "parse_source"]


def catalog_dirs() -> list[Path]:
    """Folders searched by :func:`load_source`, in order (existing ones only)."""
    dirs = [Path(p) for p in os.environ.get("GEOSDM_CATALOGS", "").split(os.pathsep) if p]
    from geosdm.resources import shipped_dirs

    dirs += shipped_dirs("catalogs")
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def available_sources() -> list[str]:
    """Names of every source definition found in :func:`catalog_dirs` (first folder wins)."""
    names: dict[str, None] = {}
    for d in catalog_dirs():
        for f in sorted(d.glob("*.yaml")):
            names.setdefault(f.stem, None)
    return list(names)


def find_source(path_or_name: str | PathLike[str]) -> Path:
    """The YAML file of a source definition: a path (ending in ``.yaml``/``.yml`` or holding a separator) as given,
    else ``<name>.yaml`` (or ``.yml``) in the first of :func:`catalog_dirs` that has it.

    Raises
    ------
    InputError
        The file does not exist, or no catalog folder defines the name (the message lists the available ones).
    """
    s = os.fspath(path_or_name)
    if s.endswith((".yaml", ".yml")) or os.sep in s or "/" in s:
        p = Path(s).expanduser()
        if not p.is_file():
            raise InputError(f"source definition {s!r} does not exist; give an existing YAML file or a source name")
        return p
    for d in catalog_dirs():
        for ext in (".yaml", ".yml"):
            if (p := d / f"{s}{ext}").is_file():
                return p
    raise InputError(
        f"no source definition named {s!r} in {[str(d) for d in catalog_dirs()]}; available: "
        f"{available_sources()}. Give a path to a YAML file or add the folder to $GEOSDM_CATALOGS"
    )


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at the model reached by ``loc`` (the parent of an unknown key)."""
    model: Any = SourceConfig
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        for _ in range(4):  # unwrap Optional / Annotated / Mapping[str, Model]
            args = [a for a in get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            if get_origin(ann) in (Mapping, dict) or (get_origin(ann) is not None and len(args) == 2):
                ann = args[-1]
                if parts:
                    parts.pop(0)  # the mapping key
            elif args:
                ann = args[0]
        model = ann
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return None


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith(("function-", "literal["))))
        where = ".".join(str(x) for x in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f"; allowed keys here: {allowed}" if allowed else ""
            lines.append(f"  - unknown key `{where}`{hint}")
        elif e["type"] == "missing":
            lines.append(f"  - `{where}` is required but missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, (Mapping, list)) or got is None else f" (got {got!r})"
            lines.append(f"  - `{where}`: {msg}{shown}")
    return (
        f"{origin} is not a valid source definition:\n" + "\n".join(lines)
        + "\nFix these keys; catalogs/pc-sentinel-2-l2a.yaml is a complete, commented example."
    )  # fmt: skip


_TEMPLATE = re.compile(r"\{([a-z][a-z0-9_]*)(?:\|(lower|upper))?\}")


def fill_parameters(raw: Mapping[str, Any], values: Mapping[str, Any] | None = None, *,
                    origin: str = "<dict>") -> dict[str, Any]:
    """A source definition (raw mapping) with its ``{name}`` templates filled from ``values`` and defaults.

    Only definitions that declare ``parameters:`` are touched (other strings may hold braces). The filled
    values are recorded under ``parameter_values``.

    Raises
    ------
    InputError
        An unknown parameter, a value not allowed (the message lists the allowed ones), a required parameter
        not given, or a template naming an undeclared parameter.

    Examples
    --------
    >>> raw = {"parameters": {"gcm": {"values": ["MPI-ESM1-2-HR"], "default": "MPI-ESM1-2-HR"}},
    ...        "title": "{gcm} / {gcm|lower}"}
    >>> fill_parameters(raw)["title"]
    'MPI-ESM1-2-HR / mpi-esm1-2-hr'
    """
    declared = raw.get("parameters") or {}
    given = {str(k): v for k, v in dict(values or {}).items()}
    if not declared:
        if given:
            raise InputError(f"{origin} declares no `parameters:`; it takes none, got {sorted(given)}")
        return dict(raw)
    if unknown := sorted(set(given) - set(declared)):
        raise InputError(f"{origin}: unknown parameters {unknown}; this source takes {sorted(declared)}")
    filled: dict[str, str] = {}
    for name, spec_raw in declared.items():
        try:
            spec = ParameterConfig.model_validate(spec_raw)
        except ValidationError as err:
            raise InputError(_format_errors(err, f"{origin} (parameter {name!r})")) from None
        value = given.get(name, spec.default)
        if value is None:
            raise InputError(f"{origin}: parameter {name!r} is required; give it (parameters={{{name!r}: ...}})"
                             + (f", one of {list(spec.values)}" if spec.values else ""))
        try:
            filled[name] = spec.validate_value(value, name)
        except ValueError as err:
            raise InputError(f"{origin}: {err}; {spec.description or 'see the definition'}") from None

    def repl(m: re.Match[str], where: str) -> str:
        name, how = m.group(1), m.group(2)
        if name not in filled:
            raise InputError(f"{origin}: `{where}` uses template {{{name}}}, which is not a declared "
                             f"parameter {sorted(filled)}; declare it under `parameters:`")
        out = filled[name]
        return out.lower() if how == "lower" else out.upper() if how == "upper" else out

    def sub(v: Any, where: str) -> Any:
        return map_strings(v, lambda s, path: _TEMPLATE.sub(lambda m: repl(m, path), s), where)

    out = {k: (v if k == "parameters" else sub(v, k)) for k, v in raw.items()}
    out["parameter_values"] = filled
    return out


def parse_source(data: Mapping[str, Any], *, origin: str = "<dict>") -> SourceConfig:
    """Validate an already-loaded mapping (e.g. a block of a pipeline YAML) into a :class:`SourceConfig`.

    Raises
    ------
    InputError
        Every invalid or unknown key, with the allowed keys and the fix (pydantic's errors, reworded).
    """
    try:
        return SourceConfig.model_validate(data)
    except ValidationError as err:
        raise InputError(_format_errors(err, origin)) from None


def load_source(
    path_or_name: str | PathLike[str],
    *,
    url: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> SourceConfig:
    """Read, substitute and validate one source definition.

    Parameters
    ----------
    path_or_name
        A YAML path, or a name looked up as ``<name>.yaml`` in :func:`catalog_dirs`.
    url
        Replaces ``url`` (e.g. the local STAC API of the demo, ``http://127.0.0.1:7822``).
    overrides
        Nested values merged over the file before validation, e.g. ``{"max_cloud": 30}``.
    env
        Variables for ``${VAR}`` placeholders (default: ``os.environ``).
    parameters
        Values of a parameterised source's ``parameters`` (e.g. ``{"gcm": "MPI-ESM1-2-HR", "ssp": "ssp585",
        "period": "2041-2070"}`` for ``chelsa-cmip6-bioclim``); the rest take their defaults
        (:func:`fill_parameters`).

    Returns
    -------
    SourceConfig
        Frozen; ``name`` defaults to the file stem.

    Raises
    ------
    InputError
        File not found, not YAML, an unset required placeholder, or invalid keys/values (all listed).

    Examples
    --------
    >>> load_source("pc-landsat-c2-l2").assets["red"].offset
    -0.2
    """
    path = find_source(path_or_name)
    origin = str(path)
    from geosdm._yaml import read_yaml

    raw = read_yaml(path, what="source definition", substitute=False)  # after the overrides below
    if not raw:
        raise InputError(f"source definition {origin!r} is empty; see catalogs/*.yaml")
    raw.setdefault("name", path.stem)
    if overrides:
        raw = _deep_merge(raw, overrides)
    if url is not None:
        raw["url"] = url
    raw = fill_parameters(raw, parameters, origin=origin)
    return parse_source(substitute_env(raw, env, origin=origin), origin=origin)
