"""Environmental datacubes from STAC: load, mask, composite, aggregate, write sharded Zarr v3 tile by tile."""

from __future__ import annotations

from geosdm.cube._load import solar_day_groups
from geosdm.cube.build import BuildReport, build_cube, resolve_sources
from geosdm.cube.composite import composite_periods
from geosdm.cube.config import CubeConfig, GridConfig, OutputConfig, SourceSpec
from geosdm.cube.indices import INDICES, compute_index

__all__ = [
    "BuildReport",
    "build_cube",
    "resolve_sources",
    "composite_periods",
    "CubeConfig",
    "GridConfig",
    "OutputConfig",
    "SourceSpec",
    "INDICES",
    "compute_index",
    "solar_day_groups",
]
