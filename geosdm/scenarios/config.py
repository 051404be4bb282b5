"""Scenario configuration: named futures, each replacing some covariates of a baseline cube from its own sources."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geosdm.errors import InputError

__all__ = ["ScenarioInput", "ScenarioConfig", "ScenariosConfig", "check_period", "expand_variables"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PERIOD = re.compile(r"(\d{4})-(\d{4})")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_period(period: str, *, what: str = "scenario") -> tuple[int, int]:
    """``(start, end)`` years of a ``YYYY-YYYY`` period, or :class:`InputError` naming the input and the fix.

    >>> check_period("2041-2070")
    (2041, 2070)
    """
    m = _PERIOD.fullmatch(str(period).strip())
    if not m:
        raise InputError(f"{what}: period {period!r} is not a year range; write it as start-end, e.g. '2041-2060' "
                         "(WorldClim CMIP6) or '2041-2070' (CHELSA)")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise InputError(f"{what}: period {period!r} ends before it starts; write start-end, e.g. '{end}-{start}'")
    if not 1850 <= start <= 2300 or not 1850 <= end <= 2300:
        raise InputError(f"{what}: period {period!r} lies outside 1850-2300 (CMIP6 historical + projections); "
                         "check the years")
    return start, end


def expand_variables(patterns: tuple[str, ...], names: list[str]) -> list[str]:
    """Names matching each pattern (``fnmatch``: ``bio*``, ``lc_?``), in pattern order; a pattern without wildcard is
    kept as is (so an unknown name is reported by the caller, not silently dropped)."""
    out: list[str] = []
    for p in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, p)] if any(c in p for c in "*?[") else [p]
        out += [h for h in hits if h not in out]
    return out


class ScenarioInput(_Frozen):
    """One source of a scenario and the covariates it replaces.

    ``source``: a name in ``catalogs/``, a YAML path, or an inline definition (as in ``cube.sources``).
    ``parameters``: values of a parameterised source (``gcm``, ``ssp``, ``period``...; see
    :func:`geosdm.sources.fill_parameters`); a source that declares ``period`` gets the scenario's period unless
    given here. ``variables``: the covariates replaced (names or ``fnmatch`` patterns such as ``bio*``, ``lc_*``);
    default: every covariate this input yields that the baseline has. ``derive: bioclim`` computes bio01..bio19
    from a monthly composite (``period: month``) of the source's ``monthly`` bands (tmin, tmax in degC, prec in
    mm / month), tile by tile, after they are put on the grid. ``url``/``catalog``/``datetime``/
    ``working_resolution``/``assets``/``mask_buffer`` are as in a cube source (:class:`geosdm.cube.SourceSpec`).
    """

    source: str | dict[str, Any]
    parameters: dict[str, str] = Field(default_factory=dict)
    variables: tuple[str, ...] | None = None
    derive: Literal["bioclim"] | None = None
    monthly: dict[Literal["tmin", "tmax", "prec"], str] = Field(
        default_factory=lambda: {"tmin": "tmin", "tmax": "tmax", "prec": "prec"})
    url: str | None = None
    catalog: str | None = None
    datetime: str | None = None
    working_resolution: float | None = Field(default=None, gt=0)
    assets: tuple[str, ...] | None = None
    mask_buffer: int = Field(default=1, ge=0)

    @field_validator("parameters", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else v

    @property
    def label(self) -> str:
        return self.source if isinstance(self.source, str) else str(self.source.get("name", "<inline source>"))

    def resolved(self, period: str) -> dict[str, Any]:
        """The source definition with ``${VAR}`` and ``{parameter}`` templates filled (the scenario's period given
        to a source that declares ``period``), as an inline mapping for :class:`geosdm.cube.SourceSpec`."""
        from geosdm._yaml import read_yaml, substitute_env
        from geosdm.sources import fill_parameters, find_source

        if isinstance(self.source, str):
            path = find_source(self.source)
            raw = read_yaml(path, what="source definition", substitute=False) or {}
            raw.setdefault("name", path.stem)
            origin = str(path)
        else:
            raw = dict(self.source)
            raw.setdefault("name", "inline")
            origin = f"inline source {raw['name']!r}"
        params = dict(self.parameters)
        if "period" in (raw.get("parameters") or {}) and "period" not in params:
            params["period"] = period
        raw = fill_parameters(raw, params, origin=origin)
        if self.url:
            raw["url"] = self.url
        return substitute_env(raw, None, origin=origin)


class ScenarioConfig(_Frozen):
    """One future: its period (``YYYY-YYYY``), a description, and the inputs that replace baseline covariates."""

    period: str
    description: str = ""
    replace: tuple[ScenarioInput, ...]
    check_values: bool = True  # refuse replaced values far off the baseline's (Kelvin for degC, unscaled integers)

    @model_validator(mode="after")
    def _check(self) -> ScenarioConfig:
        check_period(self.period)
        if not self.replace:
            raise ValueError("`replace` is empty; list at least one input (source + the covariates it replaces)")
        derived = [i for i in self.replace if i.derive]
        if any(i.assets for i in derived):
            raise ValueError("`assets` with `derive:` would drop monthly bands the derivation needs; leave it out")
        return self


class ScenariosConfig(_Frozen):
    """The pipeline's ``scenarios:`` section: the baseline cube, where scenario stores go, and the futures.

    Each scenario ``<name>`` is written to ``<output>/<name>.zarr`` holding only its replaced covariates, on the
    baseline's grid and tiles; :func:`geosdm.scenarios.open_scenario` overlays them on the baseline.
    """

    baseline: str | None = None  # default: the pipeline's cube output
    output: str
    futures: dict[str, ScenarioConfig]
    storage_options: dict[str, Any] | None = None
    backend: Literal["odc", "stackstac"] = "odc"
    retries: int = Field(default=3, ge=0)
    threads: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ScenariosConfig:
        if not self.futures:
            raise ValueError("`futures` is empty; declare at least one scenario (name: {period, replace})")
        if bad := [n for n in self.futures if not _NAME.fullmatch(n)]:
            raise ValueError(f"scenario names {bad} must be letters, digits, '_', '-', '.' (they name stores)")
        return self

    def path(self, name: str) -> str:
        """The store of scenario ``name``: ``<output>/<name>.zarr``."""
        if name not in self.futures:
            raise InputError(f"no scenario named {name!r}; the configuration declares {list(self.futures)}")
        return f"{self.output.rstrip('/')}/{name}.zarr"

    @classmethod
    def from_yaml(cls, path: str | Path, *, section: str | None = "scenarios") -> ScenariosConfig:
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="scenarios")
