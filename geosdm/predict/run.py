"""One call for a whole prediction step: probability cube (Zarr) -> COGs -> STAC, from a ``PredictConfig``.

Layout under ``output`` (folder or ``s3://`` prefix): ``probability.zarr`` (+ ``probability.zarr.progress``
resume markers), with ``uncertainty: true`` ``uncertainty.zarr`` (mean, sd, quantiles), ``cogs/<variable>[_<species>].tif``, ``stac/collection.json`` and ``stac/<item>/<item>.json``.
The pipeline's predict step and ``geosdm predict`` both call :func:`run_prediction`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geosdm.errors import InputError

if TYPE_CHECKING:
    from geosdm.models import MultiSpeciesSDM
    from geosdm.predict.cog import CogOutput
    from geosdm.predict.stac import StacOutput
    from geosdm.predict.write import WriteReport

__all__ = ["PredictConfig", "PredictionReport", "run_prediction"]

log = logging.getLogger(__name__)


class PredictConfig(BaseModel):
    """A prediction step: which model over which cube, written where and how (unknown keys are rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="Model folder written by MultiSpeciesSDM.save.")
    cube: str = Field(description="Covariate cube (Zarr path or URL).")
    output: str = Field(description="Output folder or s3:// prefix.")
    dtype: Literal["uint8", "float16", "float32"] = "uint8"
    area: float | None = Field(default=None, gt=0, description="Area (m2) of the probabilities (None: model's unit).")
    log_intensity: bool = False
    tile_shape: tuple[int, int] | None = None
    chunk_shape: tuple[int, int] | None = None
    cogs: bool = True
    multiband: bool = True
    species: tuple[str, ...] | None = None
    stac: bool = True
    collection_id: str = "geosdm-predictions"
    storage_options: dict[str, Any] | None = None
    cube_storage_options: dict[str, Any] | None = None
    uncertainty: bool = Field(default=False, description="Also write uncertainty.zarr: mean, sd and quantile layers "
                              "(the calibrated model's interval model, else the ensemble members' spread).")
    quantiles: tuple[float, ...] = Field(default=(0.05, 0.5, 0.95), description="Quantile layers of uncertainty.zarr.")

    @property
    def zarr_path(self) -> str:
        return f"{self.output.rstrip('/')}/probability.zarr"

    @property
    def uncertainty_path(self) -> str:
        return f"{self.output.rstrip('/')}/uncertainty.zarr"

    @classmethod
    def from_yaml(cls, path: str | Path, *, section: str | None = "predict") -> PredictConfig:
        """Load from a YAML file (a pipeline's ``predict:`` section, or a file holding the config itself), with
        ``${VAR}`` / ``${VAR:-default}`` substituted from the environment as pipelines are."""
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="predict")


@dataclass
class PredictionReport:
    """What a prediction step wrote."""

    write: WriteReport
    uncertainty: WriteReport | None = None
    uncertainty_skipped: str | None = None
    cogs: list[CogOutput] = field(default_factory=list)
    stac: StacOutput | None = None
    seconds: float = 0.0


def _can_sample(model: Any) -> bool:
    """Whether :func:`geosdm.predict.uncertainty.predict_uncertainty` can give intervals for ``model``."""
    from geosdm.predict.model import as_model
    from geosdm.predict.uncertainty import n_members

    m = as_model(model)
    return getattr(getattr(m, "calibrator_", None), "error", None) is not None or n_members(m) >= 2


def run_prediction(
    config: PredictConfig,
    *,
    model: MultiSpeciesSDM | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> PredictionReport:
    """Write (or resume) the probability cube, then its COGs and STAC Items, as ``config`` says.

    Parameters
    ----------
    config
        The step's configuration.
    model
        An in-memory fitted model to use instead of loading ``config.model``.
    client
        ``dask.distributed.Client`` or scheduler address (tiles and COGs run as tasks on its workers).
    progress
        Progress bars over tiles and COGs.
    overwrite
        Rewrite the probability cube from scratch instead of resuming it.

    Example
    -------
    >>> cfg = PredictConfig(model="out/model", cube="out/cube.zarr", output="out/predictions")  # doctest: +SKIP
    >>> run_prediction(cfg, progress=True).write.n_tiles  # doctest: +SKIP
    """
    from geosdm.predict.cog import export_cogs
    from geosdm.predict.stac import write_stac
    from geosdm.predict.uncertainty import write_uncertainty
    from geosdm.predict.write import write_predictions

    t0 = time.perf_counter()
    from geosdm.io.tasks import connect

    if model is None and config.model is None:
        raise InputError("no model: set `model:` (a folder written by MultiSpeciesSDM.save) or pass model=")
    out = config.output.rstrip("/")
    if "://" not in out:
        Path(out).mkdir(parents=True, exist_ok=True)

    with connect(client) as c:
        report = PredictionReport(write_predictions(
            model if model is not None else config.model,  # type: ignore[arg-type]
            config.cube, config.zarr_path, dtype=config.dtype,
            area=config.area, log_intensity=config.log_intensity, tile_shape=config.tile_shape,
            chunk_shape=config.chunk_shape, storage_options=config.storage_options,
            cube_storage_options=config.cube_storage_options, client=c, progress=progress, overwrite=overwrite,
        ))
        if config.uncertainty and not _can_sample(model if model is not None else config.model):  # type: ignore[arg-type]
            report.uncertainty_skipped = ("the model has no interval model (calibrate it on surveys with "
                                          "neighbouring plots) and one network (fit n_members >= 2)")
            log.warning("uncertainty layers skipped: %s", report.uncertainty_skipped)
        elif config.uncertainty:
            report.uncertainty = write_uncertainty(
                model if model is not None else config.model,  # type: ignore[arg-type]
                config.cube, config.uncertainty_path, dtype=config.dtype, area=config.area,
                quantiles=config.quantiles, tile_shape=config.tile_shape, chunk_shape=config.chunk_shape,
                storage_options=config.storage_options, cube_storage_options=config.cube_storage_options, client=c,
                progress=progress, overwrite=overwrite)
        if config.cogs:
            report.cogs = export_cogs(config.zarr_path, f"{out}/cogs", layers=config.species,
                                      multiband=config.multiband, storage_options=config.storage_options, client=c,
                                      progress=progress)
    if config.stac:
        report.stac = write_stac(config.zarr_path, report.cogs, f"{out}/stac", collection_id=config.collection_id,
                                 item_id=f"{config.collection_id}-{report.write.model_hash[:8]}",
                                 storage_options=config.storage_options)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
