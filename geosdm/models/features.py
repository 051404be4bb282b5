"""Feature encoding stored with a model: standardised numeric covariates and one-hot categorical ones.

A :class:`FeatureEncoder` is fitted once on the training sites and saved in the model's JSON config, so
prediction applies exactly the training scaling. ``transform`` takes a DataFrame or, on the prediction path,
a mapping of column name -> 1-D array (no DataFrame to build per batch; float columns are scaled in float32
without copies through pandas). Categorical covariates (pandas ``category``/object columns,
or names passed as ``categorical``) become one column per training category; unseen categories encode as
all zeros. Non-finite inputs make the row invalid (reported, never silently imputed).

The encoder also keeps each numeric column's training range (finite min, max); :meth:`FeatureEncoder.check`
compares prediction inputs with it and with the training categories, so a covariate in other units (bio01 in
Kelvin where the model learned °C) or a class the model never saw is reported by name rather than predicted
silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import InputError, MissingVariableError

__all__ = ["Columns", "FeatureEncoder", "is_categorical", "check_columns", "column_values", "n_rows",
           "FAR_OUTSIDE", "warn_unseen_inputs"]

#: Covariates by name: a DataFrame, or a mapping of column name -> 1-D array (all of one length).
Columns = pd.DataFrame | Mapping[str, np.ndarray]

#: An input is "far outside" its training range [lo, hi] beyond ``FAR_OUTSIDE`` times the range's width (or
#: 3 training standard deviations when wider) on either side: ordinary extrapolation (a warmer climate, a
#: wider region) stays inside, other units (Kelvin for °C: +273; a x10 scale factor) do not.
FAR_OUTSIDE = 1.0


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
    ranges
        Per numeric column: the training (min, max) of its finite values (empty for models saved before
        ranges were stored: :meth:`check` then uses mean ± 3 sd).
    """

    columns: tuple[str, ...]
    means: Mapping[str, float] = field(default_factory=dict)
    scales: Mapping[str, float] = field(default_factory=dict)
    categories: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, columns: Sequence[str], *, categorical: Sequence[str] = (), what: str = "X"
    ) -> FeatureEncoder:
        """Learn means/scales (numeric) and categories (categorical) from the finite rows of ``frame``."""
        check_columns(frame, columns, what=what)
        means: dict[str, float] = {}
        scales: dict[str, float] = {}
        cats: dict[str, tuple[Any, ...]] = {}
        ranges: dict[str, tuple[float, float]] = {}
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
                ranges[name] = (float(v.min()), float(v.max()))
        return cls(tuple(columns), means, scales, cats, ranges)

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

    def check(self, frame: Columns, *, columns: Sequence[str] | None = None, what: str = "prediction input"
              ) -> dict[str, str]:
        """Covariate name -> message, for inputs the model was not trained on: numeric columns with values far
        outside their training range (:data:`FAR_OUTSIDE`; likely other units) and categorical columns holding
        classes absent from training (they encode as no class). One min/max pass per numeric column, one
        ``unique`` per categorical one. ``columns``: the columns to check (default: the encoder's)."""
        out: dict[str, str] = {}
        for name in self.columns if columns is None else columns:
            if name not in frame:
                continue
            if name in self.categories:
                col = frame[name]
                values = np.asarray(col.to_numpy() if isinstance(col, pd.Series) else col)
                if values.dtype.kind == "f":
                    values = values[np.isfinite(values)]
                else:
                    values = values[~pd.isna(values)]
                cats = self.categories[name]
                known = {*cats, *(str(c) for c in cats)}  # as transform's lookup: 3 == 3.0, or equal as text
                unseen = [v for v in pd.unique(values).tolist()
                          if _json_value(v) not in known and str(v) not in known]
                if unseen:
                    shown = sorted(unseen, key=str)[:10]
                    out[name] = (f"{what}: categorical covariate {name!r} holds class(es) {shown} that the model "
                                 f"never saw in training (it knows {list(cats)[:20]}); those cells are predicted "
                                 "as if no class were present. Map them to a known class (or to NaN to leave them "
                                 "out), or refit with training data that cover them")
                continue
            if name not in self.means:
                continue
            values = column_values(frame[name])
            lo, hi = (float(np.fmin.reduce(values, initial=np.inf)), float(np.fmax.reduce(values, initial=-np.inf)))
            if not np.isfinite(lo):
                continue  # no finite value: nodata, not a range problem
            mean, sd = float(self.means[name]), float(self.scales[name])
            if name in self.ranges:
                tlo, thi = (float(v) for v in self.ranges[name])
                trained = f"its training range {tlo:.6g} to {thi:.6g}"
            else:
                tlo, thi = mean - 3 * sd, mean + 3 * sd
                trained = f"its training mean ± 3 sd, {tlo:.6g} to {thi:.6g} (the model predates stored ranges)"
            margin = FAR_OUTSIDE * max(thi - tlo, 3 * sd)
            if lo >= tlo - margin and hi <= thi + margin:
                continue
            slack = 0.25 * max(thi - tlo, 3 * sd)  # "fits once converted": inside the range, give or take

            def fits(a: float, b: float) -> bool:  # and at least half of [a, b] inside the training range
                a, b = min(a, b), max(a, b)
                inside = min(b, thi) - max(a, tlo)
                return tlo - slack <= a and b <= thi + slack and inside >= 0 and inside >= 0.5 * (b - a)

            hint = ""
            if fits(lo - 273.15, hi - 273.15):
                hint = " They fit the training range once 273.15 is subtracted: Kelvin where the model learned °C?"
            elif fits(lo + 273.15, hi + 273.15):
                hint = " They fit the training range once 273.15 is added: °C where the model learned Kelvin?"
            else:
                for f in (10.0, 100.0, 1000.0, 0.1, 0.01, 0.001):
                    if fits(lo / f, hi / f):
                        hint = (f" Divided by {f:g} they fit the training range: a scale factor (x10 storage, "
                                "m vs km) left unapplied?")
                        break
            out[name] = (f"{what}: covariate {name!r} has values {lo:.6g} to {hi:.6g}, far outside {trained}; the "
                         f"model cannot extrapolate that far, so its predictions there are meaningless.{hint} Check "
                         f"the units and scale of {name!r} against the training data (units, scale_factor/offset) "
                         "and convert them, or refit the model on data in these units")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (stored in the model config)."""
        out = {
            "columns": list(self.columns),
            "means": dict(self.means),
            "scales": dict(self.scales),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }
        if self.ranges:  # absent for encoders without ranges: their models keep their hash
            out["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(data["columns"]),
            dict(data.get("means", {})),
            dict(data.get("scales", {})),
            {k: tuple(v) for k, v in data.get("categories", {}).items()},
            {k: (float(v[0]), float(v[1])) for k, v in data.get("ranges", {}).items()},
        )


def warn_unseen_inputs(encoder: FeatureEncoder, frame: Columns, *, columns: Sequence[str] | None = None,
                       what: str = "prediction input", once: set[str] | None = None) -> None:
    """Warn (:class:`~geosdm.errors.ExtrapolationWarning`, and the log: Dask workers keep their warnings) of
    each problem :meth:`FeatureEncoder.check` finds. ``once``: covariates already warned about in this run
    (updated), so a run over many tiles warns once per covariate."""
    import logging
    import warnings

    from geosdm.errors import ExtrapolationWarning

    for name, msg in encoder.check(frame, columns=columns, what=what).items():
        if once is not None:
            if name in once:
                continue
            once.add(name)
        logging.getLogger(__name__).warning("%s", msg)
        warnings.warn(msg, ExtrapolationWarning, stacklevel=3)


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
