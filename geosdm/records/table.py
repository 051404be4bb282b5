"""Training tables: records validated on the cube's grid + background points + covariates + spatial folds.

This is the hand-over from records to models: one table (one row per record or background point) with the
records schema columns, one column per covariate, and a ``fold`` column for spatial cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal

import pandas as pd
import xarray as xr

from geosdm.records._cube import cube_source
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
    excluded: dict[str, float] = field(default_factory=dict)  # covariate -> fraction of grid missing

    def summary(self) -> dict[str, Any]:
        kinds = self.table["kind"].value_counts().to_dict()
        return {"rows": int(len(self.table)), "kinds": {str(k): int(v) for k, v in kinds.items()},
                "species": int(self.table.loc[self.table.kind != "background", "species"].nunique()),
                "covariates": len(self.covariates), "excluded_covariates": self.excluded,
                "dropped": {**{k: int(v) for k, v in self.report.dropped.items() if v},
                            **({"no valid covariates": self.n_no_covariates} if self.n_no_covariates else {})}}


def training_table(
    records: pd.DataFrame,
    cube: xr.Dataset | str | PathLike[str],
    *,
    n_background: int = 10_000,
    background: Literal["uniform", "target_group", "bias"] = "uniform",
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
    silently. Background points are drawn over cells where every covariate is valid. Covariates missing on
    more than ``max_missing`` of the grid (e.g. a winter composite with cloud gaps) are left out and listed in
    ``excluded`` rather than costing most of the records.

    Example
    -------
    >>> tt = training_table(read_records("presence_only.csv"), "cube.zarr", n_background=10_000, seed=0)  # doctest: +SKIP
    >>> tt.report.dropped  # doctest: +SKIP
    """
    src = cube_source(cube, variables=variables)
    gbox = src.geobox
    missing = {v: float(src.ds[v].isnull().mean().compute()) for v in src.variables}
    excluded = {v: round(f, 4) for v, f in missing.items() if f > max_missing}
    names = sorted(v for v in src.variables if v not in excluded)  # stable column order
    kept, report = validate_records(records, geobox=gbox)
    mask = valid_mask(cube, variables=names)
    bg = sample_background(gbox, n_background, method=background, mask=mask, records=kept, bias=bias, seed=seed)
    both = pd.concat([kept, bg], ignore_index=True)
    table = extract_covariates(cube, both, variables=names)
    finite = table[names].notna().all(axis=1)
    n_bad = int((~finite & (table["kind"] != "background")).sum())
    table = table[finite].reset_index(drop=True)
    cv = SpatialBlockKFold(n_folds, block_size=block_size, buffer=buffer, geobox=gbox, seed=seed)
    table = add_folds(table, cv)
    return TrainingTable(table, report, names, n_bad, excluded)
