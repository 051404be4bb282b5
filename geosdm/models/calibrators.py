"""Calibration maps: from a model's probability to a calibrated one, per species (fitting and applying them).

The link functions (:func:`intensity_to_probability`, :func:`link_function`, :func:`inverse_link`), the fitted
map :class:`SpeciesCalibrator` (JSON, no pickle), :func:`apply_calibration` and :func:`fit_calibrator` on
probabilities and observations already paired up. Where the pairs come from (survey sites, held-out folds) is
:mod:`geosdm.models.heldout`; the whole workflow, :func:`geosdm.models.calibration.calibrate`.

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

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from geosdm.errors import InputError
from geosdm.models.intervals import ErrorModel

__all__ = ["METHODS", "Method", "SpeciesCalibrator", "apply_calibration", "detection_probability", "fit_calibrator",
           "intensity_to_probability", "inverse_link", "link_function"]

log = logging.getLogger(__name__)

Method = Literal["platt", "temperature", "isotonic", "auto"]
METHODS = ("platt", "temperature", "isotonic")
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
        if d.get("method") not in METHODS or d.get("link") not in _LINKS:
            raise InputError(f"calibration entry has method={d.get('method')!r}, link={d.get('link')!r}; expected "
                             f"one of {list(METHODS)} and {list(_LINKS)} (a config written by geosdm)")
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
    if method not in METHODS:
        raise InputError(f"method={method!r} is unknown; choose one of {list(METHODS)}")
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
