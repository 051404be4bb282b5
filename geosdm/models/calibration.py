"""Probability calibration of multi-species SDMs on held-out presence/absence surveys.

A ``MultiSpeciesSDM`` turns its intensity into a presence probability over an area with the cloglog link
(:func:`intensity_to_probability`). Those probabilities are only as good as the model: finite training,
early stopping, observer bias and imperfect detection in the surveys all bend them. :func:`calibrate` fits a
per-species map from the model's probability to an observed one, on survey plots the model was *not* fitted on
(the table's spatial ``fold`` column: one model per fold predicts the plots of that fold), stores it on the
model as ``calibrator_`` (saved with it as JSON, no pickle) and :meth:`MultiSpeciesSDM.predict_proba` and
:func:`geosdm.predict.predict` apply it.

The methods (``"platt"``, ``"temperature"``, ``"isotonic"``, ``"auto"``) and the imperfect-detection model are
described in :mod:`geosdm.models.calibrators`, where they are implemented.

The module layout: :mod:`geosdm.models.calibrators` holds the maps (links, :class:`SpeciesCalibrator`, fitting
and applying), :mod:`geosdm.models.heldout` the survey sites and held-out predictions they are fitted on (and the
interval model's fit); this module the :func:`calibrate` workflow, and re-exports both modules' public names.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from geosdm.errors import InputError
from geosdm.models.calibrators import (
    METHODS,
    Method,
    SpeciesCalibrator,
    apply_calibration,
    detection_probability,
    fit_calibrator,
    intensity_to_probability,
    inverse_link,
    link_function,
)
from geosdm.models.heldout import (
    HeldOut,
    SurveySites,
    cross_fitted,
    fit_error_model,
    fit_held_out,
    held_out_predictions,
    select_method,
    survey_sites,
)

if TYPE_CHECKING:  # annotations only: the estimator does not import this module
    from geosdm.models.estimator import MultiSpeciesSDM

__all__ = ["HeldOut", "METHODS", "Method", "SpeciesCalibrator", "SurveySites", "apply_calibration", "calibrate",
           "cross_fitted", "detection_probability", "fit_calibrator", "fit_error_model", "fit_held_out",
           "held_out_predictions", "intensity_to_probability", "inverse_link", "link_function", "select_method",
           "survey_sites"]

log = logging.getLogger(__name__)


def calibrate(model: MultiSpeciesSDM, table: pd.DataFrame | None = None, *, method: Method = "platt",
              cv: Literal["folds", "prefit"] = "folds", detection: Literal["auto", "none"] = "auto",
              per_species: bool = True, min_presences: int = 5, cube: Any = None,
              held_out: HeldOut | None = None, intervals: bool = True) -> MultiSpeciesSDM:
    """A copy of ``model`` whose probabilities are calibrated on held-out presence/absence surveys.

    Parameters
    ----------
    model
        A ``MultiSpeciesSDM``; fitted on ``table`` first when it is not fitted yet.
    table
        Training table with presence/absence survey rows and a spatial ``fold`` column (not needed with
        ``held_out``).
    method
        ``"platt"`` (default: two parameters per species suit the few hundred survey plots SDMs usually have),
        ``"isotonic"`` (needs more plots), ``"temperature"``, or ``"auto"``: the one with the lowest
        cross-fitted held-out Brier score (:func:`select_method`; needs surveys in two folds or more).
    cv
        ``"folds"``: held-out predictions from one refit per fold (the calibration data never trained the model
        that predicts them). ``"prefit"``: ``table`` holds surveys the fitted ``model`` never saw.
    detection
        ``"auto"``: correct for imperfect detection with per-species detection probabilities estimated from
        repeat visits (target: occupancy); ``"none"``: target the probability of detection in a survey.
    per_species, min_presences
        One map per species; species with fewer detected plots share the map fitted on all species.
    cube
        Covariate cube for covariates missing from ``table`` (and patch networks).
    held_out
        Precomputed :func:`held_out_predictions` (skips the refits).
    intervals
        Also fit the interval model of the calibrated probabilities (``calibrator_.error``,
        :func:`geosdm.models.heldout.fit_error_model`: from neighbouring held-out plots; skipped with a warning
        when the surveys have too few such pairs). :func:`geosdm.predict.predict_uncertainty` uses it.

    Returns
    -------
    MultiSpeciesSDM
        A deep copy with ``calibrator_`` set (``model`` is unchanged); ``save``/``load`` keep it and
        ``predict_proba`` / ``geosdm.predict.predict`` apply it (``calibration=False`` skips it).

    Raises
    ------
    InputError
        No survey rows, fewer than two folds with surveys, or unknown method.

    Example
    -------
    >>> calibrated = calibrate(model, table, method="platt")  # doctest: +SKIP
    >>> calibrated.save("model-calibrated/")  # doctest: +SKIP
    """
    if method not in METHODS and method != "auto":
        raise InputError(f"method={method!r} is unknown; choose one of {[*METHODS, 'auto']}")
    if detection not in ("auto", "none"):
        raise InputError(f"detection={detection!r} must be 'auto' (repeat-visit correction) or 'none'")
    fitted = hasattr(model, "network_")
    if held_out is None:
        if table is None:
            raise InputError("calibrate needs the training table (with survey rows and folds) or held_out=")
        held_out = held_out_predictions(model, table, cube=cube, cv=cv)
    out = copy.deepcopy(model)
    if not fitted:
        if table is None:
            raise InputError("model is not fitted; pass the table to fit it on")
        out.fit(table, cube=cube)
    if list(out.species_) != list(held_out.species):
        raise InputError("held_out was computed for other species than the model's; recompute it for this model")
    scores: dict[str, float] = {}
    if method == "auto":
        method, scores = select_method(held_out, detection=detection, per_species=per_species,
                                       min_presences=min_presences)
    cal = fit_held_out(held_out, method=method, link=out.link_, detection=detection, per_species=per_species,
                       min_presences=min_presences)
    cal.selection = scores
    if intervals:
        try:
            cal.error = fit_error_model(held_out, method=method, detection=detection, per_species=per_species,
                                        min_presences=min_presences)
        except InputError as err:
            log.warning("no interval model: %s", err)
    out.calibrator_ = cal
    return out
