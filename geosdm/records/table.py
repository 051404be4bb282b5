"""Training tables: records validated on the cube's grid + background points + covariates + spatial folds.

This is the hand-over from records to models: one table (one row per record or background point) with the
records schema columns, one column per covariate, and a ``fold`` column for spatial cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from os import PathLike
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from geosdm.errors import InputError
from geosdm.records._cube import CubeSource, cube_source
from geosdm.records.background import sample_background, valid_mask
from geosdm.records.cv import SpatialBlockKFold, add_folds
from geosdm.records.extract import extract_covariates
from geosdm.records.validate import ValidationReport, validate_records

__all__ = ["TrainingTable", "training_table"]


@dataclass
class TrainingTable:
    """The table and what happened on the way (the validation report of dropped rows)."""

    table: pd.DataFrame
    report: ValidationReport
    covariates: list[str]
    n_no_covariates: int = 0  # valid records dropped because a covariate is NaN at their cell
    excluded: dict[str, float] = field(default_factory=dict)  # covariate -> fraction of the footprint missing
    n_background_no_covariates: int = 0  # given background points dropped for the same reason

    def summary(self) -> dict[str, Any]:
        kinds = self.table["kind"].value_counts().to_dict()
        return {"rows": int(len(self.table)), "kinds": {str(k): int(v) for k, v in kinds.items()},
                "species": int(self.table.loc[self.table.kind != "background", "species"].nunique()),
                "covariates": len(self.covariates), "excluded_covariates": self.excluded,
                "dropped": {**{k: int(v) for k, v in self.report.dropped.items() if v},
                            **({"no valid covariates": self.n_no_covariates} if self.n_no_covariates else {}),
                **({"background without valid covariates": self.n_background_no_covariates}
                   if self.n_background_no_covariates else {})}}


def _missing_fractions(src: CubeSource) -> dict[str, float]:
    """Per covariate, the share of the footprint (cells where any covariate is valid) where it is missing."""
    row_edges, col_edges = src.blocks[src.variables[0]]
    windows = [(r0, r1, c0, c1) for r0, r1 in pairwise(row_edges) for c0, c1 in pairwise(col_edges)]

    def count(w: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
        rows, cols = slice(w[0], w[1]), slice(w[2], w[3])
        gaps = np.stack([~np.isfinite(src.read(v, rows, cols)) for v in src.variables])
        footprint = ~gaps.all(axis=0)
        return int(footprint.sum()), (gaps & footprint).sum(axis=(1, 2))

    counts = src.map_threads(count, windows)
    total = max(sum(n for n, _ in counts), 1)
    gaps = np.sum([g for _, g in counts], axis=0)
    return {v: float(g) / total for v, g in zip(src.variables, gaps, strict=True)}


def training_table(
    records: pd.DataFrame,
    cube: xr.Dataset | str | PathLike[str],
    *,
    n_background: int = 10_000,
    background: Literal["uniform", "target_group", "bias", "given"] = "uniform",
    bias: Any | None = None,
    n_folds: int = 5,
    block_size: float = 5_000.0,
    buffer: float = 0.0,
    seed: int = 0,
    variables: list[str] | None = None,
    max_missing: float = 0.02,
) -> TrainingTable:
    """Validate ``records`` on the cube's grid, add seeded background points, extract covariates, add folds.

    Rows outside the grid or on cells without valid covariates are dropped and counted in the report, never
    silently. Background points are drawn over cells where every covariate is valid (``background="given"``:
    none are drawn; the records' own ``kind="background"`` rows are the background, e.g. a benchmark's published
    points, and ``n_background`` is unused). Covariates missing on more than ``max_missing`` of the data's
    footprint (the cells where any covariate is valid, so nodata beyond a coast or a study area does not count;
    e.g. a winter composite with cloud gaps) are left out and listed in ``excluded`` rather than costing most
    of the records.

    Example
    -------
    >>> tt = training_table(read_records("presence_only.csv"), "cube.zarr", n_background=10_000, seed=0)  # doctest: +SKIP
    >>> tt.report.dropped  # doctest: +SKIP
    """
    src = cube_source(cube, variables=variables)
    gbox = src.geobox
    missing = _missing_fractions(src)
    excluded = {v: round(f, 4) for v, f in missing.items() if f > max_missing}
    names = sorted(v for v in src.variables if v not in excluded)  # stable column order
    kept, report = validate_records(records, geobox=gbox)
    if background == "given":
        if not (kept["kind"] == "background").any():
            raise InputError("background='given' needs background rows among the records (an input read with "
                             "kind: background); none are left after validation")
        both = kept.reset_index(drop=True)
    else:
        mask = valid_mask(src, variables=names)
        bg = sample_background(gbox, n_background, method=background, mask=mask, records=kept, bias=bias, seed=seed)
        both = pd.concat([kept, bg], ignore_index=True)
    table = extract_covariates(src, both, variables=names)
    finite = table[names].notna().all(axis=1)
    is_bg = table["kind"] == "background"
    n_bad, n_bg_bad = int((~finite & ~is_bg).sum()), int((~finite & is_bg).sum())
    table = table[finite].reset_index(drop=True)
    cv = SpatialBlockKFold(n_folds, block_size=block_size, buffer=buffer, geobox=gbox, seed=seed)
    table = add_folds(table, cv)
    return TrainingTable(table, report, names, n_bad, excluded, n_bg_bad)
