"""Explanations of fitted SDMs at point, pixel and region scale: which covariates drive each species, how it
responds to them, where, and where the model extrapolates.

Typical use::

    from geosdm.explain import (permutation_importance, response_curves, attribution_cube, mess,
                                reference_from, aggregate_regions)
    imp = permutation_importance(model, sites, groups="auto", n_repeats=10)   # species x variable x repeat
    rc = response_curves(model, sites, species=["plant_01"])                  # PD + ICE, training range marked
    attr = attribution_cube(model, "cube.zarr", species=["plant_01"])         # lazy (variable, y, x) per species
    ext = mess(reference_from(table, model.feature_names_, model=model), "cube.zarr")   # lazy MESS (y, x)
    per_block = aggregate_regions(attr, 5_000)                                # lazy mean |attribution| per block

Lazy layers are written with :func:`geosdm.io.write_layers` like predictions; :func:`run_explain` does the
whole step from an :class:`ExplainConfig`. Importing this package does not import torch or matplotlib.
"""

from __future__ import annotations

from geosdm.explain.attribution import METHODS, attribute, attribution_cube, attribution_species
from geosdm.explain.extrapolation import Reference, mess, mess_points, reference_from
from geosdm.explain.importance import (
    SCORINGS,
    composition_groups,
    correlated_groups,
    labels_from_records,
    permutation_importance,
    top_variables,
    variable_groups,
)
from geosdm.explain.plots import covariate_units, plot_attribution, plot_importance, plot_mess, plot_response
from geosdm.explain.regions import aggregate_regions, point_regions, read_regions, region_raster
from geosdm.explain.response import on_manifold_inputs, response_curves, training_ranges
from geosdm.explain.run import ExplainConfig, ExplainReport, run_explain

__all__ = [
    "METHODS",
    "SCORINGS",
    "ExplainConfig",
    "ExplainReport",
    "Reference",
    "aggregate_regions",
    "attribute",
    "attribution_cube",
    "attribution_species",
    "composition_groups",
    "correlated_groups",
    "labels_from_records",
    "mess",
    "mess_points",
    "on_manifold_inputs",
    "permutation_importance",
    "plot_attribution",
    "plot_importance",
    "covariate_units",
    "plot_mess",
    "plot_response",
    "point_regions",
    "read_regions",
    "reference_from",
    "region_raster",
    "response_curves",
    "run_explain",
    "top_variables",
    "training_ranges",
    "variable_groups",
]
