"""Feature encoding stored with a model: standardised numeric covariates and one-hot categorical ones.

A :class:`FeatureEncoder` is fitted once on the training sites and saved in the model's JSON config, so
prediction applies exactly the training scaling. Categorical covariates (pandas ``category``/object columns,
or names passed as ``categorical``) become one column per training category; unseen categories encode as
all zeros. Non-finite inputs make the row invalid (reported, never silently imputed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import InputError, MissingVariableError

__all__ = ["FeatureEncoder", "is_categorical"]


def is_categorical(values: pd.Series) -> bool:
    """True for pandas ``category``, object, string and boolean columns."""
    dtype = values.dtype
    return isinstance(dtype, pd.CategoricalDtype) or dtype == object or pd.api.types.is_string_dtype(dtype)


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v if isinstance(v, (int, float, str, bool)) else str(v)


@dataclass(frozen=True)
class FeatureEncoder:
    """Column-wise encoding of covariates to a float32 matrix.

    Attributes
    ----------
    columns
        Input covariate names, in order.
    means, scales
        Per numeric column: the training mean and standard deviation (1 where constant).
    categories
        Per categorical column: the training categories (one output column each).
    """

    columns: tuple[str, ...]
    means: Mapping[str, float] = field(default_factory=dict)
    scales: Mapping[str, float] = field(default_factory=dict)
    categories: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: Sequence[str], *, categorical: Sequence[str] = (), what: str = "X"
    ) -> FeatureEncoder:
        """Learn means/scales (numeric) and categories (categorical) from the finite rows of ``frame``."""
        check_columns(frame, columns, what=what)
        means: dict[str, float] = {}
        scales: dict[str, float] = {}
        cats: dict[str, tuple[Any, ...]] = {}
        for name in columns:
            col = frame[name]
            if name in categorical or is_categorical(col):
                if isinstance(col.dtype, pd.CategoricalDtype):
                    values = [c for c in col.cat.categories if (col == c).any()]
                else:
                    values = sorted(pd.unique(col.dropna()).tolist(), key=str)
                cats[name] = tuple(_json_value(v) for v in values)
            else:
                v = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                v = v[np.isfinite(v)]
                if not len(v):
                    raise InputError(f"{what} column {name!r} has no finite values; drop it from the covariates")
                sd = float(v.std())
                means[name], scales[name] = float(v.mean()), sd if sd > 0 else 1.0
        return cls(tuple(columns), means, scales, cats)

    @property
    def output_names(self) -> list[str]:
        """Names of the encoded columns (``name`` or ``name=category``)."""
        out: list[str] = []
        for name in self.columns:
            if name in self.categories:
                out += [f"{name}={c}" for c in self.categories[name]]
            else:
                out.append(name)
        return out

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def transform(self, frame: pd.DataFrame, *, what: str = "X") -> tuple[np.ndarray, np.ndarray]:
        """Encode ``frame``; returns the float32 ``(n, n_outputs)`` matrix and a boolean mask of valid rows.

        Invalid rows (a NaN numeric value or a missing categorical value) are zero in the matrix.
        """
        check_columns(frame, self.columns, what=what)
        n = len(frame)
        out = np.zeros((n, self.n_outputs), dtype=np.float32)
        valid = np.ones(n, dtype=bool)
        k = 0
        for name in self.columns:
            col = frame[name]
            if name in self.categories:
                cats = self.categories[name]
                values = col.astype(object).to_numpy()
                missing = pd.isna(col).to_numpy()
                valid &= ~missing
                lookup = {c: i for i, c in enumerate(cats)}
                lookup.update({str(c): i for i, c in enumerate(cats)})
                idx = np.array([lookup.get(_json_value(v), lookup.get(str(v), -1)) if not m else -1
                                for v, m in zip(values, missing)], dtype=np.int64)
                hit = idx >= 0
                out[np.flatnonzero(hit), k + idx[hit]] = 1.0
                k += len(cats)
            else:
                v = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                ok = np.isfinite(v)
                valid &= ok
                out[:, k] = np.where(ok, (v - self.means[name]) / self.scales[name], 0.0)
                k += 1
        out[~valid] = 0.0
        return out, valid

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored in the model config)."""
        return {
            "columns": list(self.columns),
            "means": dict(self.means),
            "scales": dict(self.scales),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(data["columns"]),
            dict(data.get("means", {})),
            dict(data.get("scales", {})),
            {k: tuple(v) for k, v in data.get("categories", {}).items()},
        )


def check_columns(frame: pd.DataFrame, columns: Sequence[str], *, what: str = "X") -> None:
    """Raise :class:`MissingVariableError` naming the covariates ``frame`` lacks."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} must be a pandas DataFrame with covariate columns; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = [c for c in frame.columns if c not in missing][:30]
        raise MissingVariableError(
            f"{what} lacks covariate column(s) {missing} needed by the model; it has {have}. "
            "Extract them from the cube (geosdm.records.extract_covariates) or refit with other covariates."
        )
