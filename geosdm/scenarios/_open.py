"""Overlay a scenario store on its baseline cube, and check a model against a scenario."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike
from typing import Any

import xarray as xr

from geosdm.errors import GridError, MissingVariableError

__all__ = ["ScenarioCovariateWarning", "ScenarioBaselineWarning", "open_scenario", "scenario_info",
           "check_model_scenario"]


class ScenarioCovariateWarning(UserWarning):
    """A scenario replaces covariates the model does not use: the projection ignores that part of the scenario."""


class ScenarioBaselineWarning(UserWarning):
    """A scenario store was built against another version of the baseline cube (its fingerprint differs)."""


def _open(obj: str | PathLike[str] | xr.Dataset, storage_options: dict[str, Any] | None) -> tuple[xr.Dataset, str]:
    from geosdm.io.zarr import open_cube

    if isinstance(obj, xr.Dataset):
        return obj, str(obj.encoding.get("source", "<dataset>"))
    return open_cube(str(obj), storage_options=storage_options), str(obj)


def scenario_info(scenario: xr.Dataset) -> dict[str, Any]:
    """The ``geosdm:scenario`` record of a scenario store or an overlaid cube (name, period, description,
    replaced, inputs, baseline); ``{}`` for a plain cube."""
    info = scenario.attrs.get("geosdm:scenario")
    return dict(info) if isinstance(info, dict) else {}


def open_scenario(baseline: str | PathLike[str] | xr.Dataset, scenario: str | PathLike[str] | xr.Dataset, *,
                  storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """The baseline cube with the scenario's replaced covariates swapped in, lazily (nothing is copied).

    Parameters
    ----------
    baseline
        The baseline cube (path/URL or opened Dataset).
    scenario
        A scenario store written by :func:`geosdm.scenarios.build_scenario` (path/URL or opened Dataset).

    Returns
    -------
    xr.Dataset
        Every baseline variable, the replaced ones read from the scenario store (dask chunks aligned to the
        baseline's), each with attr ``scenario``; dataset attrs ``geosdm:scenario`` (name, period, replaced, ...)
        and ``geosdm:stores`` (``{"baseline": path, "scenario": path, "replaced": [...]}``, for readers that fetch
        a tile of each store directly). Usable wherever a cube is: ``geosdm.predict.predict(model, ds)``.

    Raises
    ------
    GridError
        The scenario was built on another grid (CRS, transform or shape) than the baseline.
    MissingVariableError
        The scenario holds a variable the baseline does not have.

    Warns
    -----
    ScenarioBaselineWarning
        The scenario was built against another build of the baseline (fingerprints differ).

    Example
    -------
    >>> future = open_scenario("demo-output/cube.zarr", "demo-output/scenarios/warm2.zarr")  # doctest: +SKIP
    >>> future.attrs["geosdm:scenario"]["period"]                                            # doctest: +SKIP
    '2041-2060'
    """
    import odc.geo.xr  # noqa: F401  (registers .odc)

    base, base_path = _open(baseline, storage_options)
    scen, scen_path = _open(scenario, storage_options)
    info = scenario_info(scen)
    name = info.get("name", "scenario")
    gb, gs = base.odc.geobox, scen.odc.geobox
    if gb is None or gs is None or gb != gs:
        raise GridError(
            f"scenario {name!r} ({scen_path}) is on grid {gs} but the baseline {base_path} is on {gb}; a scenario must "
            "be built onto its baseline's grid: rebuild it against this baseline (geosdm scenario build)")
    replaced = [str(v) for v in scen.data_vars]
    if missing := [v for v in replaced if v not in base.data_vars]:
        raise MissingVariableError(
            f"scenario {name!r} ({scen_path}) replaces {missing}, which the baseline {base_path} does not have (it has "
            f"{sorted(map(str, base.data_vars))}); open it with the baseline it was built on")
    fp_built, fp_base = scen.attrs.get("geosdm:baseline_fingerprint"), base.attrs.get("geosdm:fingerprint")
    if fp_built and fp_base and fp_built != fp_base:
        warnings.warn(f"scenario {name!r} ({scen_path}) was built against another build of the baseline "
                      f"{base_path} (fingerprint {fp_built} != {fp_base}); its unchanged covariates now come from the "
                      "newer baseline. Rebuild the scenario if the baseline's grid or sources changed",
                      ScenarioBaselineWarning, stacklevel=2)
    out = base.copy()
    for v in replaced:
        new = scen[v]
        if new.chunks is not None and base[v].chunks is not None and new.chunks != base[v].chunks:
            new = new.chunk(dict(zip(base[v].dims, base[v].chunks)))
        out[v] = new.assign_attrs({**new.attrs, "scenario": name})
    out.attrs = {**base.attrs, "geosdm:scenario": info,
                 "geosdm:stores": {"baseline": base_path, "scenario": scen_path, "replaced": replaced}}
    return out


def check_model_scenario(model: Any, scenario: xr.Dataset | Sequence[str], *, name: str | None = None,
                         stacklevel: int = 2) -> list[str]:
    """Where a model meets a scenario: warn for replaced covariates the model does not use.

    Parameters
    ----------
    model
        A fitted model (anything with ``feature_names_``) or a list of its covariate names.
    scenario
        An overlaid cube from :func:`open_scenario`, a scenario store, or the list of replaced covariates.

    Returns
    -------
    The replaced covariates the model ignores (empty when it uses them all).

    Warns
    -----
    ScenarioCovariateWarning
        Some replaced covariates are not model inputs (e.g. a collinearity filter dropped bio05 but the scenario
        replaces it): their change does not reach the projection. If none is used, the projection equals the
        baseline prediction.
    """
    features = list(model) if isinstance(model, (list, tuple)) else list(getattr(model, "feature_names_", []) or [])
    if isinstance(scenario, xr.Dataset):
        info = scenario_info(scenario)
        replaced = list(info.get("replaced") or [str(v) for v in scenario.data_vars if "scenario" in scenario[v].attrs])
        name = name or info.get("name")
    else:
        replaced = list(scenario)
    ignored = [v for v in replaced if v not in features]
    if ignored:
        used = [v for v in replaced if v in features]
        what = ("none of them is a model input, so the projection equals the baseline prediction" if not used
                else f"only {used} reach the projection")
        warnings.warn(f"scenario {name or '?'!r} replaces {ignored}, which the model does not use ({what}); refit with "
                      "them among the covariates (train.prefer_covariates) if their change matters",
                      ScenarioCovariateWarning, stacklevel=stacklevel)
    return ignored
