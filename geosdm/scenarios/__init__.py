"""Scenario cubes: named futures that replace some covariates of a baseline cube (issue 20).

A scenario (``ScenarioConfig``: a period, a description, and inputs each replacing covariates from a source: CMIP6
bioclim COGs, a NetCDF/Zarr monthly climate projection with bioclim derived from it, a land-cover scenario raster)
is built onto the baseline cube's grid and tiles into its own store holding only the replaced covariates
(:func:`build_scenario`, resumable tile by tile). :func:`open_scenario` overlays it on the baseline lazily, giving a
cube usable wherever the baseline is; :func:`check_model_scenario` warns where a model ignores what a scenario
changes. See docs/scenarios.md.
"""

from __future__ import annotations

from geosdm.scenarios._build import ScenarioPlan, ScenarioReport, build_scenario, build_scenarios, plan_scenario
from geosdm.scenarios._open import (
    ScenarioBaselineWarning,
    ScenarioCovariateWarning,
    check_model_scenario,
    open_scenario,
    scenario_info,
)
from geosdm.scenarios.config import ScenarioConfig, ScenarioInput, ScenariosConfig, check_period, expand_variables

__all__ = [
    "ScenarioConfig",
    "ScenarioInput",
    "ScenariosConfig",
    "ScenarioPlan",
    "ScenarioReport",
    "ScenarioBaselineWarning",
    "ScenarioCovariateWarning",
    "build_scenario",
    "build_scenarios",
    "plan_scenario",
    "open_scenario",
    "scenario_info",
    "check_model_scenario",
    "check_period",
    "expand_variables",
]
