"""Feature encoding stored with a model: standardised numeric covariates and one-hot categorical ones.

A :class:`FeatureEncoder` is fitted once on the training sites and saved in the model's JSON config, so
prediction applies exactly the training scaling. ``transform`` takes a DataFrame or, on the prediction path,
a mapping of column name -> 1-D array (no DataFrame to build per batch; float columns are scaled in float32
without copies through pandas). Categorical covariates (pandas ``category``/object columns,
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

__all__ = ["Columns", "FeatureEncoder", "is_categorical", "check_columns", "column_values", "n_rows"]

#: Covariates by name: a DataFrame, or a mapping of column name -> 1-D array (all of one length).
Columns = pd.DataFrame | Mapping[str, np.ndarray]


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

    def transform(self, frame: Columns, *, what: str = "X") -> tuple[np.ndarray, np.ndarray]:
        """Encode ``frame`` (DataFrame or column mapping); returns the float32 ``(n, n_outputs)`` matrix and a
        boolean mask of valid rows.

        Invalid rows (a NaN numeric value or a missing categorical value) are zero in the matrix.
        """
        check_columns(frame, self.columns, what=what)
        n = n_rows(frame)
        out = np.zeros((n, self.n_outputs), dtype=np.float32)
        valid = np.ones(n, dtype=bool)
        k = 0
        for name in self.columns:
            col = frame[name]
            if name in self.categories:
                cats = self.categories[name]
                col = pd.Series(col) if not isinstance(col, pd.Series) else col
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
                z = out[:, k]  # a strided view: scaled in place, no temporaries
                np.subtract(column_values(col), self.means[name], out=z, casting="unsafe")
                np.multiply(z, np.float32(1.0 / self.scales[name]), out=z)
                valid &= np.isfinite(z)
                k += 1
        if not valid.all():
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


def n_rows(frame: Columns) -> int:
    """Rows of a DataFrame or of a column mapping (the length of its columns)."""
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if len(frame) else 0


def column_values(col: pd.Series | np.ndarray) -> np.ndarray:
    """A numeric column as an array: float arrays as they are (no copy), anything else coerced (NaN if not a number)."""
    if isinstance(col, np.ndarray) and col.dtype.kind == "f":
        return col
    if isinstance(col, pd.Series) and isinstance(col.dtype, np.dtype) and col.dtype.kind == "f":
        return col.to_numpy()
    if not isinstance(col, pd.Series):
        col = pd.Series(np.asarray(col))
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def check_columns(frame: Columns, columns: Sequence[str], *, what: str = "X") -> None:
    """Raise :class:`MissingVariableError` naming the covariates ``frame`` lacks."""
    if not isinstance(frame, (pd.DataFrame, Mapping)):
        raise InputError(f"{what} must be a pandas DataFrame (or a mapping of column -> array) with covariate "
                         f"columns; got {type(frame).__name__}")
    names = list(frame.columns) if isinstance(frame, pd.DataFrame) else list(frame)
    if isinstance(frame, Mapping) and len({len(v) for v in frame.values()}) > 1:
        raise InputError(f"{what} columns have different lengths {sorted({len(v) for v in frame.values()})}")
    missing = [c for c in columns if c not in names]
    if missing:
        have = [c for c in names if c not in missing][:30]
        raise MissingVariableError(
            f"{what} lacks covariate column(s) {missing} needed by the model; it has {have}. "
            "Extract them from the cube (geosdm.records.extract_covariates) or refit with other covariates."
        )
