"""Survey sites and held-out predictions: the data calibration, survey metrics and interval models are fitted on.

:func:`survey_sites` groups the presence/absence rows of a records table into sites (plots) with their visits and
detections; :func:`held_out_predictions` predicts every site (and presence-only/background point) with a model
that did not see its spatial fold. On those held-out predictions: :func:`fit_held_out` fits a calibration map
(:mod:`geosdm.models.calibrators`), :func:`cross_fitted` calibrates each fold with a map fitted on the others,
:func:`select_method` picks the method by held-out Brier score, and :func:`fit_error_model` fits the interval
model (:class:`geosdm.models.intervals.ErrorModel`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from geosdm.errors import InputError, NotFittedError
from geosdm.models.calibrators import (
    METHODS,
    Method,
    SpeciesCalibrator,
    detection_probability,
    fit_calibrator,
    inverse_link,
)
from geosdm.models.intervals import ErrorModel, error_model_from_surveys

if TYPE_CHECKING:  # annotations only: the estimator does not import this module
    from geosdm.models.estimator import MultiSpeciesSDM

__all__ = ["HeldOut", "SurveySites", "cross_fitted", "fit_error_model", "fit_held_out", "held_out_predictions",
           "select_method", "survey_sites"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- survey sites
@dataclass
class SurveySites:
    """Presence/absence survey rows of a records table grouped into sites (plots).

    Attributes
    ----------
    frame
        One row per site: ``site`` (dataset|plot), ``dataset``, ``fold``, ``area_m2`` (surveyed area of one
        visit), ``x``, ``y``, and the table's other columns (covariates) from the site's first row.
    visits, detections
        ``(sites, species)`` number of visits and of visits that detected the species (0 visits = not surveyed).
    """

    frame: pd.DataFrame
    visits: pd.DataFrame
    detections: pd.DataFrame

    @property
    def observed(self) -> pd.DataFrame:
        """1 when any visit detected the species, 0 when none did, NaN when not surveyed."""
        return (self.detections > 0).astype("float64").where(self.visits > 0)

    def detectability(self, detection: Mapping[str, float]) -> pd.DataFrame:
        """``1 - (1 - d)^V`` per site and species (1 for species without an estimate)."""
        d = pd.Series({s: detection.get(str(s), 1.0) for s in self.visits.columns}, dtype="float64").fillna(1.0)
        v = self.visits.to_numpy(dtype="float64")
        out = 1.0 - (1.0 - d.to_numpy()[None, :]) ** np.maximum(v, 1.0)
        return pd.DataFrame(out, index=self.visits.index, columns=self.visits.columns)

    def detection(self, *, prior_visits: float = 10.0) -> dict[str, float]:
        """Per-visit detection probability per species from the repeat visits (:func:`detection_probability`),
        shrunk towards the estimate pooled over species by a Beta prior worth ``prior_visits`` visits; empty
        when no plot with a detection was visited twice (detection not identifiable)."""
        pooled = detection_probability(self.visits.to_numpy().ravel(), self.detections.to_numpy().ravel())
        if not np.isfinite(pooled):
            return {}
        return {str(s): detection_probability(self.visits[s], self.detections[s], prior=(pooled, prior_visits))
                for s in self.visits.columns}


def survey_sites(table: pd.DataFrame, *, species: Sequence[str] | None = None) -> SurveySites:
    """Group the ``presence_absence`` rows of a records table (one row per species, plot and visit) into sites.

    Sites are keyed by ``dataset`` and ``plot_id`` (else coordinates); a site's fold, area and covariates come
    from its first row.

    Raises
    ------
    InputError
        The table has no presence/absence rows.

    Example
    -------
    >>> sites = survey_sites(pd.read_parquet("records/training.parquet"))  # doctest: +SKIP
    """
    if "kind" not in table.columns:
        raise InputError("records table lacks the 'kind' column; build it with geosdm.records.training_table")
    pa = table[table["kind"].astype(str) == "presence_absence"]
    if pa.empty:
        raise InputError("records table has no presence_absence rows; calibration and survey metrics need "
                         "presence/absence surveys (kind='presence_absence')")
    pa = pa.reset_index(drop=True)
    dataset = pa["dataset"].astype("string").fillna("survey") if "dataset" in pa.columns else pd.Series(
        "survey", index=pa.index, dtype="string")
    if "plot_id" in pa.columns:
        loc = pa["plot_id"].astype("string")
        xy = pa["x"].astype(str) + "_" + pa["y"].astype(str)
        loc = loc.where(loc.notna(), xy)
    else:
        loc = pa["x"].astype(str) + "_" + pa["y"].astype(str)
    key = (dataset + "|" + loc).astype(str)
    names = list(species) if species is not None else sorted(map(str, pd.unique(pa["species"].dropna())))
    sp = pa["species"].astype(str)
    keep = sp.isin(names)
    det = (pa["value"].to_numpy(dtype="float64", na_value=np.nan) > 0).astype("float64")
    long = pd.DataFrame({"site": key[keep], "species": sp[keep], "visit": 1.0, "det": det[keep.to_numpy()]})
    visits = long.pivot_table(index="site", columns="species", values="visit", aggfunc="sum", fill_value=0.0)
    dets = long.pivot_table(index="site", columns="species", values="det", aggfunc="sum", fill_value=0.0)
    visits = visits.reindex(columns=names, fill_value=0.0)
    dets = dets.reindex(index=visits.index, columns=names, fill_value=0.0)
    first = pa.assign(site=key).drop_duplicates("site").set_index("site").loc[visits.index]
    area = (first["plot_area_m2"].to_numpy(dtype="float64", na_value=np.nan) if "plot_area_m2" in first.columns
            else np.full(len(first), np.nan))
    frame = first.drop(columns=[c for c in ("species", "value", "kind", "plot_area_m2", "dataset")
                                if c in first.columns])
    frame.insert(0, "dataset", dataset.groupby(key).first().loc[visits.index].to_numpy())
    frame.insert(1, "area_m2", area)
    frame = frame.reset_index()
    visits.index = dets.index = frame.index
    visits.columns.name = dets.columns.name = None
    return SurveySites(frame, visits, dets)


# ---------------------------------------------------------------------------------------- held-out folds
@dataclass
class HeldOut:
    """Predictions at presence/absence sites (and presence-only/background points) from models that did not
    see those sites' fold.

    Attributes
    ----------
    sites
        :class:`SurveySites` of the table's surveys.
    probability
        ``(sites, species)`` uncalibrated presence probability over each site's surveyed area (one visit).
    presence
        Presence-only records of held-out folds: ``species``, ``fold``, ``score`` (probability over the model's
        unit area, the score of the Boyce index).
    background
        Background points of held-out folds: ``fold`` and one score column per species.
    folds
        Per fold: ``fold``, ``n_train_rows``, ``n_sites``, ``fit_seconds``.
    link, species
        The model's link and species.
    """

    sites: SurveySites
    probability: pd.DataFrame
    presence: pd.DataFrame
    background: pd.DataFrame
    folds: pd.DataFrame
    link: str
    species: list[str]

    @property
    def observed(self) -> pd.DataFrame:
        return self.sites.observed

    @property
    def fold(self) -> pd.Series:
        """Fold of each survey site (NaN when the table had no ``fold`` column)."""
        frame = self.sites.frame
        return frame["fold"] if "fold" in frame.columns else pd.Series(np.nan, index=frame.index)


def _check_fitted(model: Any) -> None:
    if not hasattr(model, "network_"):
        raise NotFittedError(f"{type(model).__name__} is not fitted; fit it first or use cv='folds'")


def _probability(model: MultiSpeciesSDM, X: pd.DataFrame, area: np.ndarray | None, species: Sequence[str],
                 cube: Any) -> pd.DataFrame:
    """Uncalibrated probability of ``model`` at ``X``'s rows over ``area`` (m², NaN = model unit)."""
    f = model.predict(X, log=True, cube=cube).reindex(columns=list(species))
    eta = f.to_numpy(dtype="float64")
    if model.link_ == "cloglog" and area is not None:
        a = np.where(np.isfinite(area) & (area > 0), area, model.area_unit_m2_)
        eta = eta + np.log(a / float(model.area_unit_m2_))[:, None]
    return pd.DataFrame(inverse_link(eta, model.link_), index=X.index, columns=list(species))


def held_out_predictions(model: MultiSpeciesSDM, table: pd.DataFrame, *, cube: Any = None,
                         fold_column: str = "fold", cv: Literal["folds", "prefit"] = "folds") -> HeldOut:
    """Out-of-fold predictions: for each fold of ``table[fold_column]``, a clone of ``model`` fitted on the other
    folds predicts that fold's survey sites, presence-only records and background points.

    Parameters
    ----------
    model
        A ``MultiSpeciesSDM`` (fitted or not; its parameters are cloned, with its species when fitted).
    table
        Training table (records + background + covariates + ``fold``), e.g. ``records/training.parquet``.
    cube
        Covariate cube for covariates missing from the table (and patch networks).
    cv
        ``"folds"``: one refit per fold (cost: one fit per fold). ``"prefit"``: ``model`` (fitted) predicts every
        row of ``table``, which must then be held out from its training data.

    Example
    -------
    >>> held = held_out_predictions(MultiSpeciesSDM(loss="integrated", epochs=30), table)  # doctest: +SKIP
    """
    import time

    from sklearn.base import clone

    if cv not in ("folds", "prefit"):
        raise InputError(f"cv={cv!r} must be 'folds' (refit per fold) or 'prefit' (table held out already)")
    sites = survey_sites(table, species=getattr(model, "species_", None))
    species = list(model.species_) if hasattr(model, "species_") else list(sites.visits.columns)
    if list(sites.visits.columns) != species:
        sites = survey_sites(table, species=species)
    kind = table["kind"].astype(str)
    if cv == "prefit":
        _check_fitted(model)
        groups: list[Any] = [None]
    else:
        if fold_column not in table.columns or table[fold_column].isna().all():
            raise InputError(f"table lacks fold labels in {fold_column!r}; build it with "
                             "geosdm.records.training_table (spatial folds) or add_folds, or pass cv='prefit'")
        groups = sorted(pd.unique(table.loc[kind == "presence_absence", fold_column].dropna()))
        if len(groups) < 2:
            raise InputError(f"the survey rows fall in {len(groups)} fold(s) of {fold_column!r}; held-out "
                             "calibration needs at least 2 folds with surveys")
    site_fold = sites.frame[fold_column].to_numpy() if fold_column in sites.frame.columns else None
    prob = pd.DataFrame(np.nan, index=sites.frame.index, columns=species)
    presence, background, info = [], [], []
    for k in groups:
        t0 = time.perf_counter()
        if k is None:
            m = model
            train_rows = 0
            sel_sites = np.ones(len(sites.frame), dtype=bool)
            test = table
        else:
            params: dict[str, Any] = {}
            if hasattr(model, "species_"):  # the fitted model's species and covariates, not the fold's or cube's
                params["species"] = species
                if model.get_params().get("covariates") is None:
                    params["covariates"] = list(model.feature_names_)
            m = clone(model).set_params(**params)
            train = table[table[fold_column] != k]
            m.fit(train, cube=cube)
            train_rows = len(train)
            sel_sites = site_fold == k
            test = table[table[fold_column] == k]
        fit_s = time.perf_counter() - t0
        if sel_sites.any():
            X = sites.frame[sel_sites]
            prob.loc[sel_sites] = _probability(m, X, X["area_m2"].to_numpy(dtype="float64"), species, cube).to_numpy()
        tkind = test["kind"].astype(str)
        po = test[tkind == "presence_only"]
        if len(po):
            p = _probability(m, po, None, species, cube)
            col = po["species"].astype(str).map({s: i for i, s in enumerate(species)})
            ok = col.notna().to_numpy()
            score = np.full(len(po), np.nan)
            score[ok] = p.to_numpy()[np.flatnonzero(ok), col[ok].astype(int).to_numpy()]
            presence.append(pd.DataFrame({"species": po["species"].astype(str).to_numpy(), "fold": k,
                                          "score": score}))
        bg = test[tkind == "background"]
        if len(bg):
            background.append(_probability(m, bg, None, species, cube).assign(fold=k).reset_index(drop=True))
        info.append({"fold": k, "n_train_rows": train_rows, "n_sites": int(sel_sites.sum()),
                     "fit_seconds": round(fit_s, 3)})
        log.info("held-out fold %s: %d survey sites (%.1f s)", k, int(sel_sites.sum()), fit_s)
    po_frame = pd.concat(presence, ignore_index=True) if presence else pd.DataFrame(columns=["species", "fold", "score"])
    bg_frame = pd.concat(background, ignore_index=True) if background else pd.DataFrame(columns=[*species, "fold"])
    link = getattr(model, "link_", "logit" if getattr(model, "loss", "") == "bce" else "cloglog")
    return HeldOut(sites, prob, po_frame, bg_frame, pd.DataFrame(info), link, species)


def cross_fitted(held_out: HeldOut, *, method: str = "platt", detection: str = "auto", per_species: bool = True,
                 min_presences: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-fitted calibrated probabilities of held-out survey sites: fold ``k`` is calibrated by a map fitted
    on the other folds' held-out predictions (so the map never saw the sites it calibrates).

    Returns
    -------
    (calibrated, detection_scale)
        ``(sites, species)`` calibrated probabilities (occupancy when detection-corrected) and the matching
        probability of a detection in each site's survey (``delta * p``), comparable with the observations.

    Raises
    ------
    InputError
        Held-out sites in fewer than two folds.

    Example
    -------
    >>> p, p_detect = cross_fitted(held_out_predictions(model, table), method="platt")  # doctest: +SKIP
    """
    folds = held_out.fold.to_numpy()
    labels = sorted(pd.unique(folds[pd.notna(folds)]))
    if len(labels) < 2:
        raise InputError("cross-fitted calibration needs held-out survey sites in at least two folds; use a "
                         "table with spatial folds (geosdm.records.training_table)")
    cal = pd.DataFrame(np.nan, index=held_out.probability.index, columns=held_out.probability.columns)
    det = cal.copy()
    for k in labels:
        test = folds == k
        c = fit_held_out(held_out, method=method, detection=detection,  # type: ignore[arg-type]
                         per_species=per_species, min_presences=min_presences, rows=~test)
        p = c.transform(held_out.probability[test].to_numpy(dtype="float64"), axis=-1)
        cal.loc[test] = p
        delta = held_out.sites.detectability(c.detection).to_numpy()[test] if c.detection else 1.0
        det.loc[test] = p * delta
    return cal, det


def select_method(held_out: HeldOut, *, methods: Sequence[str] = ("platt", "isotonic", "temperature"),
                  detection: str = "auto", per_species: bool = True,
                  min_presences: int = 5) -> tuple[str, dict[str, float]]:
    """The calibration method with the lowest cross-fitted held-out Brier score against the survey detections
    (a proper score; no truth needed), and every method's score.

    Example
    -------
    >>> best, scores = select_method(held_out_predictions(model, table))  # doctest: +SKIP
    """
    obs = held_out.observed.to_numpy(dtype="float64")
    scores = {}
    for m in methods:
        if m not in METHODS:
            raise InputError(f"methods has {m!r}; choose among {list(METHODS)}")
        _, det = cross_fitted(held_out, method=m, detection=detection, per_species=per_species,
                              min_presences=min_presences)
        d = det.to_numpy(dtype="float64")
        ok = np.isfinite(obs) & np.isfinite(d)
        scores[m] = float(np.mean((d[ok] - obs[ok]) ** 2))
    best = min(scores, key=scores.__getitem__)
    log.info("calibration method by held-out Brier score: %s (%s)", best, {k: round(v, 5) for k, v in scores.items()})
    return best, scores


def fit_held_out(held_out: HeldOut, *, method: Method = "platt", link: str | None = None,
                 detection: Literal["auto", "none"] = "auto", per_species: bool = True, min_presences: int = 5,
                 rows: np.ndarray | None = None) -> SpeciesCalibrator:
    """Fit a calibrator on held-out predictions (optionally on a subset of site ``rows``, e.g. other folds)."""
    if detection not in ("auto", "none"):
        raise InputError(f"detection={detection!r} must be 'auto' (repeat-visit correction) or 'none'")
    sites, prob = held_out.sites, held_out.probability
    if rows is not None:
        keep = np.asarray(rows, dtype=bool)
        sites = SurveySites(sites.frame[keep], sites.visits[keep], sites.detections[keep])
        prob = prob[keep]
    obs = sites.observed
    d = _detection(sites, detection)
    delta = sites.detectability(d) if any(v < 1 for v in d.values()) else None
    return fit_calibrator(prob, obs, method=method, link=link or held_out.link, detectability=delta,
                          per_species=per_species, min_presences=min_presences,
                          detection={s: v for s, v in d.items() if np.isfinite(v)})


def _detection(sites: SurveySites, detection: str) -> dict[str, float]:
    if detection == "none":
        return {}
    d = sites.detection()
    if not d:
        log.info("calibration: no plot with a detection was visited twice; detection assumed perfect")
    return d


def fit_error_model(held_out: HeldOut, *, method: str = "platt", detection: str = "auto", per_species: bool = True,
                    min_presences: int = 5, max_distance: float | None = None, min_pairs: int = 30,
                    n_boot: int = 200, seed: int = 0) -> ErrorModel:
    """Estimate the Beta error model's precision from held-out surveys (neighbouring plots' residual products).

    Parameters
    ----------
    held_out
        :func:`held_out_predictions` of the model (spatial folds).
    method, detection, per_species, min_presences
        The calibration, as :func:`geosdm.models.calibration.calibrate` fits it (the residuals are those of the
        cross-fitted calibrated probabilities).
    max_distance
        Largest distance of a plot pair, in the records' CRS units (default: twice the median distance from a
        plot to its nearest neighbour).
    min_pairs
        Fewer pairs: ``InputError`` (the surveys cannot pin the precision).
    n_boot, seed
        Bootstrap of the pairs for ``precision_range``.

    Example
    -------
    >>> em = fit_error_model(held_out_predictions(model, table))  # doctest: +SKIP
    >>> em.interval(model.predict_proba(points).to_numpy())  # doctest: +SKIP
    """
    p, det = cross_fitted(held_out, method=method, detection=detection, per_species=per_species,
                          min_presences=min_presences)
    p_arr, d_arr = p.to_numpy(dtype="float64"), det.to_numpy(dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        D = np.where(p_arr > 0, d_arr / p_arr, np.nan)  # detectability of each site's survey
    return error_model_from_surveys(held_out.sites.frame[["x", "y"]].to_numpy(dtype="float64"),
                                    held_out.observed.to_numpy(dtype="float64"), p_arr, D,
                                    max_distance=max_distance, min_pairs=min_pairs, n_boot=n_boot, seed=seed,
                                    species=[str(s) for s in p.columns])
