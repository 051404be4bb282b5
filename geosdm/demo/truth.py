"""The demo's generating model behind the estimator's prediction surface, so tools run on the truth itself.

``TrueModel`` evaluates the virtual species' true occurrence probabilities (niches, host and prey dependence)
at any covariate values and answers ``decision_function`` / ``predict_proba`` like a fitted
``MultiSpeciesSDM``: permutation importance, response curves and the like then show what a perfect model
would show, which is the reference a fitted model's explanations are scored against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from geosdm.demo._presets import get_preset
from geosdm.demo._species import VirtualSpecies, true_probabilities
from geosdm.demo.layout import DemoLayout
from geosdm.errors import MissingVariableError

__all__ = ["TrueModel"]


class _Identity:
    """Stands for the fitted models' feature encoder: the truth reads raw numeric covariates, no categories."""

    categories: dict[str, tuple[Any, ...]] = {}


class TrueModel:
    """The demo community's true model: ``decision_function`` is the cloglog of the true probability.

    Parameters
    ----------
    species
        The community, partners before consumers (``truth/species.json`` order).
    covariates
        Inputs the model declares (default: the drivers); extra ones have no effect, as for a perfect model
        given the same covariates as a fitted one.
    area_unit_m2
        The area the true probabilities are for (one truth-grid cell; ``from_layout`` reads it), so
        probabilities over other areas follow the fitted models' cloglog link: ``1 - (1 - p) ** (A / A0)``.

    Example
    -------
    >>> truth = TrueModel.from_layout("demo-output", covariates=model.feature_names_)  # doctest: +SKIP
    >>> permutation_importance(truth, cells)  # the true drivers' importance  # doctest: +SKIP
    """

    network_ = None  # the estimator's surface: no network, no series or patches, no categories
    encoder_ = _Identity()
    series_ = None
    patch_ = None
    link_ = "cloglog"

    def __init__(self, species: Sequence[VirtualSpecies], covariates: Sequence[str] | None = None, *,
                 area_unit_m2: float = 1.0) -> None:
        self.community = list(species)
        self.area_unit_m2_ = float(area_unit_m2)
        drivers = list(dict.fromkeys(d.variable for s in self.community for d in s.drivers))
        self.feature_names_ = list(dict.fromkeys(list(covariates or []) + drivers))
        self.species_ = [s.name for s in self.community]

    @classmethod
    def from_layout(cls, demo: DemoLayout | str | PathLike[str], covariates: Sequence[str] | None = None) -> TrueModel:
        """The true model of a generated demo folder (``truth/species.json``)."""
        layout = demo if isinstance(demo, DemoLayout) else DemoLayout.at(demo)
        rows = json.loads(layout.species_json.read_text())
        cell = get_preset(str(layout.region()["preset"])).target_res
        return cls([VirtualSpecies.from_dict(r) for r in rows], covariates, area_unit_m2=cell * cell)

    def _columns(self, X: pd.DataFrame | Mapping[str, Any]) -> dict[str, np.ndarray]:
        needed = sorted({d.variable for s in self.community for d in s.drivers})
        missing = [v for v in needed if v not in X]
        if missing:
            raise MissingVariableError(f"X lacks the true drivers {missing}; pass every covariate of the demo cube")
        return {v: np.asarray(X[v], dtype=np.float64) for v in needed}

    def predict_proba(self, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """True occurrence probabilities ``(n, n_species)`` at the rows of ``X``."""
        prob, _ = true_probabilities(self.community, self._columns(X))
        return np.stack([prob[s] for s in self.species_], axis=-1)

    def decision_function(self, X: pd.DataFrame | Mapping[str, Any], patches: Any = None,
                          batch_size: int | None = None) -> np.ndarray:
        """``log(-log(1 - p))``: the true log-intensity (the cloglog link of the fitted models)."""
        p = np.clip(self.predict_proba(X), 1e-12, 1 - 1e-12)
        return np.log(-np.log1p(-p))
