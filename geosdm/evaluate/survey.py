"""Evaluation on held-out data: presence/absence surveys (per species, macro, micro, per fold; top-K F1),
presence-only records (Boyce index), before and after calibration.

The inputs are :class:`geosdm.models.calibration.HeldOut` predictions: each survey site, presence-only record and
background point is predicted by a model that was not fitted on its spatial fold. Calibrated probabilities are
*cross-fitted*: the calibrator applied to fold ``k`` is fitted on the held-out predictions of the other folds,
so calibration is evaluated on data it never saw either.

Survey observations are detections, so calibration metrics compare them with the probability of *detecting*
the species: ``delta * p`` with ``delta = 1 - (1 - d)^V`` (``d``: the calibrator's per-visit detection
probability, ``V``: the site's visits) when the calibration targets occupancy; ``p`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geosdm.evaluate.reliability import reliability_curve
from geosdm.evaluate.tables import boyce_table, species_metrics, top_k_table

__all__ = ["SurveyEvaluation", "cross_calibrated", "evaluate_held_out"]


@dataclass
class SurveyEvaluation:
    """Metric tables of held-out predictions.

    Attributes
    ----------
    species
        :func:`~geosdm.evaluate.tables.species_metrics` rows with a ``probability`` column (``"raw"`` or
        ``"calibrated"``).
    top_k
        Samples-averaged F1 of the top-K species per site (``probability``, ``fold``, ``k``, ``f1``).
    boyce
        Continuous Boyce index of presence-only records against background points per species and fold.
    reliability
        Pooled reliability curves against the observed detections, one per ``probability`` kind.
    calibration
        Method of the cross-fitted calibration (None: raw only).
    """

    species: pd.DataFrame
    top_k: pd.DataFrame
    boyce: pd.DataFrame
    reliability: dict[str, pd.DataFrame] = field(default_factory=dict)
    calibration: str | None = None

    def headline(self) -> dict[str, Any]:
        """Macro means over species (all folds pooled) per probability kind, top-K F1 and mean Boyce index."""
        out: dict[str, Any] = {}
        sel = self.species[(self.species["fold"] == "all") & (self.species["species"] == "macro")]
        for _, row in sel.iterrows():
            out[str(row["probability"])] = {k: (None if pd.isna(row[k]) else round(float(row[k]), 4))
                                            for k in ("roc_auc", "pr_auc", "tss_max", "brier", "log_loss", "ece")}
        tk = self.top_k[self.top_k["fold"] == "all"]
        out["f1_top_k"] = {f"{p}@{int(k)}": round(float(f), 4) for p, k, f in
                           zip(tk["probability"], tk["k"], tk["f1"]) if np.isfinite(f)}
        b = self.boyce[(self.boyce["fold"] == "all") & (self.boyce["species"] == "macro")]["boyce"]
        out["boyce_macro"] = round(float(b.iloc[0]), 4) if len(b) and np.isfinite(b.iloc[0]) else None
        return out


def cross_calibrated(held_out: Any, *, method: str = "platt", detection: str = "auto", per_species: bool = True,
                     min_presences: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-fitted calibrated probabilities of held-out survey sites (fold ``k`` calibrated by a map fitted on
    the other folds): :func:`geosdm.models.calibration.cross_fitted`.

    Returns
    -------
    (calibrated, detection_scale)
        Calibrated probabilities and the matching probability of a detection in each site's survey.

    Example
    -------
    >>> p, p_detect = cross_calibrated(held, method="platt")  # doctest: +SKIP
    """
    from geosdm.models.calibration import cross_fitted

    return cross_fitted(held_out, method=method, detection=detection, per_species=per_species,
                        min_presences=min_presences)


def evaluate_held_out(held_out: Any, *, calibration: str | None = "platt", detection: str = "auto",
                      per_species: bool = True, min_presences: int = 5, top_k: Sequence[int] = (1, 5, 10, 25),
                      n_bins: int = 10) -> SurveyEvaluation:
    """Metrics of held-out predictions before and (cross-fitted) after calibration.

    Parameters
    ----------
    held_out
        :func:`geosdm.models.calibration.held_out_predictions` of the model.
    calibration
        Calibration method to evaluate (``"platt"``, ``"isotonic"``, ``"temperature"``; ``"auto"``: the one
        :func:`geosdm.models.calibration.select_method` picks on these held-out sites, which makes the
        calibrated figures slightly optimistic; None: raw only).
    detection, per_species, min_presences
        As for :func:`geosdm.models.calibration.calibrate`.
    top_k
        ``K`` values of the top-K F1.
    n_bins
        Bins of the ECE and reliability curves.

    Example
    -------
    >>> ev = evaluate_held_out(held_out_predictions(model, table), calibration="isotonic")  # doctest: +SKIP
    >>> ev.headline()  # doctest: +SKIP
    """
    obs = held_out.observed
    folds = held_out.fold.to_numpy()
    kinds: dict[str, pd.DataFrame] = {"raw": held_out.probability}
    if calibration == "auto":
        from geosdm.models.calibration import select_method

        calibration, _ = select_method(held_out, detection=detection, per_species=per_species,
                                       min_presences=min_presences)
    if calibration:
        _, kinds["calibrated"] = cross_calibrated(held_out, method=calibration, detection=detection,
                                                  per_species=per_species, min_presences=min_presences)
    tables, tops, curves = [], [], {}
    for name, prob in kinds.items():
        tables.append(species_metrics(obs, prob, folds=folds, n_bins=n_bins).assign(probability=name))
        tops.append(top_k_table(obs, prob, k=top_k, folds=folds).assign(probability=name))
        curves[name] = reliability_curve(obs.to_numpy().ravel(), prob.to_numpy().ravel(), n_bins=n_bins)
    boyce = (boyce_table(held_out.presence, held_out.background, species=held_out.species)
             if len(held_out.presence) and len(held_out.background) else
             pd.DataFrame(columns=["fold", "species", "boyce", "n_presence"]))
    species = pd.concat(tables, ignore_index=True)
    species.insert(0, "probability", species.pop("probability"))
    tk = pd.concat(tops, ignore_index=True)
    tk.insert(0, "probability", tk.pop("probability"))
    return SurveyEvaluation(species, tk, boyce, curves, calibration)
