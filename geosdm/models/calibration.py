"""Probability calibration of multi-species SDMs on held-out presence/absence surveys.

A ``MultiSpeciesSDM`` turns its intensity into a presence probability over an area with the cloglog link
(:func:`intensity_to_probability`). Those probabilities are only as good as the model: finite training,
early stopping, observer bias and imperfect detection in the surveys all bend them. :func:`calibrate` fits a
per-species map from the model's probability to an observed one, on survey plots the model was *not* fitted on
(the table's spatial ``fold`` column: one model per fold predicts the plots of that fold), stores it on the
model as ``calibrator_`` (saved with it as JSON, no pickle) and :meth:`MultiSpeciesSDM.predict_proba` and
:func:`geosdm.predict.predict` apply it.

Methods (per species; species with fewer than ``min_presences`` detected plots share one map fitted on all
species, recorded in ``SpeciesCalibrator.fallback``; ``method="auto"`` picks the one with the lowest
cross-fitted held-out Brier score, :func:`select_method`):

* ``"platt"`` (default): ``p' = g(a * g^-1(p) + b)`` with ``g`` the model's link (cloglog or logit): a slope
  and an intercept on the link scale, fitted by maximum likelihood with a weak Gaussian prior (sd 10) on
  ``(a - 1, b)``; two parameters per species suit the few hundred survey plots SDMs usually have;
* ``"temperature"``: ``p' = g(g^-1(p) / T)``, one temperature per species;
* ``"isotonic"``: a non-decreasing step-linear map (pool-adjacent-violators; thresholds stored, evaluated by
  linear interpolation and clipped beyond the fitted range); flexible, but needs more plots and adds ties.

**Imperfect detection.** Survey visits miss species that are present. With ``detection="auto"`` and plots
surveyed more than once, each species' per-visit detection probability ``d`` is estimated from the repeat
visits (conditional maximum likelihood of the detection counts at plots where the species was detected:
``K ~ Binomial(V, d)`` given ``K >= 1``), and the calibration target is the probability that the species
*occupies* the plot: a plot detected in any of its ``V`` visits counts as evidence ``y ~ Bernoulli(delta * p')``
with detectability ``delta = 1 - (1 - d)^V``. With ``detection="none"`` (or single visits) the target is the
probability of detecting the species in the plot's survey.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from geosdm.errors import InputError, NotFittedError
from geosdm.models.intervals import ErrorModel

if TYPE_CHECKING:
    from geosdm.models.estimator import MultiSpeciesSDM

__all__ = ["HeldOut", "Method", "SpeciesCalibrator", "SurveySites", "apply_calibration", "calibrate",
           "cross_fitted", "detection_probability", "fit_calibrator", "fit_held_out", "held_out_predictions",
           "intensity_to_probability", "inverse_link", "link_function", "select_method", "survey_sites"]

log = logging.getLogger(__name__)

Method = Literal["platt", "temperature", "isotonic", "auto"]
_METHODS = ("platt", "temperature", "isotonic")
_LINKS = ("cloglog", "logit")
_EPS = 1e-12
_PRIOR_SD = 10.0


# ---------------------------------------------------------------------------------------------------- links
def intensity_to_probability(intensity: Any, *, area: Any = 1.0, area_unit: float = 1.0, log: bool = False) -> Any:
    """Presence probability over ``area`` from a Poisson intensity per ``area_unit``: ``1 - exp(-λ A / A0)``.

    The cloglog link of :meth:`MultiSpeciesSDM.predict_proba`: with ``λ`` records per ``area_unit`` m² the
    count in an area ``A`` is Poisson with mean ``λ A / A0`` and the species is present when it is >= 1.

    Parameters
    ----------
    intensity
        ``λ`` (or ``log λ`` with ``log=True``); NumPy, pandas or xarray (Dask stays lazy).
    area, area_unit
        The area of interest and the intensity's unit area, in the same units (m²).

    Example
    -------
    >>> round(float(intensity_to_probability(0.5, area=400.0, area_unit=400.0)), 4)
    0.3935
    """
    a = np.asarray(area, dtype="float64")
    if (a <= 0).any() or float(area_unit) <= 0:
        raise InputError(f"area={area!r} and area_unit={area_unit!r} must be > 0 (m²)")
    if log:
        return -np.expm1(-np.exp(intensity + np.log(a / float(area_unit))))
    return -np.expm1(-intensity * (a / float(area_unit)))


def link_function(p: np.ndarray, link: str) -> np.ndarray:
    """``g^-1(p)``: ``log(-log(1 - p))`` (cloglog) or ``log(p / (1 - p))`` (logit), ``p`` clipped away from 0/1."""
    q = np.clip(np.asarray(p, dtype="float64"), _EPS, 1.0 - _EPS)
    if link == "cloglog":
        return np.log(-np.log1p(-q))
    if link == "logit":
        return np.log(q) - np.log1p(-q)
    raise InputError(f"link={link!r} must be one of {list(_LINKS)}")


def inverse_link(z: np.ndarray, link: str) -> np.ndarray:
    """``g(z)``: ``1 - exp(-exp(z))`` (cloglog) or ``1 / (1 + exp(-z))`` (logit)."""
    z = np.asarray(z, dtype="float64")
    if link == "cloglog":
        return -np.expm1(-np.exp(np.minimum(z, 700.0)))
    if link == "logit":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    raise InputError(f"link={link!r} must be one of {list(_LINKS)}")


def _dlink(z: np.ndarray, link: str) -> np.ndarray:
    """``dg/dz``."""
    if link == "cloglog":
        zz = np.minimum(z, 700.0)
        return np.exp(zz - np.exp(zz))
    q = inverse_link(z, link)
    return q * (1.0 - q)


# ---------------------------------------------------------------------------------------------- calibrator
@dataclass
class SpeciesCalibrator:
    """A fitted per-species probability calibration (JSON-serialisable with :meth:`to_dict`).

    Attributes
    ----------
    method
        ``"platt"``, ``"temperature"`` or ``"isotonic"``.
    link
        The model's link (``"cloglog"`` or ``"logit"``) used by Platt/temperature.
    species
        Species in the model's order.
    params
        Per species: ``{"a", "b"}`` (platt), ``{"t"}`` (temperature), ``{"x", "y"}`` (isotonic thresholds on the
        probability scale), or ``{}`` (identity: the species had no survey data).
    detection
        Per-visit detection probability per species used as the detectability correction (1 = none).
    fallback
        Species calibrated with the map shared by all species (too few detected plots of their own).
    n_sites, n_presences
        Survey plots and plots with a detection per species the calibration was fitted on.
    target
        ``"occupancy"`` (detection-corrected) or ``"detection"``.
    selection
        With ``method="auto"``: the cross-fitted held-out Brier score of each candidate method.
    error
        The interval model of the calibrated probabilities (:class:`geosdm.models.intervals.ErrorModel`), fitted
        on the same held-out surveys; None when the surveys could not pin it.
    """

    method: str
    link: str
    species: list[str]
    params: dict[str, dict[str, Any]]
    detection: dict[str, float] = field(default_factory=dict)
    fallback: list[str] = field(default_factory=list)
    n_sites: dict[str, int] = field(default_factory=dict)
    n_presences: dict[str, int] = field(default_factory=dict)
    target: str = "detection"
    selection: dict[str, float] = field(default_factory=dict)
    error: ErrorModel | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (saved in the model's ``config.json`` under ``calibration``)."""
        return {"version": 1, "method": self.method, "link": self.link, "species": list(self.species),
                "params": {s: {k: (np.asarray(v, dtype="float64").tolist() if isinstance(v, (list, np.ndarray))
                                   else float(v)) for k, v in p.items()} for s, p in self.params.items()},
                "detection": {s: float(v) for s, v in self.detection.items()}, "fallback": list(self.fallback),
                "n_sites": {s: int(v) for s, v in self.n_sites.items()},
                "n_presences": {s: int(v) for s, v in self.n_presences.items()}, "target": self.target,
                "selection": {m: float(v) for m, v in self.selection.items()},
                **({"error": self.error.to_dict()} if self.error is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpeciesCalibrator:
        """Inverse of :meth:`to_dict`."""
        if d.get("method") not in _METHODS or d.get("link") not in _LINKS:
            raise InputError(f"calibration entry has method={d.get('method')!r}, link={d.get('link')!r}; expected "
                             f"one of {list(_METHODS)} and {list(_LINKS)} (a config written by geosdm)")
        return cls(method=str(d["method"]), link=str(d["link"]), species=[str(s) for s in d["species"]],
                   params={str(s): dict(p) for s, p in d["params"].items()},
                   detection={str(s): float(v) for s, v in d.get("detection", {}).items()},
                   fallback=[str(s) for s in d.get("fallback", [])],
                   n_sites={str(s): int(v) for s, v in d.get("n_sites", {}).items()},
                   n_presences={str(s): int(v) for s, v in d.get("n_presences", {}).items()},
                   target=str(d.get("target", "detection")),
                   selection={str(m): float(v) for m, v in d.get("selection", {}).items()},
                   error=ErrorModel.from_dict(d["error"]) if d.get("error") else None)

    def transform_species(self, p: np.ndarray, species: str) -> np.ndarray:
        """Calibrated probabilities of one species (any shape; NaN stays NaN), float64."""
        prm = self.params.get(species)
        if prm is None:
            raise InputError(f"species {species!r} is not in this calibrator ({len(self.species)} species)")
        p = np.asarray(p, dtype="float64")
        if not prm:
            return p.copy()
        if self.method == "isotonic":
            return np.interp(p, np.asarray(prm["x"], dtype="float64"), np.asarray(prm["y"], dtype="float64"))
        z = link_function(p, self.link)
        if self.method == "platt":
            z = float(prm["a"]) * z + float(prm["b"])
        else:
            z = z / float(prm["t"])
        out = inverse_link(z, self.link)
        out[np.isnan(p)] = np.nan
        return out

    def transform(self, p: np.ndarray, *, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
        """Calibrate probabilities with species along ``axis`` (in the order of :attr:`species`).

        ``out`` (e.g. ``p`` itself) receives the result in its dtype; otherwise a float64 array is returned.

        Example
        -------
        >>> tile = cal.transform(tile, axis=0)  # (species, y, x)  # doctest: +SKIP
        """
        arr = np.asarray(p)
        if arr.shape[axis] != len(self.species):
            raise InputError(f"probabilities have {arr.shape[axis]} layers on axis {axis} but the calibrator has "
                             f"{len(self.species)} species; pass the model's species in order")
        res = out if out is not None else np.empty(arr.shape, dtype="float64")
        src, dst = np.moveaxis(arr, axis, 0), np.moveaxis(res, axis, 0)
        for i, s in enumerate(self.species):
            dst[i] = self.transform_species(src[i], s)
        return res

    def summary(self) -> pd.DataFrame:
        """One row per species: parameters (isotonic: number of thresholds), detection, plots, fallback."""
        rows = []
        for s in self.species:
            prm = self.params.get(s, {})
            row: dict[str, Any] = {"species": s}
            if self.method == "isotonic":
                row["n_thresholds"] = len(prm.get("x", []))
            else:
                row |= {k: float(v) for k, v in prm.items()}
            row |= {"detection": self.detection.get(s, 1.0), "n_sites": self.n_sites.get(s, 0),
                    "n_presences": self.n_presences.get(s, 0), "fallback": s in self.fallback}
            rows.append(row)
        return pd.DataFrame(rows).set_index("species")


def apply_calibration(p: Any, calibrator: SpeciesCalibrator) -> Any:
    """Calibrate probabilities given as a DataFrame (species columns), a DataArray (``species`` dim; Dask stays
    lazy, one task per block) or an array ``(..., species)``.

    Example
    -------
    >>> apply_calibration(model.predict_proba(plots, calibration=False), model.calibrator_)  # doctest: +SKIP
    """
    import xarray as xr

    if isinstance(p, pd.DataFrame):
        cols = [str(c) for c in p.columns]
        if cols != list(calibrator.species):
            raise InputError(f"probability columns {cols[:4]}... are not the calibrator's species in order")
        return pd.DataFrame(calibrator.transform(p.to_numpy(dtype="float64"), axis=-1), index=p.index,
                            columns=p.columns)
    if isinstance(p, xr.DataArray):
        if "species" not in p.dims:
            raise InputError(f"probabilities {p.dims} have no 'species' dim to calibrate along")
        dtype = p.dtype

        def func(a: np.ndarray) -> np.ndarray:
            return calibrator.transform(a, axis=-1).astype(dtype)

        if p.chunks is not None:
            p = p.chunk({"species": -1})
        return xr.apply_ufunc(func, p, input_core_dims=[["species"]], output_core_dims=[["species"]],
                              dask="parallelized", output_dtypes=[dtype], keep_attrs=True).transpose(*p.dims)
    return calibrator.transform(np.asarray(p), axis=-1)


# ---------------------------------------------------------------------------------------------------- fitting
def detection_probability(visits: Any, detections: Any, *, prior: tuple[float, float] | None = None) -> float:
    """Per-visit detection probability from repeat visits (conditional maximum likelihood).

    At a plot surveyed ``V`` times where the species is present, the number of visits that detect it is
    ``K ~ Binomial(V, d)``; plots with ``K >= 1`` are certainly occupied, so ``d`` maximises
    ``sum [K log d + (V - K) log(1 - d) - log(1 - (1 - d)^V)]`` over them. Returns NaN when no plot with a
    detection was visited more than once (``d`` is not identifiable).

    Parameters
    ----------
    visits, detections
        Visits and detecting visits per plot.
    prior
        ``(mean, strength)``: a Beta prior with that mode worth ``strength`` pseudo-visits (posterior mode);
        shrinks estimates from few detected plots towards ``mean``.

    Example
    -------
    >>> round(detection_probability([2, 2, 2, 2], [1, 2, 2, 0]), 4)  # d = 2 n2 / (n1 + 2 n2)
    0.8
    """
    from scipy.optimize import minimize_scalar

    v = np.asarray(visits, dtype="float64").ravel()
    k = np.asarray(detections, dtype="float64").ravel()
    sel = (k >= 1) & (v >= 1)
    v, k = v[sel], k[sel]
    if not (v >= 2).any():
        return float("nan") if prior is None else float(prior[0])
    a = b = 0.0
    if prior is not None:
        mean, strength = float(prior[0]), float(prior[1])
        if not 0 < mean <= 1 or strength < 0:
            raise InputError(f"prior={prior!r} must be (mean in (0, 1], strength >= 0)")
        a, b = mean * strength, (1.0 - mean) * strength
    if np.all(k == v) and b == 0:
        return 1.0

    def nll(d: float) -> float:
        ll = np.sum(k * np.log(d) + (v - k) * np.log1p(-d) - np.log1p(-((1.0 - d) ** v)))
        return -float(ll + a * np.log(d) + b * np.log1p(-d))

    return float(minimize_scalar(nll, bounds=(1e-4, 1.0 - 1e-9), method="bounded",
                                 options={"xatol": 1e-7}).x)


def _fit_link(p: np.ndarray, y: np.ndarray, delta: np.ndarray, link: str, method: str) -> dict[str, float]:
    """Maximum-likelihood Platt ``(a, b)`` or temperature ``t`` of ``y ~ Bernoulli(delta * g(a g^-1(p) + b))``."""
    from scipy.optimize import minimize

    eta = link_function(p, link)

    def unpack(theta: np.ndarray) -> tuple[float, float]:
        return (float(theta[0]), float(theta[1])) if method == "platt" else (float(np.exp(-theta[0])), 0.0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = unpack(theta)
        z = a * eta + b
        q = np.clip(delta * inverse_link(z, link), _EPS, 1.0 - _EPS)
        nll = -np.sum(y * np.log(q) + (1.0 - y) * np.log1p(-q))
        dq = delta * _dlink(z, link)
        r = -(y / q - (1.0 - y) / (1.0 - q)) * dq  # dNLL/dz
        if method == "platt":
            nll += ((a - 1.0) ** 2 + b**2) / (2 * _PRIOR_SD**2)
            grad = np.array([np.sum(r * eta) + (a - 1.0) / _PRIOR_SD**2, np.sum(r) + b / _PRIOR_SD**2])
        else:  # theta = log t, a = exp(-theta); prior on log t
            nll += theta[0] ** 2 / (2 * _PRIOR_SD**2)
            grad = np.array([np.sum(r * eta) * (-a) + theta[0] / _PRIOR_SD**2])
        return float(nll), grad

    x0 = np.array([1.0, 0.0]) if method == "platt" else np.array([0.0])
    res = minimize(objective, x0, jac=True, method="L-BFGS-B")
    a, b = unpack(res.x)
    return {"a": a, "b": b} if method == "platt" else {"t": float(np.exp(res.x[0]))}


def _fit_isotonic(p: np.ndarray, y: np.ndarray, delta: np.ndarray) -> dict[str, list[float]]:
    """Isotonic map of ``y / delta`` (weights ``delta``: bin values are detections / expected detectability)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(p, y / delta, sample_weight=delta)
    return {"x": iso.X_thresholds_.astype("float64").tolist(), "y": iso.y_thresholds_.astype("float64").tolist()}


def _fit_one(p: np.ndarray, y: np.ndarray, delta: np.ndarray, method: str, link: str) -> dict[str, Any]:
    if method == "isotonic":
        return _fit_isotonic(p, y, delta)
    return _fit_link(p, y, delta, link, method)


def fit_calibrator(probability: pd.DataFrame, observed: pd.DataFrame, *, method: Method = "platt",
                   link: str = "cloglog", detectability: pd.DataFrame | None = None, per_species: bool = True,
                   min_presences: int = 5, detection: Mapping[str, float] | None = None) -> SpeciesCalibrator:
    """Fit a :class:`SpeciesCalibrator` from uncalibrated probabilities and observed outcomes at survey sites.

    Parameters
    ----------
    probability
        ``(sites, species)`` uncalibrated probabilities (held out from the model's fit).
    observed
        ``(sites, species)`` 1 when the species was detected at the site, 0 when not, NaN when not surveyed.
    method
        ``"platt"``, ``"temperature"`` or ``"isotonic"``.
    link
        The model's link (Platt/temperature act on its scale).
    detectability
        ``(sites, species)`` probability that a survey detects the species when present (default 1).
    per_species
        One map per species (False: one map shared by all species).
    min_presences
        Species with fewer detected sites use the shared map.
    detection
        Per-visit detection probabilities to record with the calibrator.

    Example
    -------
    >>> cal = fit_calibrator(held.probability, held.observed, method="platt")  # doctest: +SKIP
    """
    if method not in _METHODS:
        raise InputError(f"method={method!r} is unknown; choose one of {list(_METHODS)}")
    if link not in _LINKS:
        raise InputError(f"link={link!r} must be one of {list(_LINKS)}")
    if list(probability.columns) != list(observed.columns) or len(probability) != len(observed):
        raise InputError("probability and observed must have the same sites (rows) and species (columns)")
    species = [str(s) for s in probability.columns]
    P = probability.to_numpy(dtype="float64")
    Y = observed.to_numpy(dtype="float64")
    D = np.ones_like(P) if detectability is None else detectability.to_numpy(dtype="float64")
    ok = np.isfinite(P) & np.isfinite(Y) & np.isfinite(D) & (D > 0)
    if not ok.any():
        raise InputError("no survey site has both a probability and an observation; calibration needs held-out "
                         "presence/absence data")
    pooled = _fit_one(P[ok], Y[ok], D[ok], method, link)
    params: dict[str, dict[str, Any]] = {}
    fallback: list[str] = []
    n_sites, n_pres = {}, {}
    for i, s in enumerate(species):
        sel = ok[:, i]
        n_sites[s], n_pres[s] = int(sel.sum()), int((Y[sel, i] > 0).sum())
        if not sel.any():
            params[s] = {}
            log.info("calibration: species %s has no survey data; left uncalibrated", s)
        elif not per_species or n_pres[s] < int(min_presences) or n_pres[s] == n_sites[s]:
            params[s] = dict(pooled)
            if per_species:
                fallback.append(s)
        else:
            params[s] = _fit_one(P[sel, i], Y[sel, i], D[sel, i], method, link)
    if fallback:
        log.info("calibration: %d species with < %d detected sites use the shared map: %s", len(fallback),
                 min_presences, fallback)
    return SpeciesCalibrator(method=method, link=link, species=species, params=params,
                             detection=dict(detection or {}), fallback=fallback, n_sites=n_sites, n_presences=n_pres,
                             target="occupancy" if detectability is not None else "detection")


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
        :func:`geosdm.models.intervals.fit_error_model`: from neighbouring held-out plots; skipped with a warning
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
    if method not in _METHODS and method != "auto":
        raise InputError(f"method={method!r} is unknown; choose one of {[*_METHODS, 'auto']}")
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
        from geosdm.models.intervals import fit_error_model

        try:
            cal.error = fit_error_model(held_out, method=method, detection=detection, per_species=per_species,
                                        min_presences=min_presences)
        except InputError as err:
            log.warning("no interval model: %s", err)
    out.calibrator_ = cal
    return out


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
        if m not in _METHODS:
            raise InputError(f"methods has {m!r}; choose among {list(_METHODS)}")
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
