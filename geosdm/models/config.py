"""``TrainConfig``: the training stage's frozen configuration, and ``train_from_config`` (the pipeline's entry).

A YAML file (or a pipeline's ``train:`` section) like::

    table: demo-output/records/training.parquet   # from the records step (covariates + fold), or:
    # records: [demo-output/records/presence_only.csv, demo-output/records/surveys.parquet]
    cube: demo-output/cube.zarr                   # covariates (and background cells) when `records` are raw
    bias_cube: demo-output/records/effort.zarr    # optional: observer-bias layers on the same grid
    bias_covariates: [record_density]                     # (the records step's target-group record density)
    log_bias: true
    model: {network: mlp, loss: integrated, epochs: 60, seed: 0}
    output: demo-output/model

Unknown keys are rejected, and ``model`` keys must be ``MultiSpeciesSDM`` parameters.
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geosdm.errors import InputError

__all__ = ["TrainConfig", "train_from_config"]

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Training stage configuration (frozen; unknown keys rejected).

    Attributes
    ----------
    table
        A prepared training table (Parquet from ``geosdm.records.training_table``: records, background,
        covariates, ``fold``). Give this or ``records``.
    records
        Raw record files (CSV/Parquet/GBIF) read with ``geosdm.records.read_records``; needs ``cube``.
    records_crs
        CRS of record files without a ``crs`` column.
    cube
        Covariate cube (Zarr); required with ``records``, used to read covariates missing from ``table``.
    n_background, block_size, n_folds
        Background points and spatial folds built with ``records`` (seeded by ``model.seed``).
    bias_cube, bias_covariates, log_bias
        Observer-bias layers read from ``bias_cube`` (default: ``cube``) at every site; ``log_bias`` takes
        their log first (bias layers are relative intensities).
    max_correlation, prefer_covariates
        With ``max_correlation`` (0.7 is usual), collinear covariates are dropped before fitting
        (:func:`geosdm.records.select_covariates` on the background rows, ``prefer_covariates`` names or
        patterns kept first); the selection is saved as ``covariate_selection.json`` beside the model.
    model
        ``MultiSpeciesSDM`` parameters (``network``, ``loss``, ``epochs``, ``seed``...).
    output
        Folder the fitted model is saved to (safetensors + JSON).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: str | None = None
    records: tuple[str, ...] = ()
    records_crs: str | None = None
    cube: str | None = None
    n_background: int = Field(default=10_000, ge=0)
    block_size: float = Field(default=5_000.0, gt=0)
    n_folds: int = Field(default=5, ge=2)
    bias_cube: str | None = None
    bias_covariates: tuple[str, ...] = ()
    log_bias: bool = False
    max_correlation: float | None = Field(default=None, gt=0, le=1)
    prefer_covariates: tuple[str, ...] = ()
    model: dict[str, Any] = Field(default_factory=dict)
    output: str

    @field_validator("model")
    @classmethod
    def _known_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        from geosdm.models.estimator import MultiSpeciesSDM

        known = set(MultiSpeciesSDM().get_params())
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown model parameter(s) {unknown}; MultiSpeciesSDM takes {sorted(known)}")
        if "bias_covariates" in value:
            raise ValueError("set bias_covariates at the top level of the train config, not under model")
        return value

    @model_validator(mode="after")
    def _inputs(self) -> TrainConfig:
        if bool(self.table) == bool(self.records):
            raise ValueError("give exactly one of `table` (a prepared training table) or `records` (record files)")
        if self.records and not self.cube:
            raise ValueError("`records` need a `cube` to read covariates from")
        return self

    def __hash__(self) -> int:  # `model` is a dict: hash the canonical JSON instead
        return hash(self.model_dump_json())

    def __dask_tokenize__(self) -> str:
        """Stable Dask token (the canonical JSON)."""
        return self.model_dump_json()

    @classmethod
    def from_yaml(cls, path: str | PathLike[str], *, section: str | None = "train") -> TrainConfig:
        """Load from a YAML file (a pipeline's ``train:`` section, or a file holding the config itself)."""
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="train")


def _training_table(cfg: TrainConfig) -> Any:
    import pandas as pd

    from geosdm.records import read_records

    if cfg.table:
        if not Path(cfg.table).exists():
            raise InputError(f"training table {cfg.table!r} does not exist; run the records step first")
        return pd.read_parquet(cfg.table)
    from geosdm.records import training_table

    frames = [read_records(p, crs=cfg.records_crs) for p in cfg.records]
    seed = int(cfg.model.get("seed") or 0)
    tt = training_table(pd.concat(frames, ignore_index=True), cfg.cube, n_background=cfg.n_background,
                        n_folds=cfg.n_folds, block_size=cfg.block_size, seed=seed)
    log.info("training table: %s", tt.summary())
    return tt.table


def _select(cfg: TrainConfig, table: Any, covariates: Any, bias_names: list[str]) -> Any:
    """The collinearity filter of ``cfg`` on the training table (its background rows: the study area)."""
    from geosdm.records import select_training_covariates

    selection = select_training_covariates(table, covariates, threshold=float(cfg.max_correlation or 0.7),
                                           prefer=cfg.prefer_covariates, exclude=bias_names)
    log.info("covariates: %s", selection.summary())
    return selection


def train_from_config(cfg: TrainConfig) -> Any:
    """Build the training table, fit a ``MultiSpeciesSDM`` and save it to ``cfg.output``.

    Returns
    -------
    MultiSpeciesSDM
        The fitted model (also written to ``cfg.output``).

    Example
    -------
    >>> model = train_from_config(TrainConfig.from_yaml("pipelines/demo-small.yaml"))  # doctest: +SKIP
    """
    from geosdm.models.estimator import MultiSpeciesSDM
    from geosdm.records import extract_bias

    table = _training_table(cfg)
    bias_names = list(cfg.bias_covariates)
    if bias_names:
        source = cfg.bias_cube or cfg.cube
        if source is None and any(b not in table.columns for b in bias_names):
            raise InputError(f"bias covariates {bias_names} are not in the table; set bias_cube: (a Zarr store)")
        table = extract_bias(source, table, bias_names, log=cfg.log_bias)
    params = dict(cfg.model)
    if "covariates" not in params and cfg.table:  # the records step lists the covariates it kept (gaps excluded)
        import pyarrow.parquet as pq

        listed = (pq.read_schema(cfg.table).metadata or {}).get(b"geosdm:covariates")
        if listed:
            params["covariates"] = tuple(listed.decode().split(","))
    selection = None
    if cfg.max_correlation is not None:
        selection = _select(cfg, table, params.get("covariates"), bias_names)
        params["covariates"] = selection.selected
    elif cfg.prefer_covariates:
        raise InputError("prefer_covariates only orders the collinearity filter; set max_correlation (e.g. 0.7) too")
    model = MultiSpeciesSDM(**params, bias_covariates=tuple(bias_names))
    model.fit(table, cube=cfg.cube)
    model.save(cfg.output)
    if selection is not None:
        selection.save(cfg.output)
    log.info("model saved to %s (%d species, %d sites, %.1f s)", cfg.output, len(model.species_), model.n_sites_,
             model.fit_seconds_)
    return model
