"""Intervals for calibrated probabilities that cover the true probability, fitted without the truth.

A deep ensemble's spread measures how the fit moves with its seed; the error of a species map against the true
probability is mostly something else (covariates that are proxies, observer bias, a missed partner species), and
its 90 % intervals cover the truth for a third of cells. geosdm models that error instead:

    true p  ~  Beta(p̂ φ, (1 - p̂) φ)            (mean p̂, variance p̂ (1 - p̂) / (φ + 1))

around the calibrated probability ``p̂``, with one precision ``φ`` per model estimated from held-out surveys.
One survey plot cannot tell how far its true probability is from the map (its outcome is one Bernoulli draw:
``E[(y - p̂)^2]`` does not depend on the spread of ``p`` around ``p̂``), but two distinct plots close together
can: their occupancy draws are independent, their errors are not, so

    E[(o_i - D_i p̂_i)(o_j - D_j p̂_j)] / (D_i D_j)  =  E[e_i e_j]  ≈  E[e^2]

for neighbouring plots ``i, j`` (``o``: detected in any visit, ``D``: the detectability of the survey, ``e = p -
p̂``), pooled over species. The held-out probabilities are cross-fitted
(:func:`geosdm.models.heldout.cross_fitted`: no plot is predicted or calibrated by a model that saw its fold;
:func:`geosdm.models.heldout.fit_error_model` fits ``φ`` from them). Errors that vary faster than the plots'
spacing are not seen, so ``φ`` is an upper bound (intervals a little narrow); the benchmark
(``benchmarks/calibration.py``) measures the coverage against the demo's truth.

**Cross-species error correlation.** The same pairs estimate how the errors of two species move together:
``E[r_s,i r_t,j] / (D D) = E[e_s e_t]``, so ``rho_st = (phi + 1) * sum(r_s,i r_t,j + r_t,i r_s,j) / sum(sqrt(v_s,i
v_t,j) + sqrt(v_t,i v_s,j))`` (``v = p̂ (1 - p̂)``) is the Gaussian copula's correlation of the two species'
errors. One species pair is supported by a few hundred noisy terms, so each estimate is shrunk (empirical Bayes)
toward the pooled mean of all pairs by its own standard error: pairs with little support end at the pooled
value (the identity when the surveys show no shared error), and the matrix is projected to the nearest
positive-definite correlation. :func:`geosdm.interactions.interaction_uncertainty` draws joint samples of the
species' true probabilities with it (``p_s = ppf(p̂_s, Φ(z_s))``, ``z ~ N(0, R)``).

Interval bounds are rounded outward to the probability layers' storage step (``1/250``, the ``uint8`` scale), so
a stored interval always contains the computed one and a true probability of 1e-5 lies in ``[0, 0.004]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from geosdm.errors import InputError

log = logging.getLogger(__name__)

# fit_error_model (from held-out predictions) lives in geosdm.models.heldout, which builds on this module
__all__ = ["ErrorModel", "error_model_from_surveys", "outward"]

#: The probability layers' uint8 storage step (0-250).
STEP = 1.0 / 250.0
_LOGIT = np.linspace(-14.0, 14.0, 561)  # table rows: logit of the mean probability
_Z = np.linspace(-4.5, 4.5, 181)  # table columns: normal scores of the quantile level


def outward(lower: np.ndarray, upper: np.ndarray, step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds rounded outward to multiples of ``step`` (the stored interval contains the computed one)."""
    lo = np.floor(np.asarray(lower, dtype="float64") / step) * step
    hi = np.ceil(np.asarray(upper, dtype="float64") / step) * step
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


@dataclass
class ErrorModel:
    """The Beta error model of calibrated probabilities (see the module docstring); JSON with :meth:`to_dict`.

    Attributes
    ----------
    precision
        ``φ``: the true probability's variance around ``p̂`` is ``p̂ (1 - p̂) / (φ + 1)``.
    pair_covariance
        The pooled ``E[e_i e_j]`` of neighbouring held-out plots it was estimated from.
    n_pairs, n_terms
        Plot pairs, and (pair, species) terms in the average.
    max_distance
        Largest distance between paired plots (the records' CRS units; metres for projected CRSs).
    precision_range
        5-95 % range of ``φ`` over a bootstrap of the pairs (how well the surveys pin it).
    correlation, correlation_species
        The cross-species error correlation ``R`` (Gaussian copula, see the module docstring) and its species
        (None: not estimated; :meth:`correlation_for` then gives the identity).
    correlation_pooled
        The pooled mean correlation the pairs are shrunk toward.
    """

    precision: float
    pair_covariance: float = float("nan")
    n_pairs: int = 0
    n_terms: int = 0
    max_distance: float = float("nan")
    precision_range: tuple[float, float] = (float("nan"), float("nan"))
    kind: str = "beta"
    correlation: np.ndarray | None = field(default=None, compare=False, repr=False)
    correlation_species: tuple[str, ...] = ()
    correlation_pooled: float = float("nan")
    _table: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.precision) and self.precision > 0):
            raise InputError(f"precision={self.precision} must be a positive number (φ of the Beta error model)")
        if self.correlation is not None:
            r = np.asarray(self.correlation, dtype="float64")
            n = len(self.correlation_species)
            if r.shape != (n, n) or not np.isfinite(r).all():
                raise InputError(f"correlation must be a finite ({n}, {n}) matrix for correlation_species; got "
                                 f"shape {r.shape}")
            self.correlation = r
            self.correlation_species = tuple(str(s) for s in self.correlation_species)

    def correlation_for(self, species: Any) -> np.ndarray:
        """The error correlation matrix of ``species`` (a sub-matrix of :attr:`correlation`; rows of species it
        does not know, or all rows when it was not estimated, are those of the identity)."""
        names = [str(s) for s in species]
        out = np.eye(len(names))
        if self.correlation is None:
            return out
        pos = {s: k for k, s in enumerate(self.correlation_species)}
        known = [i for i, s in enumerate(names) if s in pos]
        idx = [pos[names[i]] for i in known]
        out[np.ix_(known, known)] = self.correlation[np.ix_(idx, idx)]
        return out

    # ------------------------------------------------------------------------------------------ evaluation
    def sd(self, p: np.ndarray) -> np.ndarray:
        """Standard deviation of the true probability around ``p``."""
        p = np.asarray(p, dtype="float64")
        return np.sqrt(np.clip(p * (1.0 - p), 0.0, None) / (self.precision + 1.0))

    def _lookup(self) -> np.ndarray:
        """logit of the Beta quantiles on the (logit mean, normal score) grid, computed once per model."""
        if self._table is None:
            mean = special.expit(_LOGIT)[:, None]
            u = special.ndtr(_Z)[None, :]
            q = special.betaincinv(mean * self.precision, (1.0 - mean) * self.precision, u)
            q = np.clip(q, 1e-300, 1.0 - 1e-16)
            self._table = special.logit(q)
        return self._table

    def _column(self, u: float) -> np.ndarray:
        """The table's column for one quantile level (linear in its normal score)."""
        table = self._lookup()
        b = (np.clip(float(special.ndtri(np.clip(u, 1e-9, 1 - 1e-9))), _Z[0], _Z[-1]) - _Z[0]) / (_Z[1] - _Z[0])
        j = min(int(b), len(_Z) - 2)
        return (1 - (b - j)) * table[:, j] + (b - j) * table[:, j + 1]

    @staticmethod
    def _logit(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional row positions of ``p`` in the table (float32) and its finite mask."""
        p = np.asarray(p, dtype=np.float32)
        finite = np.isfinite(p)
        lp = special.logit(np.clip(np.where(finite, p, 0.5), 1e-12, 1 - 1e-12))
        return np.clip((lp - _LOGIT[0]) / (_LOGIT[1] - _LOGIT[0]), 0, len(_LOGIT) - 1.0001).astype(np.float32), finite

    def ppf(self, p: np.ndarray, u: np.ndarray | float) -> np.ndarray:
        """The ``u`` quantile of the true probability given the map's ``p`` (elementwise, broadcast; interpolation
        of a table in logit space, exact to about 1e-3 relative). A scalar ``u`` takes a 1-D path (fast)."""
        a, finite = self._logit(p)
        if np.ndim(u) == 0:
            return self._at(a, finite, self._column(float(u)))
        table = self._lookup()
        z = special.ndtri(np.clip(np.asarray(u, dtype="float64"), 1e-9, 1 - 1e-9))
        b = (np.clip(z, _Z[0], _Z[-1]) - _Z[0]) / (_Z[1] - _Z[0])
        a, b = np.broadcast_arrays(a, b)
        i = a.astype(np.int64)
        j = np.minimum(b.astype(np.int64), len(_Z) - 2)
        fa, fb = a - i, b - j
        v = ((1 - fa) * (1 - fb) * table[i, j] + fa * (1 - fb) * table[i + 1, j]
             + (1 - fa) * fb * table[i, j + 1] + fa * fb * table[i + 1, j + 1])
        return np.where(np.broadcast_to(finite, v.shape), special.expit(v), np.nan)

    @staticmethod
    def _at(a: np.ndarray, finite: np.ndarray, column: np.ndarray) -> np.ndarray:
        i = a.astype(np.int32)
        f = a - i
        col = column.astype(np.float32)
        v = col[i] * (1 - f) + col[i + 1] * f
        return np.where(finite, special.expit(v), np.float32(np.nan))

    def interval(self, p: np.ndarray, level: float = 0.9, step: float | None = STEP) -> tuple[np.ndarray, np.ndarray]:
        """Central ``level`` interval of the true probability given ``p``, rounded outward to ``step``."""
        if not 0 < level < 1:
            raise InputError(f"level={level} must be in (0, 1), e.g. 0.9")
        lo, hi = self.ppf(p, (1 - level) / 2), self.ppf(p, (1 + level) / 2)
        return outward(lo, hi, step) if step else (lo, hi)

    def quantiles(self, p: np.ndarray, levels: Any, step: float | None = STEP) -> list[np.ndarray]:
        """Quantiles of the true probability given ``p`` at each level; those below the median rounded down to
        ``step``, those above rounded up (so ``[q05, q95]`` is outward-rounded), the median left as is."""
        a, finite = self._logit(p)
        out = []
        for q in levels:
            v = self._at(a, finite, self._column(float(q)))
            if step and q != 0.5:
                v = outward(v, v, step)[0 if q < 0.5 else 1]
            out.append(v)
        return out

    # ---------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "precision": float(self.precision), "pair_covariance": float(self.pair_covariance),
             "n_pairs": int(self.n_pairs), "n_terms": int(self.n_terms), "max_distance": float(self.max_distance),
             "precision_range": [float(v) for v in self.precision_range]}
        if self.correlation is not None:
            d["correlation"] = {"species": list(self.correlation_species), "pooled": float(self.correlation_pooled),
                                "matrix": np.round(self.correlation, 4).tolist()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorModel:
        if d.get("kind", "beta") != "beta":
            raise InputError(f"error model kind {d.get('kind')!r} is unknown (this geosdm reads 'beta')")
        corr = d.get("correlation") or {}
        return cls(float(d["precision"]), float(d.get("pair_covariance", np.nan)), int(d.get("n_pairs", 0)),
                   int(d.get("n_terms", 0)), float(d.get("max_distance", np.nan)),
                   tuple(d.get("precision_range", (np.nan, np.nan))),  # type: ignore[arg-type]
                   correlation=np.asarray(corr["matrix"], dtype="float64") if corr else None,
                   correlation_species=tuple(corr.get("species", ())),
                   correlation_pooled=float(corr.get("pooled", np.nan)))


def _neighbour_pairs(xy: np.ndarray, max_distance: float | None) -> tuple[np.ndarray, float]:
    """Each plot with its nearest other plot, each pair once; pairs farther than ``max_distance`` (default:
    twice the median nearest-neighbour distance) dropped. Returns ``(pairs (n, 2), largest distance kept)``."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(xy).query(xy, k=2)
    d, j = d[:, 1], j[:, 1]
    limit = float(max_distance) if max_distance is not None else 2.0 * float(np.median(d))
    i = np.arange(len(xy))
    keep = d <= limit
    pairs = np.unique(np.sort(np.c_[i[keep], j[keep]], axis=1), axis=0)
    dist = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1) if len(pairs) else np.array([np.nan])
    return pairs, float(np.nanmax(dist))


def error_model_from_surveys(xy: np.ndarray, observed: np.ndarray, probability: np.ndarray,
                             detectability: np.ndarray | float = 1.0, *, max_distance: float | None = None,
                             min_pairs: int = 30, n_boot: int = 200, seed: int = 0,
                             species: Any = None) -> ErrorModel:
    """The estimator of :func:`fit_error_model` on arrays: plot coordinates ``(n, 2)``, detected in any visit
    ``(n, species)`` (0/1, NaN = not surveyed), held-out calibrated occupancy probabilities ``(n, species)`` and
    the surveys' detectability (``1 - (1 - d)^visits``; 1 = perfect detection). ``species``: the columns' names
    (default ``"0"``, ``"1"``...), for the cross-species error correlation."""
    p_arr = np.asarray(probability, dtype="float64")
    D = np.broadcast_to(np.asarray(detectability, dtype="float64"), p_arr.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (np.asarray(observed, dtype="float64") - D * p_arr) / D
    xy = np.asarray(xy, dtype="float64")
    ok = np.isfinite(xy).all(axis=1)
    if ok.sum() < 2 * min_pairs:
        raise InputError(f"{int(ok.sum())} survey plots with coordinates; the interval model needs pairs of "
                         f"neighbouring plots (at least {min_pairs})")
    idx = np.flatnonzero(ok)
    pairs, reach = _neighbour_pairs(xy[ok], max_distance)
    pairs = idx[pairs]
    if len(pairs) < min_pairs:
        raise InputError(f"{len(pairs)} pairs of neighbouring survey plots within {reach:g}; the interval model "
                         f"needs at least {min_pairs} (pass max_distance= or use more plots)")
    a, b = pairs[:, 0], pairs[:, 1]
    prod = r[a] * r[b]  # (pairs, species)
    v = np.sqrt(np.clip(p_arr[a] * (1 - p_arr[a]), 0, None) * np.clip(p_arr[b] * (1 - p_arr[b]), 0, None))
    use = np.isfinite(prod) & np.isfinite(v)

    def precision(rows: np.ndarray) -> tuple[float, float]:
        u = use[rows]
        cov = float(prod[rows][u].mean()) if u.any() else float("nan")
        var = float(v[rows][u].mean()) if u.any() else float("nan")
        return (var / cov - 1.0 if cov > 0 else np.inf), cov

    phi, cov = precision(np.arange(len(pairs)))
    rng = np.random.default_rng(seed)
    boots = np.array([precision(rng.integers(0, len(pairs), len(pairs)))[0] for _ in range(int(n_boot))])
    boots = np.clip(boots, 0.5, 1e4)
    if not np.isfinite(phi) or phi > 1e4:
        log.warning("neighbouring survey plots show no shared error (pooled residual product %.3g): the interval "
                    "model assumes a small error (precision 1e4)", cov)
    phi = float(np.clip(phi, 0.5, 1e4))
    names = [str(s) for s in species] if species is not None else [str(k) for k in range(p_arr.shape[1])]
    if len(names) != p_arr.shape[1]:
        raise InputError(f"species names {len(names)} != {p_arr.shape[1]} probability columns")
    corr, pooled = _error_correlation(r, p_arr, a, b, phi)
    model = ErrorModel(phi, cov, len(pairs), int(use.sum()), reach,
                       (float(np.quantile(boots, 0.05)), float(np.quantile(boots, 0.95))),
                       correlation=corr, correlation_species=tuple(names), correlation_pooled=pooled)
    log.info("interval model: precision %.3g (5-95%% %.3g-%.3g) from %d neighbouring plot pairs within %.4g",
             phi, *model.precision_range, len(pairs), reach)
    return model


def _nearest_correlation(r: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """The symmetric matrix ``r`` with its eigenvalues raised to ``floor`` and rescaled to a unit diagonal."""
    w, v = np.linalg.eigh((r + r.T) / 2)
    out = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(out))
    out = out / d[:, None] / d[None, :]
    np.fill_diagonal(out, 1.0)
    return out


def _error_correlation(r: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray,
                       phi: float) -> tuple[np.ndarray, float]:
    """Cross-species error correlation from neighbouring plot pairs ``(a, b)`` (module docstring): raw estimates,
    their standard errors, empirical-Bayes shrinkage toward the pooled mean, nearest correlation matrix."""
    k = r.shape[1]
    if k < 2:
        return np.eye(k), float("nan")
    v = np.sqrt(np.clip(p * (1 - p), 0, None))
    ok = np.isfinite(r) & np.isfinite(v)
    rr, vv = np.where(ok, r, 0.0), np.where(ok, v, 0.0)
    ra, rb, va, vb = rr[a], rr[b], vv[a], vv[b]
    num = ra.T @ rb + rb.T @ ra  # sum of r_s,a r_t,b + r_t,a r_s,b
    den = va.T @ vb + vb.T @ va
    var = (ra**2).T @ (rb**2) + (rb**2).T @ (ra**2) + 2 * (ra * rb).T @ (ra * rb)  # of num (terms ~ independent)
    scale = phi + 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = scale * num / den
        se = scale * np.sqrt(var) / den
    off = ~np.eye(k, dtype=bool) & np.isfinite(raw) & np.isfinite(se) & (se > 0)
    if not off.any():
        return np.eye(k), float("nan")
    w = 1.0 / se[off] ** 2
    pooled = float(np.sum(w * raw[off]) / np.sum(w))
    pooled = float(np.clip(pooled, -1.0 / (k - 1), 0.95))
    tau2 = max(0.0, float(np.mean((raw[off] - pooled) ** 2) - np.mean(se[off] ** 2)))
    out = np.full((k, k), pooled)
    shrink = tau2 / (tau2 + se[off] ** 2)
    out[off] = pooled + shrink * (raw[off] - pooled)
    out = np.clip(out, -0.95, 0.95)
    np.fill_diagonal(out, 1.0)
    out = _nearest_correlation(out)
    log.info("interval model: cross-species error correlation pooled %.3g, spread %.3g over %d species pairs",
             pooled, np.sqrt(tau2), int(off.sum()) // 2)
    return out, pooled
