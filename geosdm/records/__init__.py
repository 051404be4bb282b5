"""Species records: schema, readers, validation, gridding, background, extraction, patches, spatial CV.

Typical flow::

    recs = read_records("records/presence_only.csv")                  # any CRS, GBIF/CSV/Parquet
    valid, report = validate_records(recs, geobox=gbox)               # counted drops, never silent
    bg = uniform_background(gbox, 10_000, mask=valid_mask(cube), seed=0)
    table = extract_covariates(cube, pd.concat([valid, bg]))          # chunk-aware, categorical kept
    table = add_folds(table, SpatialBlockKFold(5, block_size=5_000, geobox=gbox, seed=0))
"""

from __future__ import annotations

from geosdm.records._cube import CubeSource, covariate_names, cube_source
from geosdm.records.background import (
    bias_background,
    sample_background,
    target_group_background,
    uniform_background,
    valid_mask,
)
from geosdm.records.collinearity import (
    CovariateSelection,
    correlation_matrix,
    select_covariates,
    select_training_covariates,
)
from geosdm.records.cv import BufferedLeaveOneOut, EnvironmentalKFold, SpatialBlockKFold, add_folds
from geosdm.records.effort import EFFORT_VARIABLE, record_density, write_effort
from geosdm.records.extract import extract_at, extract_bias, extract_covariates
from geosdm.records.gridding import aggregate_to_cells, assign_cells, rasterize_counts, to_crs
from geosdm.records.inputs import RecordsInput, melt_species, read_input, read_inputs
from geosdm.records.patches import extract_patches, open_patches
from geosdm.records.readers import (
    read_gbif,
    read_records,
    read_records_csv,
    read_records_parquet,
    records_from_frame,
)
from geosdm.records.schema import COLUMNS, KINDS, check_records, conform, empty_records, write_records
from geosdm.records.table import TrainingTable, training_table
from geosdm.records.validate import ValidationReport, validate_records

__all__ = [
    "COLUMNS",
    "CubeSource",
    "KINDS",
    "BufferedLeaveOneOut",
    "EFFORT_VARIABLE",
    "CovariateSelection",
    "EnvironmentalKFold",
    "RecordsInput",
    "SpatialBlockKFold",
    "TrainingTable",
    "ValidationReport",
    "add_folds",
    "aggregate_to_cells",
    "assign_cells",
    "bias_background",
    "check_records",
    "conform",
    "correlation_matrix",
    "covariate_names",
    "cube_source",
    "empty_records",
    "extract_at",
    "extract_bias",
    "extract_covariates",
    "extract_patches",
    "melt_species",
    "open_patches",
    "rasterize_counts",
    "record_density",
    "read_gbif",
    "read_input",
    "read_inputs",
    "read_records",
    "training_table",
    "read_records_csv",
    "read_records_parquet",
    "records_from_frame",
    "sample_background",
    "select_covariates",
    "select_training_covariates",
    "target_group_background",
    "to_crs",
    "uniform_background",
    "valid_mask",
    "validate_records",
    "write_effort",
    "write_records",
]
