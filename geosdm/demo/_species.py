"""Virtual species with known niches, a plant-pest-enemy network with real biotic dependence, and records.

Truth model (all on the target grid):
- plants: P(present) = p = logistic(a + sum_j f_j(x_j)) with 2-4 known response functions f_j;
- pests: Z = B * H, B ~ Bernoulli(q) with q the pest's own environmental suitability (same form) and H = 1
  when at least one host plant is present -> p = q (1 - prod_h (1 - p_h));
- natural enemies: Z = B * (any prey pest present), computed exactly by enumerating host-plant configurations.
So the joint probability of an edge is not the product of the marginals: P(plant h, pest k) = q_k p_h and
P(pest k, enemy m) = q_m p_k. Presence-only records are thinned by a known observer-bias layer; surveys visit
stratified plots twice with imperfect detection; pests also have trap counts.

Drivers are drawn from a pool of covariates that are not collinear (``|r| < 0.7`` between any two), as
virtual-species studies do: a species driven by one of two near-identical layers has no identifiable driver.
The pool is the generator's own seeded draw (:func:`driver_pool`: candidates visited in a random order, one
climate variable first), independent of the library's collinearity filter
(:func:`geosdm.records.select_covariates`) and of any preference order a user would give it, so that the filter
keeping the true drivers is something a benchmark measures, not something the generator built in.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DRIVER_CANDIDATES", "Driver", "DriverPool", "VirtualSpecies", "driver_pool", "make_species", "make_records", "realise",
           "response", "true_probabilities"]

_CLIMATE = ["bio01", "bio12", "bio05", "bio06", "bio15"]
_OTHER = ["elevation", "slope", "s2_ndvi_jja"]
_LC_WILD = ["lc_5", "lc_7", "lc_8", "lc_9", "lc_10", "lc_11"]
_LC_CROP = ["lc_3", "lc_4", "lc_6"]
#: Candidate drivers (a set: :func:`driver_pool` visits them in a seeded random order).
DRIVER_CANDIDATES = (*_CLIMATE, *_OTHER, *_LC_CROP, *_LC_WILD)
#: Largest absolute correlation between two covariates of the driver pool.
POOL_MAX_CORRELATION = 0.7


@dataclass(frozen=True)
class DriverPool:
    """The candidate drivers kept by :func:`driver_pool`, and for each other one the kept driver it follows."""

    selected: tuple[str, ...]
    dropped: dict[str, tuple[str, float]]
    order: tuple[str, ...]
    threshold: float = POOL_MAX_CORRELATION

    def to_dict(self) -> dict[str, Any]:
        return {"selected": list(self.selected), "threshold": self.threshold, "order": list(self.order),
                "rule": "seeded random order, one climate variable first; kept when |r| < threshold with every "
                        "kept one (Pearson over a seeded sample of cells)",
                "dropped": {v: {"follows": k, "r": round(r, 4)} for v, (k, r) in self.dropped.items()}}


def driver_pool(cov: Mapping[str, np.ndarray], rng: np.random.Generator, *, n_rows: int = 200_000) -> DriverPool:
    """Draw the pool of candidate drivers with pairwise ``|r| < 0.7`` over the map by the generator's own rule.

    A climate variable drawn at random comes first, then the other candidates in a random order; each is kept
    when its correlation with every kept one is below the threshold. No preference list, and nothing shared with
    :func:`geosdm.records.select_covariates`.
    """
    first = str(rng.choice(_CLIMATE))
    rest = [str(v) for v in rng.permutation([v for v in DRIVER_CANDIDATES if v != first])]
    order = (first, *rest)
    data = np.stack([np.asarray(cov[v], dtype="float64").ravel() for v in order])
    ok = np.isfinite(data).all(axis=0)
    cells = np.flatnonzero(ok)
    if len(cells) > n_rows:
        cells = np.sort(rng.choice(cells, n_rows, replace=False))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(data[:, cells])
    kept: list[int] = []
    dropped: dict[str, tuple[str, float]] = {}
    for i, v in enumerate(order):
        if not np.isfinite(r[i, i]):  # constant over the map
            dropped[v] = ("", float("nan"))
            continue
        worst = max(kept, key=lambda k: abs(r[i, k]), default=None)
        if worst is not None and abs(r[i, worst]) >= POOL_MAX_CORRELATION:
            dropped[v] = (order[worst], float(r[i, worst]))
        else:
            kept.append(i)
    return DriverPool(tuple(order[k] for k in kept), dropped, order)


@dataclass
class Driver:
    """One known response of a species to a covariate: f(x) added on the logit scale."""

    variable: str
    kind: str  # "gaussian" | "sigmoid" | "linear"
    params: dict[str, float]
    importance: float = 0.0  # variance of f over the map (ranks the true drivers)


@dataclass
class VirtualSpecies:
    name: str
    role: str  # "plant" | "pest" | "enemy"
    guild: str  # crop / wild plant, pest, parasitoid / predator
    target_prevalence: float
    intercept: float = 0.0
    drivers: list[Driver] = field(default_factory=list)
    partners: list[str] = field(default_factory=list)  # hosts (pests) or prey (enemies)
    detection: float = 0.8  # per-visit detection probability in surveys
    prevalence: float = 0.0  # realised mean probability over the map

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VirtualSpecies:
        """Inverse of :meth:`to_dict` (an entry of the demo's ``truth/species.json``)."""
        return cls(**{**d, "drivers": [Driver(**x) for x in d.get("drivers", [])]})


def response(kind: str, params: dict[str, float], x: np.ndarray) -> np.ndarray:
    """Evaluate a known response function on covariate values ``x`` (logit-scale contribution)."""
    if kind == "gaussian":
        return -0.5 * ((x - params["mu"]) / params["sd"]) ** 2
    if kind == "sigmoid":
        return params["slope"] * (x - params["threshold"]) / params["scale"]
    if kind == "linear":
        return params["weight"] * x
    raise ValueError(f"unknown response kind {kind!r}")


def _draw_driver(var: str, x: np.ndarray, rng: np.random.Generator) -> Driver:
    finite = x[np.isfinite(x)]
    sd = float(finite.std()) or 1.0
    if var.startswith("lc_"):
        return Driver(var, "linear", {"weight": float(rng.choice([-1, 1], p=[0.25, 0.75]) * rng.uniform(2.5, 5.0))})
    if rng.uniform() < 0.6:
        mu = float(np.quantile(finite, rng.uniform(0.15, 0.85)))
        return Driver(var, "gaussian", {"mu": mu, "sd": float(sd * rng.uniform(0.5, 1.2))})
    thr = float(np.quantile(finite, rng.uniform(0.3, 0.7)))
    return Driver(var, "sigmoid", {"slope": float(rng.choice([-1, 1]) * rng.uniform(1.5, 3.0)), "threshold": thr, "scale": sd})


def _logit_sum(sp: VirtualSpecies, cov: dict[str, np.ndarray]) -> np.ndarray:
    total = np.zeros_like(next(iter(cov.values())), dtype=np.float64)
    for d in sp.drivers:
        f = response(d.kind, d.params, cov[d.variable].astype(np.float64))
        d.importance = float(np.nanvar(f))
        total += f
    return total


def true_probabilities(species: Sequence[VirtualSpecies], cov: Mapping[str, np.ndarray],
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """True occurrence probabilities ``p`` and own suitabilities ``q`` of a drawn community at covariate values
    ``cov`` (arrays of any one shape): the generating model, for any covariate values (e.g. permuted ones).

    ``species`` must list every partner before its consumer (plants, pests, enemies), as the demo stores them.
    """
    prob: dict[str, np.ndarray] = {}
    suit: dict[str, np.ndarray] = {}
    by_name = {s.name: s for s in species}
    for sp in species:
        f = sp.intercept + sum((response(d.kind, d.params, np.asarray(cov[d.variable], dtype=np.float64))
                                for d in sp.drivers), np.zeros(()))
        q = 1.0 / (1.0 + np.exp(-f))
        suit[sp.name] = q
        if sp.role == "plant":
            prob[sp.name] = q
        elif sp.role == "pest":
            prob[sp.name] = q * _any_present([prob[h] for h in sp.partners])
        else:
            prob[sp.name] = q * _prob_any_prey([by_name[k] for k in sp.partners], prob, suit)
    return prob, suit


def _calibrate(f: np.ndarray, scale: np.ndarray, target: float) -> tuple[float, np.ndarray]:
    """Intercept a such that mean(sigmoid(a + f) * scale) == target (bisection), and sigmoid(a + f)."""
    lo, hi = -30.0, 30.0
    valid = np.isfinite(f)
    for _ in range(60):
        mid = (lo + hi) / 2
        q = 1.0 / (1.0 + np.exp(-(mid + f[valid])))
        if float(np.mean(q * scale[valid])) > target:
            hi = mid
        else:
            lo = mid
    a = (lo + hi) / 2
    return a, 1.0 / (1.0 + np.exp(-(a + f)))


def _any_present(probs: list[np.ndarray]) -> np.ndarray:
    out = np.ones_like(probs[0])
    for p in probs:
        out *= 1.0 - p
    return 1.0 - out


def make_species(
    cov: dict[str, np.ndarray], rng: np.random.Generator, *, pool: Sequence[str] | None = None, n_plants: int = 16,
    n_pests: int = 12, n_enemies: int = 14
) -> tuple[list[VirtualSpecies], dict[str, np.ndarray], dict[str, np.ndarray], pd.DataFrame, np.ndarray]:
    """Draw the community and compute its truth.

    ``pool`` lists the covariates drivers may be drawn from (default: :func:`driver_pool` drawn with ``rng``).
    Returns species, marginal probabilities p (name -> (y, x)), own suitabilities q, the edge table
    (source, target, interaction, joint truth index) and joint probabilities (edge, y, x).
    """
    species: list[VirtualSpecies] = []
    prob: dict[str, np.ndarray] = {}
    suit: dict[str, np.ndarray] = {}
    ones = np.ones_like(cov["bio01"], dtype=np.float64)
    allowed = set(driver_pool(cov, rng).selected if pool is None else pool)
    climate, other = [v for v in _CLIMATE if v in allowed], [v for v in _OTHER if v in allowed]
    lc_crop, lc_wild = [v for v in _LC_CROP if v in allowed], [v for v in _LC_WILD if v in allowed]
    if not climate or not (other or lc_crop) or not (other or lc_wild):
        raise ValueError(f"the driver pool {sorted(allowed)} lacks a climate, or a terrain/optical/land-cover, driver")

    def drivers(pool_lc: list[str]) -> list[Driver]:
        n_clim = min(int(rng.integers(1, 3)), len(climate))
        names = list(rng.choice(climate, n_clim, replace=False))
        extra = min(int(rng.integers(1, 3)), len(other + pool_lc))
        names += list(rng.choice(other + pool_lc, extra, replace=False))
        return [_draw_driver(v, cov[v], rng) for v in names]

    for i in range(n_plants):
        crop = i < n_plants // 3
        sp = VirtualSpecies(
            f"plant_{i + 1:02d}", "plant", "crop" if crop else "wild",
            float(np.exp(rng.uniform(np.log(0.03), np.log(0.4)))),
        )
        sp.drivers = drivers(lc_crop if crop else lc_wild)
        sp.detection = float(rng.uniform(0.6, 0.95))
        f = _logit_sum(sp, cov)
        sp.intercept, q = _calibrate(f, ones, sp.target_prevalence)
        prob[sp.name] = suit[sp.name] = q
        species.append(sp)
    plants = [s for s in species if s.role == "plant"]
    crops = [s.name for s in plants if s.guild == "crop"]
    wild = [s.name for s in plants if s.guild == "wild"]

    edges: list[tuple[str, str, str]] = []
    for i in range(n_pests):
        sp = VirtualSpecies(f"pest_{i + 1:02d}", "pest", "herbivore", float(np.exp(rng.uniform(np.log(0.02), np.log(0.25)))))
        host_pool = crops if rng.uniform() < 0.7 else wild
        sp.partners = [str(h) for h in rng.choice(host_pool, int(rng.integers(1, 4)), replace=False)]
        sp.drivers = drivers(lc_crop + lc_wild)[: int(rng.integers(2, 4))]
        sp.detection = float(rng.uniform(0.5, 0.9))
        host_any = _any_present([prob[h] for h in sp.partners])
        f = _logit_sum(sp, cov)
        target = min(sp.target_prevalence, 0.7 * float(np.nanmean(host_any)))
        sp.intercept, q = _calibrate(f, host_any, target)
        suit[sp.name] = q
        prob[sp.name] = q * host_any
        species.append(sp)
        edges += [(h, sp.name, "herbivory") for h in sp.partners]
    pests = {s.name: s for s in species if s.role == "pest"}

    for i in range(n_enemies):
        parasitoid = i % 2 == 0
        sp = VirtualSpecies(
            f"enemy_{i + 1:02d}", "enemy", "parasitoid" if parasitoid else "predator",
            float(np.exp(rng.uniform(np.log(0.02), np.log(0.2)))),
        )
        prey = [str(k) for k in rng.choice(list(pests), int(rng.integers(1, 4)), replace=False)]
        while len(set(itertools.chain.from_iterable(pests[k].partners for k in prey))) > 8:
            prey.pop()
        sp.partners = prey
        sp.drivers = drivers(lc_wild)[: int(rng.integers(2, 4))]
        sp.detection = float(rng.uniform(0.4, 0.85))
        prey_any = _prob_any_prey([pests[k] for k in prey], prob, suit)
        f = _logit_sum(sp, cov)
        target = min(sp.target_prevalence, 0.7 * float(np.nanmean(prey_any)))
        sp.intercept, q = _calibrate(f, prey_any, target)
        suit[sp.name] = q
        prob[sp.name] = q * prey_any
        species.append(sp)
        edges += [(k, sp.name, "parasitism" if parasitoid else "predation") for k in prey]

    for sp in species:
        sp.prevalence = float(np.nanmean(prob[sp.name]))
    edge_df = pd.DataFrame(edges, columns=["source", "target", "interaction"])
    joint = np.stack([suit[t] * prob[s] for s, t, _ in edges]).astype(np.float32)
    return species, prob, suit, edge_df, joint


def _prob_any_prey(prey: list[VirtualSpecies], prob: dict[str, np.ndarray], suit: dict[str, np.ndarray]) -> np.ndarray:
    """P(at least one prey pest present), exact over the joint states of the prey's host plants."""
    hosts = sorted(set(itertools.chain.from_iterable(k.partners for k in prey)))
    p_none = np.zeros_like(prob[hosts[0]], dtype=np.float64)
    for state in itertools.product((0, 1), repeat=len(hosts)):
        w = np.ones_like(p_none)
        for h, z in zip(hosts, state):
            w *= prob[h] if z else 1.0 - prob[h]
        present = {h for h, z in zip(hosts, state) if z}
        none = np.ones_like(p_none)
        for k in prey:
            if present.intersection(k.partners):
                none *= 1.0 - suit[k.name]
        p_none += w * none
    return 1.0 - p_none


def realise(species: list[VirtualSpecies], prob: dict[str, np.ndarray], suit: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One realisation of the community following the biotic dependence (hosts before pests before enemies)."""
    z: dict[str, np.ndarray] = {}
    for sp in species:
        if sp.role == "plant":
            z[sp.name] = rng.uniform(size=prob[sp.name].shape) < prob[sp.name]
        else:
            partner_present = np.zeros(prob[sp.name].shape, dtype=bool)
            for k in sp.partners:
                partner_present |= z[k]
            z[sp.name] = (rng.uniform(size=prob[sp.name].shape) < suit[sp.name]) & partner_present
        z[sp.name] &= np.isfinite(prob[sp.name])
    return z


def make_records(
    species: list[VirtualSpecies],
    occurrence: dict[str, np.ndarray],
    suit: dict[str, np.ndarray],
    bias: np.ndarray,
    elevation: np.ndarray,
    lc_fractions: dict[int, np.ndarray],
    gbox: Any,
    *,
    po_scale: float,
    n_plots: int,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Presence-only records (GBIF-like, lon/lat) and survey records (Lambert-93) from one realisation."""
    from pyproj import Transformer

    res = abs(gbox.resolution.x)
    x0, y_top = gbox.affine.c, gbox.affine.f
    ny, nx = gbox.shape
    to_lonlat = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True)
    valid = np.isfinite(elevation)

    po_rows = []
    start = np.datetime64("2015-01-01")
    for sp in species:
        cells = np.flatnonzero(occurrence[sp.name].ravel() & valid.ravel())
        if cells.size == 0:
            continue
        n = max(5, int(round(po_scale * sp.prevalence**0.6)))
        w = bias.ravel()[cells].astype(np.float64)
        pick = rng.choice(cells, size=n, replace=True, p=w / w.sum())
        r, c = np.divmod(pick, nx)
        xs = x0 + (c + rng.uniform(size=n)) * res
        ys = y_top - (r + rng.uniform(size=n)) * res
        lon, lat = to_lonlat.transform(xs, ys)
        dates = start + rng.integers(0, 3650, size=n).astype("timedelta64[D]")
        po_rows.append(
            pd.DataFrame(
                {
                    "species": sp.name,
                    "decimalLongitude": np.round(lon, 6),
                    "decimalLatitude": np.round(lat, 6),
                    "eventDate": pd.to_datetime(dates).strftime("%Y-%m-%d"),
                    "basisOfRecord": "HUMAN_OBSERVATION",
                    "coordinateUncertaintyInMeters": 10.0,
                    "datasetName": "demo-citizen-science",
                    "countryCode": "FR",
                }
            )
        )
    po = pd.concat(po_rows, ignore_index=True)
    po.insert(0, "occurrenceID", [f"demo-po-{i:06d}" for i in range(len(po))])

    # Stratified plots: elevation terciles x dominant land-use group (farmland / forest / other).
    farm = sum(lc_fractions.get(k, 0) for k in (3, 4, 5, 6))
    forest = sum(lc_fractions.get(k, 0) for k in (7, 8))
    group = np.where(farm >= 0.5, 0, np.where(forest >= 0.5, 1, 2))
    terc = np.digitize(elevation, np.nanquantile(elevation, [1 / 3, 2 / 3]))
    stratum = (terc * 3 + group).ravel()
    cells_ok = np.flatnonzero(valid.ravel())
    per = max(1, n_plots // 9)
    chosen: list[int] = []
    for s in range(9):
        pool = cells_ok[stratum[cells_ok] == s]
        if pool.size:
            chosen += list(rng.choice(pool, size=min(per, pool.size), replace=False))
    plots = np.array(sorted(chosen))
    r, c = np.divmod(plots, nx)
    px = x0 + (c + 0.5) * res
    py = y_top - (r + 0.5) * res
    rows = []
    visit_dates = [np.datetime64("2024-05-15"), np.datetime64("2024-07-01")]
    for sp in species:
        z = occurrence[sp.name].ravel()[plots]
        for v, day in enumerate(visit_dates, start=1):
            detected = z & (rng.uniform(size=plots.size) < sp.detection)
            rows.append(
                pd.DataFrame(
                    {
                        "species": sp.name, "x": px, "y": py, "crs": "EPSG:2154", "kind": "presence_absence",
                        "value": detected.astype(np.float64), "plot_id": [f"plot-{p:06d}" for p in plots], "visit": v,
                        "plot_area_m2": res * res, "effort": 1.0,
                        "date": (day + rng.integers(-10, 10, size=plots.size).astype("timedelta64[D]")),
                        "dataset": "demo-survey",
                    }
                )
            )
        if sp.role == "pest":
            lam = rng.uniform(2.0, 15.0) * suit[sp.name].ravel()[plots] / max(float(np.nanmean(suit[sp.name])), 1e-6)
            counts = np.where(z, rng.poisson(np.clip(lam, 0, 1e4)), 0)
            rows.append(
                pd.DataFrame(
                    {
                        "species": sp.name, "x": px, "y": py, "crs": "EPSG:2154", "kind": "count",
                        "value": counts.astype(np.float64), "plot_id": [f"plot-{p:06d}" for p in plots], "visit": 1,
                        "plot_area_m2": res * res, "effort": 7.0,  # trap-days
                        "date": np.datetime64("2024-06-10"), "dataset": "demo-traps",
                    }
                )
            )
    surveys = pd.concat(rows, ignore_index=True)
    surveys["date"] = pd.to_datetime(surveys["date"])
    return po, surveys
