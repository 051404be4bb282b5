"""Collinearity: drop covariates that are near-copies of others before a model is fitted.

Collinear covariates (WorldClim's temperature family, elevation and temperature, band reflectances of one
season) cannot be told apart by a model, so it spreads its use of their shared signal among them arbitrarily:
importances, response curves and attributions of any one of them mean little, and extrapolation under a
changed correlation is unsafe. The usual remedy (Dormann et al. 2013, *Ecography* 36: 27-46) keeps one
variable per correlated set, with ``|r| < 0.7`` between any two kept ones, chosen by the modeller's
preference (proximal, interpretable variables first).

:func:`select_covariates` does that greedily: candidates are visited in order (the ``prefer`` patterns first,
then the rest in the order given) and one is kept when its absolute correlation with every variable kept so
far is below ``threshold``. Constant and all-missing variables are dropped too. The result says, for every
dropped variable, which kept one it follows.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from geosdm.errors import InputError, MissingVariableError

__all__ = ["SELECTION_FILE", "CovariateSelection", "correlation_matrix", "select_covariates",
           "select_training_covariates"]

#: File name of a saved selection in a model folder.
SELECTION_FILE = "covariate_selection.json"


@dataclass(frozen=True)
class CovariateSelection:
    """Covariates kept by :func:`select_covariates`, and why each other one was dropped."""

    selected: tuple[str, ...]
    #: dropped variable -> (the kept variable it is collinear with, their correlation); ("", nan) when constant
    dropped: dict[str, tuple[str, float]] = field(default_factory=dict)
    threshold: float = 0.7
    method: str = "pearson"
    n_rows: int = 0

    def summary(self) -> str:
        """One line: how many were kept, and the dropped ones with the variable they follow."""
        reasons = ", ".join(f"{v} ~ {k} (r={r:+.2f})" if k else f"{v} (constant)" for v, (k, r) in self.dropped.items())
        return (f"kept {len(self.selected)} of {len(self.selected) + len(self.dropped)} covariates with |r| < "
                f"{self.threshold:g} ({self.method}, {self.n_rows} rows)" + (f"; dropped {reasons}" if reasons else ""))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (saved beside a model trained on the selection)."""
        return {"selected": list(self.selected), "threshold": self.threshold, "method": self.method,
                "n_rows": self.n_rows,
                "dropped": {v: {"follows": k or None, "r": None if not np.isfinite(r) else round(float(r), 4)}
                            for v, (k, r) in self.dropped.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CovariateSelection:
        """Inverse of :meth:`to_dict`."""
        dropped = {v: (x["follows"] or "", float("nan") if x["r"] is None else float(x["r"]))
                   for v, x in d["dropped"].items()}
        return cls(tuple(d["selected"]), dropped, float(d["threshold"]), str(d["method"]), int(d["n_rows"]))

    def save(self, folder: str | PathLike[str]) -> Path:
        """Write ``folder/covariate_selection.json`` atomically (beside a model fitted on the selection)."""
        target = Path(folder) / SELECTION_FILE
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, folder: str | PathLike[str]) -> CovariateSelection | None:
        """The selection saved in a model folder, or None when the model was fitted without the filter."""
        path = Path(folder) / SELECTION_FILE
        return cls.from_dict(json.loads(path.read_text())) if path.is_file() else None


def _columns(X: pd.DataFrame | Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
    missing = [n for n in names if n not in X]
    if missing:
        raise MissingVariableError(f"covariates {missing} are not columns of the data; pass names it has")
    return np.stack([pd.to_numeric(pd.Series(np.asarray(X[n]).ravel()), errors="coerce").to_numpy(dtype="float64")
                     for n in names])


def correlation_matrix(X: pd.DataFrame | Mapping[str, Any], variables: Sequence[str], *,
                       method: Literal["pearson", "spearman"] = "pearson") -> tuple[np.ndarray, int]:
    """Correlations ``(n_vars, n_vars)`` over the rows where every variable is finite, and that row count.

    Constant variables get NaN rows/columns (their correlation is undefined).
    """
    if method not in ("pearson", "spearman"):
        raise InputError(f"method={method!r} must be 'pearson' or 'spearman'")
    data = _columns(X, list(variables))
    ok = np.isfinite(data).all(axis=0)
    if ok.sum() < 3:
        raise InputError(f"the data have {int(ok.sum())} rows with every covariate finite; correlations need more "
                         "(drop all-missing covariates or pass more rows)")
    data = data[:, ok]
    if method == "spearman":
        data = np.stack([pd.Series(row).rank().to_numpy() for row in data])
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(data) if len(data) > 1 else np.ones((1, 1))
    return np.atleast_2d(r), int(ok.sum())


def _ordered(variables: Sequence[str], prefer: Sequence[str]) -> list[str]:
    order: list[str] = []
    for pattern in prefer:
        order += [v for v in variables if fnmatch.fnmatchcase(v, pattern) and v not in order]
    return order + [v for v in variables if v not in order]


def select_covariates(
    X: pd.DataFrame | Mapping[str, Any],
    variables: Sequence[str] | None = None,
    *,
    threshold: float = 0.7,
    prefer: Sequence[str] = (),
    method: Literal["pearson", "spearman"] = "pearson",
    max_rows: int | None = 100_000,
    seed: int = 0,
) -> CovariateSelection:
    """Keep covariates whose pairwise absolute correlation stays below ``threshold`` (greedy, by preference).

    Parameters
    ----------
    X
        Covariate values at points representing the study area (e.g. the background rows of a training table,
        or cells sampled from the cube): a DataFrame or a mapping of column arrays.
    variables
        Candidate covariates (default: every numeric column of ``X``).
    threshold
        Largest absolute correlation allowed between two kept covariates (0.7 is the usual rule).
    prefer
        Names or shell patterns (``"bio*"``, ``"lc_*"``) visited first, in this order: the variables the
        modeller would rather keep when two are collinear (the rest follow in the order of ``variables``).
    method
        ``"pearson"`` or ``"spearman"`` (rank correlation, for skewed or bounded covariates).
    max_rows
        Correlations are computed on at most this many rows (a seeded random subset).
    seed
        Seed of that subset.

    Returns
    -------
    CovariateSelection
        ``selected`` (in visiting order) and ``dropped`` (each with the kept variable it follows).

    Raises
    ------
    InputError
        ``threshold`` outside (0, 1], an unknown ``method``, or fewer than 3 rows with every candidate finite.
    MissingVariableError
        A candidate is not a column of ``X``.

    Example
    -------
    >>> sel = select_covariates(table[table.kind == "background"], covariates, prefer=["bio01", "bio12", "lc_*"])
    >>> sel.selected, sel.dropped["bio10"]  # doctest: +SKIP
    (('bio01', 'bio12', ...), ('bio01', 0.97))
    """
    if not 0 < float(threshold) <= 1:
        raise InputError(f"threshold={threshold} must be in (0, 1] (an absolute correlation, 0.7 is usual)")
    if variables is None:
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame({k: np.asarray(v).ravel() for k, v in X.items()})
        variables = [str(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
                     and not pd.api.types.is_bool_dtype(frame[c])]
    names = _ordered(list(dict.fromkeys(variables)), list(prefer))
    if not names:
        raise InputError("no candidate covariates: pass variables= or a frame with numeric columns")
    missing = [n for n in names if n not in X]
    if missing:
        raise MissingVariableError(f"covariates {missing} are not columns of the data; pass names it has")
    rows = len(next(iter(X.values())) if not isinstance(X, pd.DataFrame) else X)
    if max_rows is not None and rows > max_rows:
        take = np.sort(np.random.default_rng(seed).choice(rows, size=int(max_rows), replace=False))
        X = {n: np.asarray(X[n]).ravel()[take] for n in names}
    data = {n: np.asarray(X[n]).ravel() for n in names}
    finite = {n: np.isfinite(pd.to_numeric(pd.Series(a), errors="coerce").to_numpy(dtype="float64")) for n, a in
              data.items()}
    dropped: dict[str, tuple[str, float]] = {}
    usable = []
    for n in names:  # all-missing / constant variables first, so they cannot empty the common rows
        col = pd.to_numeric(pd.Series(data[n]), errors="coerce").to_numpy(dtype="float64")[finite[n]]
        if col.size < 3 or np.nanstd(col) == 0:
            dropped[n] = ("", float("nan"))
        else:
            usable.append(n)
    if not usable:
        raise InputError(f"every candidate covariate is constant or missing: {names}")
    r, n_rows = correlation_matrix(data, usable, method=method)
    kept: list[int] = []
    for i, n in enumerate(usable):
        hits = [(abs(float(r[i, k])), k) for k in kept if np.isfinite(r[i, k]) and abs(r[i, k]) >= threshold]
        if hits:
            _, k = max(hits)
            dropped[n] = (usable[k], float(r[i, k]))
        else:
            kept.append(i)
    order = {n: i for i, n in enumerate(names)}
    return CovariateSelection(tuple(usable[k] for k in kept), dict(sorted(dropped.items(), key=lambda t: order[t[0]])),
                              float(threshold), method, n_rows)


def select_training_covariates(table: pd.DataFrame, covariates: Sequence[str] | None = None, *,
                               threshold: float = 0.7, prefer: Sequence[str] = (), exclude: Sequence[str] = (),
                               method: Literal["pearson", "spearman"] = "pearson") -> CovariateSelection:
    """:func:`select_covariates` on a training table: correlations over its background rows (the study area;
    all rows when it has fewer than 100), candidates = ``covariates`` or its numeric columns other than the
    record columns, ``fold`` and ``exclude`` (e.g. observer-bias columns).

    Example
    -------
    >>> sel = select_training_covariates(pd.read_parquet("training.parquet"), prefer=["bio*"], exclude=["bias"])
    """
    from geosdm.records.schema import NON_COVARIATES

    if covariates is None:
        reserved = set(NON_COVARIATES) | set(exclude)
        covariates = [str(c) for c in table.columns if c not in reserved and pd.api.types.is_numeric_dtype(table[c])
                      and not pd.api.types.is_bool_dtype(table[c])]
    rows = table[table["kind"].astype(str) == "background"] if "kind" in table.columns else table
    return select_covariates(rows if len(rows) >= 100 else table, list(covariates), threshold=threshold,
                             prefer=prefer, method=method)
