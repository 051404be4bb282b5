"""Estimate how strongly interacting species co-occur, from presence/absence surveys and the species' marginals.

Two co-occurrence models are fitted, both on top of the marginal presence probabilities ``p`` of the species
models (so the environment is accounted for: only the association *beyond* the environment is estimated).

**Dependence with leakage** (one parameter per consumer, ``eps_t`` in [0, 1]). A consumer ``t`` (pest, natural
enemy) is present where its own conditions are suitable (``B_t``) *and* at least one of its resources in the
network is present (``H_t``), or, with probability ``eps_t``, without any listed resource (unlisted hosts,
dispersal, errors in the network)::

    Z_t = B_t * max(H_t, L_t),  B_t ~ Bernoulli(q_t),  L_t ~ Bernoulli(eps_t)
    => p_t = q_t (eps_t + (1 - eps_t) A_t),     A_t = P(H_t) = 1 - prod_r (1 - p_r)
    => P(t | resource s present) = q_t = p_t / (eps_t + (1 - eps_t) A_t)
    => P(s, t) = p_s q_t

``eps_t = 0`` is strict dependence (the demo's generating process: pests only where a host plant is, enemies
only where a prey is), ``eps_t = 1`` is independence (``P(s, t) = p_s p_t``). The conditional ``q_t`` is
modelled over space through the marginals, so it is large where the resources are rare and the consumer still
occurs. ``A_t`` treats the resources as independent (exact for plants; an approximation for prey that share
hosts).

**Plackett** (one odds ratio ``psi`` per edge): the joint of the two presences with the given marginals and
a constant odds ratio (Plackett 1965; the bivariate-logistic "Dale" model); ``psi = 1`` is independence.

**Estimation.** Surveys record detections at plots over repeated visits. Per species, the per-visit detection
probability ``d`` is the maximum-likelihood estimate of a zero-truncated binomial over the plots where the
species was detected at least once (needs plots visited twice or more); the probability of at least one
detection at a plot visited ``V`` times is ``delta = 1 - (1 - d)**V``. For each edge ``(s, t)`` and plot ``i``
with detections ``y_s, y_t`` (at least one detection = 1), given the marginals at the plot:

    P(1, 1) = delta_s delta_t J,   P(1, 0) = delta_s (p_s - delta_t J),   P(0, 1) = delta_t (p_t - delta_s J)

with ``J`` the model's joint. ``eps_t`` maximises the sum of these pairwise log-likelihoods over the edges into
``t`` (a composite likelihood), ``psi`` over one edge's plots. The likelihood-ratio statistic against
independence (``eps = 1`` / ``psi = 1``) is reported as evidence for the association.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError, MissingVariableError
from geosdm.interactions._math import any_present, dependence_joint, plackett_joint
from geosdm.interactions.network import Network, edge_label

__all__ = ["Associations", "SurveyMatrix", "survey_matrix", "estimate_detection", "marginals_at",
           "fit_associations"]

log = logging.getLogger(__name__)

_EPS_TINY = 1e-12


@dataclass(frozen=True)
class SurveyMatrix:
    """Detections of each species at each plot: ``visits`` and ``detections`` (plots x species, 0 = not surveyed)."""

    plots: pd.DataFrame  # index plot key; columns x, y, crs
    visits: pd.DataFrame  # plots x species, int
    detections: pd.DataFrame  # plots x species, int

    @property
    def detected(self) -> pd.DataFrame:
        """1 where the species was detected at least once, 0 where surveyed and never detected, NaN unsurveyed."""
        return (self.detections > 0).astype(float).where(self.visits > 0)


def survey_matrix(surveys: pd.DataFrame) -> SurveyMatrix:
    """Pivot presence/absence records (:mod:`geosdm.records.schema`) to plots x species visits and detections.

    Rows of kind ``presence_absence`` are used; a plot is ``plot_id`` (or the point ``x, y, crs`` where it is
    missing); each row is one visit (value > 0 = detected).

    Raises
    ------
    InputError
        No presence/absence rows.

    Example
    -------
    >>> sm = survey_matrix(read_records("records/surveys.parquet"))  # doctest: +SKIP
    """
    missing = [c for c in ("species", "x", "y", "kind", "value") if c not in surveys.columns]
    if missing:
        raise MissingVariableError(f"surveys lack columns {missing}; read them with geosdm.records.read_records")
    pa = surveys[surveys["kind"].astype(str) == "presence_absence"]
    if pa.empty:
        raise InputError("surveys have no presence_absence rows; co-occurrence needs plots where absences were "
                         f"recorded (kinds present: {sorted(surveys['kind'].astype(str).unique())})")
    crs = pa["crs"].astype(str) if "crs" in pa.columns else pd.Series("", index=pa.index)
    point = pa["x"].round(6).astype(str) + "," + pa["y"].round(6).astype(str) + "," + crs
    key = pa["plot_id"].astype("string").fillna(point) if "plot_id" in pa.columns else point
    frame = pd.DataFrame({"plot": key.astype(str), "species": pa["species"].astype(str),
                          "det": (pa["value"].to_numpy(dtype=float) > 0).astype(int)})
    visits = frame.pivot_table(index="plot", columns="species", values="det", aggfunc="size", fill_value=0)
    dets = frame.pivot_table(index="plot", columns="species", values="det", aggfunc="sum", fill_value=0)
    plots = pd.DataFrame({"plot": key.astype(str), "x": pa["x"], "y": pa["y"], "crs": crs}).drop_duplicates("plot")
    plots = plots.set_index("plot").loc[visits.index]
    return SurveyMatrix(plots, visits.astype(int), dets.loc[visits.index, visits.columns].astype(int))


def _ztb_mle(c: np.ndarray, v: np.ndarray) -> float:
    """ML per-visit detection of a zero-truncated binomial: detections ``c >= 1`` out of ``v`` visits."""
    from scipy.optimize import minimize_scalar

    def nll(d: float) -> float:
        return -float(np.sum(c * np.log(d) + (v - c) * np.log1p(-d) - np.log1p(-((1 - d) ** v))))

    return float(minimize_scalar(nll, bounds=(1e-4, 1 - 1e-6), method="bounded").x)


def estimate_detection(sm: SurveyMatrix, *, min_plots: int = 5) -> dict[str, float]:
    """Per-visit detection probability of each species from repeat visits (zero-truncated binomial ML).

    Only plots with two visits or more where the species was detected at least once inform it. Species with
    fewer than ``min_plots`` such plots get the estimate pooled over all species; without any repeat visit,
    detection cannot be told apart from occupancy and 1 (perfect detection) is returned for every species.

    Example
    -------
    >>> estimate_detection(survey_matrix(surveys))["pest_01"]  # doctest: +SKIP
    0.71
    """
    out: dict[str, float] = {}
    pooled_c: list[np.ndarray] = []
    pooled_v: list[np.ndarray] = []
    for s in sm.visits.columns:
        v, c = sm.visits[s].to_numpy(), sm.detections[s].to_numpy()
        ok = (v >= 2) & (c >= 1)
        pooled_c.append(c[ok])
        pooled_v.append(v[ok])
        if ok.sum() >= min_plots:
            out[str(s)] = _ztb_mle(c[ok], v[ok])
    allc, allv = np.concatenate(pooled_c), np.concatenate(pooled_v)
    if allc.size == 0:
        log.info("no repeat visits: detection taken as perfect (1.0) for every species")
        return {str(s): 1.0 for s in sm.visits.columns}
    pooled = _ztb_mle(allc, allv)
    for s in sm.visits.columns:
        if str(s) not in out:
            log.info("detection of %s pooled over species (%.3f): fewer than %d informative plots", s, pooled,
                     min_plots)
            out[str(s)] = pooled
    return out


def marginals_at(probability: xr.DataArray | xr.Dataset, plots: pd.DataFrame,
                 species: Sequence[str]) -> pd.DataFrame:
    """Marginal probabilities of ``species`` at survey plots (cell containing each plot), plots x species.

    A point read of the (lazy) probability cube: only the cells of the plots are computed. Plots outside the
    grid get NaN.

    Raises
    ------
    MissingVariableError
        The cube lacks some of ``species``.
    """
    import odc.geo.xr  # noqa: F401

    from geosdm.records.coords import cell_index, transform_xy

    da = probability["probability"] if isinstance(probability, xr.Dataset) else probability
    have = [str(s) for s in da["species"].values]
    missing = [s for s in species if s not in have]
    if missing:
        raise MissingVariableError(f"the probability cube lacks species {missing[:8]}; it has {have[:8]}...")
    gbox = da.odc.geobox
    out = np.full((len(plots), len(species)), np.nan)
    for crs, idx in plots.groupby(plots["crs"].astype(str)).indices.items():
        x, y = plots["x"].to_numpy()[idx], plots["y"].to_numpy()[idx]
        if crs:
            x, y = transform_xy(x, y, crs, gbox.crs)
        row, col, inside = cell_index(gbox, x, y)
        if inside.any():
            sub = da.sel(species=list(species)).isel(y=xr.DataArray(row[inside], dims="plot"),
                                                      x=xr.DataArray(col[inside], dims="plot"))
            vals = np.asarray(sub.transpose("plot", "species").values, dtype=np.float64)
            out[idx[inside]] = vals
    return pd.DataFrame(out, index=plots.index, columns=list(species))


@dataclass(frozen=True)
class Associations:
    """Fitted co-occurrence parameters (see the module docstring) and their diagnostics.

    ``leakage``: consumer -> ``eps`` (dependence model); ``odds_ratio``: edge label -> ``psi`` (Plackett);
    ``detection``: species -> per-visit detection; ``edges`` / ``consumers``: per-edge and per-consumer tables
    (plots used, observed and expected co-detections, log-likelihoods, likelihood-ratio statistics).
    """

    leakage: dict[str, float]
    odds_ratio: dict[str, float]
    detection: dict[str, float] = field(default_factory=dict)
    edges: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    consumers: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    n_plots: int = 0
    source: str = "surveys"

    @classmethod
    def fixed(cls, network: Network, *, leakage: float = 0.0, odds_ratio: float = 1.0) -> Associations:
        """The same parameters for every consumer and edge (no surveys: ``leakage=0`` trusts the network)."""
        if not (0.0 <= leakage <= 1.0) or odds_ratio <= 0:
            raise InputError(f"leakage={leakage} must be in [0, 1] and odds_ratio={odds_ratio} > 0")
        consumers = sorted(set(network.edges["target"].astype(str)))
        return cls({c: float(leakage) for c in consumers}, {e: float(odds_ratio) for e in network.edge_labels},
                   source=f"fixed (leakage {leakage}, odds ratio {odds_ratio})")

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n_plots": self.n_plots, "leakage": self.leakage,
                "odds_ratio": self.odds_ratio, "detection": self.detection,
                "edges": json.loads(self.edges.to_json(orient="records")) if len(self.edges) else [],
                "consumers": json.loads(self.consumers.to_json(orient="records")) if len(self.consumers) else []}

    def save(self, path: str | PathLike[str]) -> None:
        """Write the parameters and diagnostics as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Associations:
        """Read parameters written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        return cls({k: float(v) for k, v in d["leakage"].items()}, {k: float(v) for k, v in d["odds_ratio"].items()},
                   {k: float(v) for k, v in d.get("detection", {}).items()}, pd.DataFrame(d.get("edges", [])),
                   pd.DataFrame(d.get("consumers", [])), int(d.get("n_plots", 0)), str(d.get("source", "file")))


def _loglik(y_s: np.ndarray, y_t: np.ndarray, d_s: np.ndarray, d_t: np.ndarray, p_s: np.ndarray, p_t: np.ndarray,
            j: np.ndarray) -> float:
    p11 = d_s * d_t * j
    p10 = d_s * (p_s - d_t * j)
    p01 = d_t * (p_t - d_s * j)
    p00 = 1.0 - p11 - p10 - p01
    pr = np.where(y_s > 0, np.where(y_t > 0, p11, p10), np.where(y_t > 0, p01, p00))
    return float(np.sum(np.log(np.clip(pr, _EPS_TINY, 1.0))))


def survey_inputs(network: Network, surveys: pd.DataFrame | SurveyMatrix,
                  probability: xr.DataArray | xr.Dataset | pd.DataFrame,
                  detection: Literal["estimate", "perfect"] | float | Mapping[str, float] = "estimate",
                  ) -> tuple[SurveyMatrix, list[str], pd.DataFrame, dict[str, float]]:
    """What a co-occurrence fit reads: the survey matrix, the network's surveyed species, their marginal
    probabilities at the plots and the per-visit detection probabilities (estimated, perfect or given)."""
    sm = surveys if isinstance(surveys, SurveyMatrix) else survey_matrix(surveys)
    species = [s for s in network.species if s in sm.visits.columns]
    if isinstance(probability, pd.DataFrame):
        marg = probability.reindex(index=sm.plots.index, columns=species).astype(float)
    else:
        marg = marginals_at(probability, sm.plots, species)
    if isinstance(detection, str):
        if detection == "estimate":
            dprob = estimate_detection(sm)
        elif detection == "perfect":
            dprob = {str(s): 1.0 for s in sm.visits.columns}
        else:
            raise InputError(f"detection={detection!r}: use 'estimate', 'perfect', a probability or a mapping")
    elif isinstance(detection, Mapping):
        dprob = {str(s): float(detection.get(str(s), 1.0)) for s in sm.visits.columns}
    else:
        dprob = {str(s): float(detection) for s in sm.visits.columns}
    if any(not (0 < v <= 1) for v in dprob.values()):
        raise InputError(f"detection probabilities must be in (0, 1]; got {dprob}")
    return sm, species, marg, dprob


def fit_associations(
    network: Network,
    surveys: pd.DataFrame | SurveyMatrix,
    probability: xr.DataArray | xr.Dataset | pd.DataFrame,
    *,
    detection: Literal["estimate", "perfect"] | float | Mapping[str, float] = "estimate",
    default_leakage: float = 0.0,
    min_detections: int = 3,
    odds_ratio_sd: float = 3.0,
) -> Associations:
    """Fit the dependence (leakage per consumer) and Plackett (odds ratio per edge) models from surveys.

    Parameters
    ----------
    network
        The network, node names matched to the species of ``probability`` (:func:`match_species`).
    surveys
        Presence/absence records (the records schema; one row per species, plot and visit) or a
        :class:`SurveyMatrix`.
    probability
        Marginal presence probabilities: the ``(species, y, x)`` cube from :func:`geosdm.predict.predict` /
        :func:`geosdm.predict.open_predictions` (read at the plots' cells only), or a plots x species table
        indexed like the survey plots.
    detection
        ``"estimate"`` per-visit detection from repeat visits (:func:`estimate_detection`), ``"perfect"``
        (detections are presences), one value for all species, or species -> value.
    default_leakage
        ``eps`` of consumers that the surveys cannot inform (fewer than ``min_detections`` plots where the
        consumer was detected): 0 trusts the network.
    min_detections
        Plots with the consumer detected below which its ``eps`` is not estimated (and edges keep ``psi = 1``).
    odds_ratio_sd
        Standard deviation of a normal penalty on ``log(psi)`` (a weak prior centred on independence): an edge
        seen at few plots would otherwise get an odds ratio at the search bounds (1e-3 or 1e4).

    Returns
    -------
    Associations

    Raises
    ------
    InputError
        No plot where both the surveys and the marginals are known.

    Example
    -------
    >>> surveys, prob = read_records("surveys.parquet"), open_predictions("p.zarr")  # doctest: +SKIP
    >>> assoc = fit_associations(match.network, surveys, prob)  # doctest: +SKIP
    >>> assoc.leakage["pest_01"]  # doctest: +SKIP
    """
    from scipy.optimize import minimize_scalar

    sm, species, marg, dprob = survey_inputs(network, surveys, probability, detection)
    v = sm.visits.reindex(columns=species, fill_value=0).to_numpy()
    y = (sm.detections.reindex(columns=species, fill_value=0).to_numpy() > 0).astype(float)
    delta = 1.0 - (1.0 - np.array([dprob.get(s, 1.0) for s in species]))[None, :] ** v
    p = np.clip(marg.to_numpy(), 0.0, 1.0)
    ok = (v > 0) & np.isfinite(p)
    if not ok.any():
        raise InputError("no survey plot has both detections and marginal probabilities of the network's species; "
                         "check that the surveys lie on the probability cube's grid and use the same species names")
    col = {s: i for i, s in enumerate(species)}
    e = network.edges
    rows, crows = [], []
    leakage: dict[str, float] = {}
    odds: dict[str, float] = {}
    consumers = list(dict.fromkeys(e["target"].astype(str)))
    for t in consumers:
        res = [s for s in network.resources(t) if s in col]
        if t not in col or not res:
            leakage[t] = float(default_leakage)
            crows.append({"consumer": t, "n_plots": 0, "n_detected": 0, "leakage": leakage[t], "estimated": False,
                          "loglik": np.nan, "loglik_independent": np.nan, "lr_statistic": np.nan})
            continue
        it = col[t]
        a_all = any_present([p[:, col[r]] for r in res])
        pairs = []
        for s in res:
            i_s = col[s]
            m = ok[:, i_s] & ok[:, it] & np.isfinite(a_all)
            pairs.append((s, i_s, m))
        n_det = int(max(int((y[m, it] > 0).sum()) for _, _, m in pairs))
        n_plots = int(max(int(m.sum()) for _, _, m in pairs))

        def ll_eps(eps: float) -> float:
            total = 0.0
            for _s, i_s, m in pairs:
                j = dependence_joint(p[m, i_s], p[m, it], a_all[m], eps)
                total += _loglik(y[m, i_s], y[m, it], delta[m, i_s], delta[m, it], p[m, i_s], p[m, it], j)
            return total

        if n_det >= min_detections:
            r = minimize_scalar(lambda x: -ll_eps(x), bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-4})
            eps_hat = float(r.x)
            # the bounded search never evaluates the end points; strict dependence is a common optimum
            if ll_eps(0.0) >= ll_eps(eps_hat):
                eps_hat = 0.0
            estimated = True
        else:
            eps_hat, estimated = float(default_leakage), False
        leakage[t] = round(eps_hat, 6)
        ll_hat, ll_ind = ll_eps(eps_hat), ll_eps(1.0)
        crows.append({"consumer": t, "n_plots": n_plots, "n_detected": n_det, "leakage": leakage[t],
                      "estimated": estimated, "loglik": ll_hat, "loglik_independent": ll_ind,
                      "lr_statistic": max(0.0, 2 * (ll_hat - ll_ind))})
        for s, i_s, m in pairs:
            ps, pt, ds, dt, ys, yt = p[m, i_s], p[m, it], delta[m, i_s], delta[m, it], y[m, i_s], y[m, it]

            def ll_psi(log_psi: float, ps: np.ndarray = ps, pt: np.ndarray = pt, ds: np.ndarray = ds,
                       dt: np.ndarray = dt, ys: np.ndarray = ys, yt: np.ndarray = yt) -> float:
                return _loglik(ys, yt, ds, dt, ps, pt, plackett_joint(ps, pt, float(np.exp(log_psi))))

            n11 = int(((ys > 0) & (yt > 0)).sum())
            if estimated and m.sum() > 0:
                rr = minimize_scalar(lambda x: -ll_psi(x) + 0.5 * (x / odds_ratio_sd) ** 2,
                                     bounds=(np.log(1e-3), np.log(1e4)), method="bounded")
                psi = float(np.exp(rr.x))
            else:
                psi = 1.0
            label = edge_label(s, t)
            odds[label] = round(psi, 6)
            j_dep = dependence_joint(ps, pt, a_all[m], eps_hat)
            rows.append({
                "edge": label, "source": s, "target": t, "n_plots": int(m.sum()), "n_codetected": n11,
                "expected_independent": float(np.sum(ds * dt * ps * pt)),
                "expected_dependence": float(np.sum(ds * dt * j_dep)),
                "expected_plackett": float(np.sum(ds * dt * plackett_joint(ps, pt, psi))),
                "odds_ratio": odds[label],
                "lr_statistic_plackett": max(0.0, 2 * (ll_psi(np.log(psi)) - ll_psi(0.0))),
            })
    edges_df = pd.DataFrame(rows)
    if len(edges_df):
        edges_df["lift"] = edges_df["n_codetected"] / edges_df["expected_independent"].where(
            edges_df["expected_independent"] > 0)
    for lbl in network.edge_labels:
        odds.setdefault(lbl, 1.0)
    return Associations(leakage, odds, {s: round(dprob[s], 6) for s in species if s in dprob}, edges_df,
                        pd.DataFrame(crows), int(ok.any(axis=1).sum()), "surveys")
