"""What prediction needs from a fitted ``MultiSpeciesSDM``: its inputs, a stable hash, and the probability link.

Only the estimator's public surface is used (``predict``, learned attributes ending in ``_``), so a model
loaded from disk and the in-memory model it was saved from hash and predict alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np

from geosdm.errors import InputError

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM

__all__ = ["ModelInputs", "area_offset", "as_model", "model_fingerprint", "model_inputs", "model_probability", "model_summary",
           "probability_inplace"]


@dataclass(frozen=True)
class ModelInputs:
    """Cube variables a model reads: per-cell columns, patch channels (in order) and the halo patches need."""

    columns: tuple[str, ...]
    patch_variables: tuple[str, ...]
    halo: int

    @property
    def variables(self) -> tuple[str, ...]:
        """Every cube variable read, columns first (the order of the stacked block)."""
        return tuple(dict.fromkeys(self.columns + self.patch_variables))


def as_model(model: MultiSpeciesSDM | str | PathLike[str]) -> MultiSpeciesSDM:
    """A fitted model, loading a model folder (``MultiSpeciesSDM.save``) when given a path."""
    if isinstance(model, (str, PathLike)):
        from geosdm.models import load_model

        return load_model(model)
    if not hasattr(model, "network_") or not hasattr(model, "species_"):
        raise InputError(
            f"model {type(model).__name__} is not a fitted MultiSpeciesSDM; fit it first or pass a model folder "
            "written by MultiSpeciesSDM.save"
        )
    return model


def model_inputs(model: MultiSpeciesSDM) -> ModelInputs:
    """The variables ``model`` reads from a cube and the halo (``patch size // 2``) of patch networks."""
    cols = list(model.feature_names_) + [c for g in (model.series_ or []) for c in g]
    patch = getattr(model, "patch_", None)
    pvars = tuple(patch["variables"]) if patch else ()
    halo = int(patch["size"]) // 2 if patch else 0
    return ModelInputs(tuple(dict.fromkeys(cols)), pvars, halo)


def model_fingerprint(model: MultiSpeciesSDM) -> str:
    """Stable 16-hex hash of a fitted model: its weights and everything that shapes a prediction.

    Example
    -------
    >>> model_fingerprint(load_model("model/")) == model_fingerprint(model)  # doctest: +SKIP
    True
    """
    h = hashlib.sha256()
    for prefix, module in (("network", model.network_), ("loss", getattr(model, "loss_", None))):
        if module is None:
            continue
        for name, tensor in sorted(module.state_dict().items()):
            arr = tensor.detach().to("cpu").contiguous().numpy()
            h.update(f"{prefix}.{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
    h.update(json.dumps(model_summary(model), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_summary(model: MultiSpeciesSDM) -> dict[str, Any]:
    """JSON-able description of a fitted model (provenance of its outputs), with its ``calibrator_`` if any."""
    enc = getattr(model, "encoder_", None)
    summary = {
        "class": type(model).__name__,
        "network": getattr(model, "network_spec_", None),
        "loss": getattr(model, "loss", None),
        "species": list(model.species_),
        "feature_names": list(model.feature_names_),
        "encoder": enc.to_dict() if enc is not None and hasattr(enc, "to_dict") else None,
        "series": getattr(model, "series_", None),
        "patch": getattr(model, "patch_", None),
        "link": getattr(model, "link_", "cloglog"),
        "calibrated": bool(getattr(model, "calibrated_", False)),
        "area_unit_m2": float(getattr(model, "area_unit_m2_", 1.0)),
    }
    calibrator = getattr(model, "calibrator_", None)
    if calibrator is not None:  # only then: uncalibrated models keep their hash (and resumable outputs)
        summary["calibration"] = calibrator.to_dict()
    return summary


def area_offset(model: MultiSpeciesSDM, area: float | None) -> float:
    """``log(area / area_unit_m2_)``: the cloglog offset of :meth:`MultiSpeciesSDM.predict_proba` (0 for None)."""
    if area is None:
        return 0.0
    try:
        a = float(area)
    except (TypeError, ValueError):
        raise InputError(f"area={area!r} is not a number; give the area in m² (or None for the model's unit)"
                         ) from None
    if not a > 0 or not np.isfinite(a):
        raise InputError(f"area={area!r} must be a positive number of m²")
    return float(np.log(a / float(model.area_unit_m2_)))


def probability_inplace(f: np.ndarray, link: str, offset: float) -> np.ndarray:
    """Turn log-intensities ``f`` into presence probabilities in place (no temporaries); returns ``f``.

    ``cloglog``: ``1 - exp(-exp(f + offset))``; ``logit``: ``1 / (1 + exp(-f))``, the formulas of
    :meth:`MultiSpeciesSDM.predict_proba` evaluated in the same order.
    """
    if link == "logit":
        np.negative(f, out=f)
        np.exp(f, out=f)
        np.add(f, np.float32(1.0), out=f)
        return np.divide(np.float32(1.0), f, out=f)
    if offset:
        np.add(f, np.float32(offset), out=f)
    np.exp(f, out=f)
    np.negative(f, out=f)
    np.expm1(f, out=f)
    return np.negative(f, out=f)


def model_probability(model: Any, columns: Mapping[str, np.ndarray], *, area: float | None = None,
                      patches: Any = None, calibration: bool = True) -> np.ndarray:
    """Presence probabilities ``(n, n_species)`` over ``area`` m² (None: the model's unit) from covariate columns.

    The array fast path of :meth:`MultiSpeciesSDM.predict_proba`: the link with the area offset, then the
    model's ``calibrator_`` when it has one and ``calibration`` is on. Works for any object with the
    estimator's surface (``decision_function``, ``link_``, ``area_unit_m2_``), e.g. ``geosdm.demo.TrueModel``.
    """
    f = np.array(model.decision_function(columns, patches=patches), dtype=np.float32)
    p = probability_inplace(f, model.link_, area_offset(model, area) if model.link_ == "cloglog" else 0.0)
    calibrator = getattr(model, "calibrator_", None) if calibration else None
    if calibrator is not None:
        from geosdm.models.calibration import apply_calibration

        p = apply_calibration(p, calibrator)
    return p

