"""Projections: a fitted model onto the scenario cubes of :mod:`geosdm.scenarios` (issue 20).

:func:`project` is lazy, one Dask task per tile for the baseline and every scenario: probability per scenario
``(scenario, species, y, x)``, change from the baseline, gain / loss / stable after per-species thresholds chosen on
the baseline (:func:`baseline_thresholds`), expected richness, spread (90 % interval width), MESS and the most
dissimilar variable, and with a network pest regulation / pest pressure and their change.
:func:`run_projection` (the pipeline's ``project`` step and ``geosdm project``) writes one resumable store per
scenario, the range-size / centroid-shift table, COGs and STAC Items carrying ``geosdm:scenario``. See
docs/scenarios.md.

Example::

    from geosdm.project import project
    from geosdm.scenarios import ScenariosConfig
    proj = project("out/model", "out/cube.zarr", ScenariosConfig.from_yaml("pipelines/demo.yaml"), area=1e4)
    proj.change.sel(scenario="warm4", species="plant_01").plot()
"""

from __future__ import annotations

from geosdm.project.lazy import BASELINE, CHANGE_CLASSES, baseline_thresholds, project, scenario_stores
from geosdm.project.run import (
    ProjectConfig,
    ProjectionReport,
    ThresholdRule,
    open_projection,
    range_table,
    run_projection,
    write_projection,
)

__all__ = [
    "BASELINE",
    "CHANGE_CLASSES",
    "ProjectConfig",
    "ProjectionReport",
    "ThresholdRule",
    "baseline_thresholds",
    "open_projection",
    "project",
    "range_table",
    "run_projection",
    "scenario_stores",
    "write_projection",
]
