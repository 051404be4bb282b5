"""Spatial cross-validation splitters compatible with scikit-learn (``split(X, y, groups)``, ``get_n_splits``).

* :class:`SpatialBlockKFold` — square blocks aligned to the grid (block edges on cell edges of the GeoBox),
  whole blocks assigned to folds; optional ``buffer``: training points within ``buffer`` of any test block are
  left out of that fold's training set.
* :class:`BufferedLeaveOneOut` — each point is a test set; training excludes points within ``buffer``.
* :class:`EnvironmentalKFold` — k-means clusters in standardised covariate space as folds.

Splitters that need coordinates read them from ``X``: a DataFrame with the ``coords`` columns (default
``x``/``y``; with a ``crs`` column and a ``geobox`` they are reprojected to the grid CRS) or an ``(n, 2)`` array.
Distances are in CRS units (metres for projected CRSs). Store fold ids with the table with :func:`add_folds`
and reuse them through :class:`sklearn.model_selection.PredefinedSplit`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox

from geosdm.errors import InputError
from geosdm.records.coords import records_xy

__all__ = ["BufferedLeaveOneOut", "EnvironmentalKFold", "SpatialBlockKFold", "add_folds"]

Seed = int | np.random.Generator | None


class _FoldSplitter(Protocol):
    def fold_ids(self, X: Any) -> np.ndarray: ...


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _coords(X: Any, coords: tuple[str, str], geobox: GeoBox | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(X, pd.DataFrame):
        missing = [c for c in coords if c not in X.columns]
        if missing:
            raise InputError(
                f"X lacks coordinate column(s) {missing}; pass the records table (with x/y) as X, "
                "or set coords=(<x column>, <y column>)"
            )
        if geobox is not None and "crs" in X.columns and coords == ("x", "y"):
            x, y = records_xy(X, geobox.crs)
        elif "crs" in X.columns and X["crs"].nunique(dropna=False) > 1:
            raise InputError(
                f"X mixes CRSs {list(pd.unique(X['crs']))}; pass geobox= to measure distances in the grid CRS, "
                "or reproject first with geosdm.records.to_crs(table, crs)"
            )
        else:
            x, y = X[coords[0]].to_numpy(dtype="float64"), X[coords[1]].to_numpy(dtype="float64")
    else:
        arr = np.asarray(X, dtype="float64")
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(
                f"X has shape {arr.shape}; spatial splitters need a DataFrame with x/y columns or an (n, 2) "
                "array of coordinates"
            )
        x, y = arr[:, 0], arr[:, 1]
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("X has NaN/inf coordinates; validate the records first (validate_records)")
    return x, y


class _Splitter:
    """Shared repr and ``get_params`` so splitters print and compare like scikit-learn objects."""

    _params: tuple[str, ...] = ()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self._params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if not isinstance(v, GeoBox))
        return f"{type(self).__name__}({args})"


class SpatialBlockKFold(_Splitter):
    """K-fold over square spatial blocks aligned to the grid, with an optional buffer.

    Parameters
    ----------
    n_splits
        Number of folds (>= 2).
    block_size
        Block side in CRS units (metres for projected CRSs); with ``geobox`` it is rounded to whole cells.
    buffer
        Leave out of each fold's training set the points closer than this (CRS units) to any of the fold's
        test blocks; 0 disables it.
    geobox
        Grid the blocks align to (origin at its top-left corner); without it, blocks start at the data's
        min x / max y.
    assignment
        ``"random"``: blocks shuffled and dealt round-robin; ``"balanced"``: largest blocks first, each to the
        fold with the fewest points.
    coords
        Coordinate columns of ``X``.
    seed
        Seed for the block shuffle.

    Example
    -------
    >>> cv = SpatialBlockKFold(5, block_size=5_000, buffer=1_000, geobox=cube.odc.geobox, seed=0)  # doctest: +SKIP
    >>> for train, test in cv.split(table):  # doctest: +SKIP
    ...     model.fit(X[train], Y[train])
    """

    _params = ("n_splits", "block_size", "buffer", "geobox", "assignment", "coords", "seed")

    def __init__(
        self,
        n_splits: int = 5,
        *,
        block_size: float,
        buffer: float = 0.0,
        geobox: GeoBox | None = None,
        assignment: Literal["random", "balanced"] = "random",
        coords: tuple[str, str] = ("x", "y"),
        seed: Seed = None,
    ) -> None:
        self.n_splits, self.block_size, self.buffer, self.geobox = n_splits, block_size, buffer, geobox
        self.assignment, self.coords, self.seed = assignment, coords, seed

    def _checked(self) -> tuple[int, float, float]:
        if int(self.n_splits) < 2:
            raise InputError(f"n_splits={self.n_splits} must be at least 2")
        if not float(self.block_size) > 0:
            raise InputError(f"block_size={self.block_size} must be > 0 (CRS units)")
        if float(self.buffer) < 0:
            raise InputError(f"buffer={self.buffer} must be >= 0 (CRS units)")
        if self.assignment not in ("random", "balanced"):
            raise InputError(f"assignment={self.assignment!r} must be 'random' or 'balanced'")
        return int(self.n_splits), float(self.block_size), float(self.buffer)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds."""
        return self._checked()[0]

    def _geometry(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
        """Block origin (x at left, y at top) and side, in CRS units."""
        size = self._checked()[1]
        if self.geobox is not None:
            aff = self.geobox.affine
            res = abs(aff.a)
            size = max(1, round(size / res)) * res
            return aff.c, aff.f, size
        return float(x.min()), float(y.max()), size

    def blocks(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Block row and column (ints) of each point of ``X``."""
        x, y = _coords(X, self.coords, self.geobox)
        ox, oy, size = self._geometry(x, y)
        return np.floor((oy - y) / size).astype(np.int64), np.floor((x - ox) / size).astype(np.int64)

    def fold_ids(self, X: Any) -> np.ndarray:
        """Test fold (0..n_splits-1) of each point."""
        k = self._checked()[0]
        bi, bj = self.blocks(X)
        keys, inverse, counts = np.unique(np.stack([bi, bj], axis=1), axis=0, return_inverse=True, return_counts=True)
        if len(keys) < k:
            raise InputError(
                f"the points occupy {len(keys)} blocks, fewer than n_splits={k}; use a smaller block_size "
                "or fewer splits"
            )
        perm = _rng(self.seed).permutation(len(keys))
        block_fold = np.empty(len(keys), dtype=np.int64)
        if self.assignment == "random":
            block_fold[perm] = np.arange(len(keys)) % k
        else:
            load = np.zeros(k, dtype=np.int64)
            for b in perm[np.argsort(-counts[perm], kind="stable")]:
                f = int(np.argmin(load))
                block_fold[b] = f
                load[f] += counts[b]
        return block_fold[inverse.reshape(-1)]

    def _min_distance_to_folds(self, X: Any, folds: np.ndarray) -> np.ndarray:
        """(n_points, n_splits) distance from each point to the nearest block of each fold (inf if none near)."""
        k, _, buffer = self._checked()
        x, y = _coords(X, self.coords, self.geobox)
        ox, oy, size = self._geometry(x, y)
        bi = np.floor((oy - y) / size).astype(np.int64)
        bj = np.floor((x - ox) / size).astype(np.int64)
        m = math.ceil(buffer / size)
        i0, j0, span = int(bi.min()) - m, int(bj.min()) - m, int(bj.max() - bj.min()) + 2 * m + 1
        block_keys, first = np.unique((bi - i0) * span + (bj - j0), return_index=True)
        block_folds = folds[first]
        out = np.full((len(x), k), np.inf)
        for di in range(-m, m + 1):
            for dj in range(-m, m + 1):
                ni, nj = bi + di, bj + dj
                nkey = (ni - i0) * span + (nj - j0)
                pos = np.clip(np.searchsorted(block_keys, nkey), 0, len(block_keys) - 1)
                idx = np.flatnonzero(block_keys[pos] == nkey)
                if not len(idx):
                    continue
                x0, x1 = ox + nj[idx] * size, ox + (nj[idx] + 1) * size
                y0, y1 = oy - (ni[idx] + 1) * size, oy - ni[idx] * size
                dx = np.maximum(np.maximum(x0 - x[idx], x[idx] - x1), 0.0)
                dy = np.maximum(np.maximum(y0 - y[idx], y[idx] - y1), 0.0)
                np.minimum.at(out, (idx, block_folds[pos[idx]]), np.hypot(dx, dy))
        return out

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_indices, test_indices)`` per fold (positions in ``X``)."""
        k, _, buffer = self._checked()
        folds = self.fold_ids(X)
        dist = self._min_distance_to_folds(X, folds) if buffer > 0 else None
        for f in range(k):
            test = folds == f
            train = ~test if dist is None else ~test & (dist[:, f] > buffer)
            yield np.flatnonzero(train), np.flatnonzero(test)


class BufferedLeaveOneOut(_Splitter):
    """Leave-one-out where each test point's neighbours within ``buffer`` are left out of training.

    Parameters
    ----------
    buffer
        Exclusion radius in CRS units (> 0), e.g. the range of spatial autocorrelation.
    coords
        Coordinate columns of ``X``.
    geobox
        Reproject records (``crs`` column) to this grid's CRS before measuring distances.
    """

    _params = ("buffer", "coords", "geobox")

    def __init__(self, buffer: float, *, coords: tuple[str, str] = ("x", "y"), geobox: GeoBox | None = None) -> None:
        self.buffer, self.coords, self.geobox = buffer, coords, geobox

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of points (one split each); needs ``X``."""
        if X is None:
            raise InputError("BufferedLeaveOneOut.get_n_splits needs X (one split per point)")
        return len(X)

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_indices, [i])`` for each point i."""
        from scipy.spatial import cKDTree

        if not float(self.buffer) > 0:
            raise InputError(f"buffer={self.buffer} must be > 0 (CRS units)")
        x, yy = _coords(X, self.coords, self.geobox)
        pts = np.stack([x, yy], axis=1)
        tree = cKDTree(pts)
        n = len(pts)
        for i in range(n):
            near = tree.query_ball_point(pts[i], r=float(self.buffer))
            keep = np.ones(n, dtype=bool)
            keep[near] = False
            keep[i] = False
            yield np.flatnonzero(keep), np.array([i])


class EnvironmentalKFold(_Splitter):
    """Folds from k-means clusters in standardised covariate space (extrapolation to new environments).

    Parameters
    ----------
    n_splits
        Number of folds (>= 2).
    features
        Columns of ``X`` to cluster (default: all numeric columns of a DataFrame except schema/coordinate
        columns; all columns of an array).
    n_clusters
        Number of k-means clusters (default ``n_splits``); with more clusters than folds, clusters are dealt
        to folds largest first, each to the fold with the fewest points.
    seed
        Seed for k-means.
    """

    _params = ("n_splits", "features", "n_clusters", "seed")
    _SKIP = frozenset({"x", "y", "value", "plot_area_m2", "effort", "row", "col", "fold", "n_records", "n_plots"})

    def __init__(
        self,
        n_splits: int = 5,
        *,
        features: Sequence[str] | None = None,
        n_clusters: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_splits, self.features, self.n_clusters, self.seed = n_splits, features, n_clusters, seed

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds."""
        if int(self.n_splits) < 2:
            raise InputError(f"n_splits={self.n_splits} must be at least 2")
        return int(self.n_splits)

    def _matrix(self, X: Any) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            if self.features is not None:
                missing = [f for f in self.features if f not in X.columns]
                if missing:
                    raise InputError(f"X lacks feature column(s) {missing}; it has {list(X.columns)}")
                cols = list(self.features)
            else:
                cols = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and c not in self._SKIP]
            if not cols:
                raise InputError("X has no numeric covariate columns to cluster; pass features=[...]")
            M = X[cols].to_numpy(dtype="float64")
        else:
            M = np.asarray(X, dtype="float64")
            if self.features is not None:
                M = M[:, list(self.features)]  # type: ignore[index]
        if not np.isfinite(M).all():
            raise InputError("covariates for EnvironmentalKFold contain NaN/inf; drop or impute those rows first")
        std = M.std(axis=0)
        return (M - M.mean(axis=0)) / np.where(std > 0, std, 1.0)

    def fold_ids(self, X: Any) -> np.ndarray:
        """Test fold (0..n_splits-1) of each row."""
        from sklearn.cluster import KMeans

        k = self.get_n_splits()
        n_clusters = int(self.n_clusters or k)
        if n_clusters < k:
            raise InputError(f"n_clusters={n_clusters} must be >= n_splits={k}")
        M = self._matrix(X)
        labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=self.seed).fit_predict(M)
        if n_clusters == k:
            return labels.astype(np.int64)
        counts = np.bincount(labels, minlength=n_clusters)
        load = np.zeros(k, dtype=np.int64)
        cluster_fold = np.empty(n_clusters, dtype=np.int64)
        for c in np.argsort(-counts, kind="stable"):
            f = int(np.argmin(load))
            cluster_fold[c] = f
            load[f] += counts[c]
        return cluster_fold[labels]

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_indices, test_indices)`` per fold."""
        folds = self.fold_ids(X)
        for f in range(self.get_n_splits()):
            yield np.flatnonzero(folds != f), np.flatnonzero(folds == f)


def add_folds(table: pd.DataFrame, cv: _FoldSplitter, *, column: str = "fold") -> pd.DataFrame:
    """Copy of ``table`` with the test fold of each row (int16) from a splitter's ``fold_ids``.

    The stored ids reproduce the folds with ``sklearn.model_selection.PredefinedSplit(table["fold"])``
    (a buffer is not stored: rerun ``cv.split`` for buffered training sets).

    Example
    -------
    >>> table = add_folds(table, SpatialBlockKFold(5, block_size=5_000, geobox=gbox, seed=0))  # doctest: +SKIP
    """
    if not hasattr(cv, "fold_ids"):
        raise InputError(f"{type(cv).__name__} has no fold_ids(X); use SpatialBlockKFold or EnvironmentalKFold")
    out = table.copy()
    out[column] = cv.fold_ids(table).astype(np.int16)
    return out
