"""Pure NumPy formulas of the interaction models (per pixel; used per tile and at survey plots).

Notation: ``p`` marginal presence probabilities, ``A`` the probability that at least one of a consumer's
resources is present, ``eps`` the consumer's leakage (probability of occurring without any listed resource,
given suitable conditions), ``psi`` an odds ratio. See :mod:`geosdm.interactions.layers` for the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["any_present", "dependence_conditional", "dependence_joint", "plackett_joint", "plackett_conditional",
           "frechet"]


def any_present(ps: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """P(at least one present) for independent species: ``1 - prod(1 - p)`` over the first axis."""
    out = np.ones_like(np.asarray(ps[0], dtype=np.float64))
    for p in ps:
        out = out * (1.0 - p)
    return 1.0 - out


def dependence_conditional(p_t: np.ndarray, a_t: np.ndarray, eps: float) -> np.ndarray:
    """``q = P(t present | one of its resources present) = p_t / (eps + (1 - eps) A_t)``, clipped to [0, 1].

    Where ``A_t`` and ``eps`` are both 0 (no resource can be there, no leakage) the ratio is undefined: 1 when
    ``p_t > 0`` (the model says the consumer is there, so its resource must be), 0 when ``p_t == 0``.
    """
    den = eps + (1.0 - eps) * a_t
    q = np.divide(p_t, den, out=np.where(p_t > 0, 1.0, 0.0).astype(np.float64), where=den > 0)
    q = np.clip(q, 0.0, 1.0)
    q[np.isnan(p_t) | np.isnan(a_t)] = np.nan
    return q


def frechet(joint: np.ndarray, p_s: np.ndarray, p_t: np.ndarray) -> np.ndarray:
    """Clip a joint probability to the Fréchet bounds ``[max(0, p_s + p_t - 1), min(p_s, p_t)]``."""
    return np.clip(joint, np.maximum(p_s + p_t - 1.0, 0.0), np.minimum(p_s, p_t))


def dependence_joint(p_s: np.ndarray, p_t: np.ndarray, a_t: np.ndarray, eps: float) -> np.ndarray:
    """P(resource s and consumer t present) = ``p_s q_t`` (s present implies a resource of t is present)."""
    return frechet(p_s * dependence_conditional(p_t, a_t, eps), p_s, p_t)


def plackett_joint(p1: np.ndarray, p2: np.ndarray, psi: float) -> np.ndarray:
    """Joint P(both) of two binary variables with marginals ``p1``, ``p2`` and odds ratio ``psi`` (Plackett 1965).

    ``psi = 1`` is independence, ``psi -> inf`` the upper Fréchet bound ``min(p1, p2)``, ``psi -> 0`` the lower.
    """
    if abs(psi - 1.0) < 1e-9:
        return p1 * p2
    a = 1.0 + (psi - 1.0) * (p1 + p2)
    disc = np.maximum(a * a - 4.0 * psi * (psi - 1.0) * p1 * p2, 0.0)
    # the root with the minus sign; rewritten to avoid cancellation when a ~ sqrt(disc)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = 2.0 * psi * p1 * p2 / (a + np.sqrt(disc))
    return frechet(np.where(np.isfinite(j), j, np.minimum(p1, p2)), p1, p2)


def plackett_conditional(p_s: np.ndarray, p_t: np.ndarray, psi: float) -> np.ndarray:
    """P(t present | s present) under a Plackett joint; its limit ``psi p_t / (1 - p_t + psi p_t)`` as p_s -> 0."""
    j = plackett_joint(p_s, p_t, psi)
    limit = psi * p_t / np.maximum(1.0 - p_t + psi * p_t, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(p_s > 1e-6, j / np.where(p_s > 1e-6, p_s, 1.0), limit)
    return np.clip(c, 0.0, 1.0)
