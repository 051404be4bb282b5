"""One call for a whole interaction step: network -> matching -> co-occurrence fit -> layers (Zarr) -> COGs -> STAC.

Layout under ``output`` (folder or ``s3://`` prefix)::

    interactions.zarr (+ .progress)   joint (edge), enemy_any/enemy_expected (pest), pest_any/pest_expected
                                      (crop), set_all/set_any (interaction_set), each also *_independent
    cogs/<variable>[_<layer>].tif     per layer and one multi-band COG per variable
    stac/collection.json, stac/<item>/<item>.json
    uncertainty.zarr                  per layer of the co-occurrence-aware maps: <layer>_mean, _sd, _q05, _q50, _q95,
                                      _width (joint samples of the species and of the co-occurrence fit,
                                      :func:`geosdm.interactions.interaction_uncertainty`), when the predictions'
                                      model has an interval model or ensemble members
    cogs/<variable>_width[_<layer>].tif   interval width of the COG variables
    network.json                      structure of the network and of its matched part, the match report
    associations.json                 fitted leakage / odds ratios / detection and their diagnostics

The pipeline's interactions step and ``geosdm interactions run`` both call :func:`run_interactions`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geosdm.errors import InputError

if TYPE_CHECKING:
    import xarray as xr

    from geosdm.interactions.cooccurrence import Associations
    from geosdm.io.layers import WriteReport
    from geosdm.predict.cog import CogOutput
    from geosdm.predict.stac import StacOutput

__all__ = ["InteractionsConfig", "InteractionsReport", "run_interactions"]

log = logging.getLogger(__name__)


class InteractionsConfig(BaseModel):
    """An interaction step: which probabilities and network, how to model co-occurrence, where to write.

    Unknown keys are rejected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    predictions: str = Field(description="Prediction store (probability.zarr) written by the predict step.")
    edges: str = Field(description="Edge list (CSV/Parquet): source (resource), target (consumer), interaction, "
                                   "optional weight.")
    nodes: str | None = Field(default=None, description="Node list (CSV/Parquet): species, role, optional guild.")
    output: str = Field(description="Output folder or s3:// prefix.")
    surveys: tuple[str, ...] = Field(default=(), description="Records files with presence/absence surveys to fit "
                                                             "the co-occurrence model (none: strict dependence).")
    method: Literal["dependence", "plackett"] = "dependence"
    detection: Literal["estimate", "perfect"] | float = Field(
        default="estimate", description="Per-visit detection: estimated from repeat visits, perfect, or a value.")
    leakage: float | None = Field(default=None, ge=0, le=1,
                                  description="Fixed leakage for every consumer instead of fitting it.")
    aliases: dict[str, str] | None = Field(default=None, description="Network name -> model species.")
    crops: tuple[str, ...] | None = None
    sets: dict[str, tuple[str, ...]] | None = Field(
        default=None, description="Named sets of interactions ('source->target' labels) for set_all / set_any.")
    independent: bool = True
    weighted: bool = False
    variable: str = "probability"
    dtype: Literal["uint8", "float16", "float32"] = Field(default="uint8", description="Storage of probabilities; "
                                                                                      "expected counts are float32.")
    tile_shape: tuple[int, int] | None = None
    chunk_shape: tuple[int, int] | None = None
    cogs: bool = True
    per_layer: bool = Field(default=True, description="One single-band COG per layer (edge, pest, crop, set).")
    multiband: bool = Field(default=True, description="One multi-band COG per variable.")
    cog_variables: tuple[str, ...] | None = Field(default=None, description="Variables exported as COGs (None: all).")
    stac: bool = True
    collection_id: str = "geosdm-interactions"
    storage_options: dict[str, Any] | None = None
    predictions_storage_options: dict[str, Any] | None = None
    uncertainty: bool = Field(default=True, description="Also write uncertainty.zarr (mean, sd, quantiles and "
                              "interval width of each co-occurrence-aware layer over joint samples) when the "
                              "predictions come with an interval model (the predict step's uncertainty.zarr, or "
                              "`model:`) or an ensemble.")
    model: str | None = Field(default=None, description="Model folder of the predictions, for their interval model "
                              "or ensemble members (default: the predict step's uncertainty.zarr beside the "
                              "predictions, else the predictions' model path).")
    n_samples: int = Field(default=32, ge=2, description="Joint samples per cell for the uncertainty layers.")
    bootstrap: int = Field(default=16, ge=1, description="Co-occurrence refits on bootstraps of the survey plots "
                                                         "(one per sample, cycled).")
    quantiles: tuple[float, ...] = Field(default=(0.05, 0.5, 0.95), description="Quantile layers of uncertainty.zarr.")
    seed: int = 0

    @property
    def zarr_path(self) -> str:
        return f"{self.output.rstrip('/')}/interactions.zarr"

    @property
    def uncertainty_path(self) -> str:
        return f"{self.output.rstrip('/')}/uncertainty.zarr"

    @classmethod
    def from_yaml(cls, path: str | Path, *, section: str | None = "interactions") -> InteractionsConfig:
        """Load from a YAML file (a pipeline's ``interactions:`` section, or a file holding the config itself), with
        ``${VAR}`` / ``${VAR:-default}`` substituted from the environment as pipelines are."""
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="interactions")


@dataclass
class InteractionsReport:
    """What an interaction step did."""

    write: WriteReport
    match: dict[str, Any]
    structure: dict[str, Any]  # of the whole network
    matched_structure: dict[str, Any]  # of the part mapped
    associations: Associations
    variables: list[str] = field(default_factory=list)
    cogs: list[CogOutput] = field(default_factory=list)
    stac: StacOutput | None = None
    seconds: float = 0.0
    uncertainty: WriteReport | None = None
    uncertainty_source: str = ""
    uncertainty_cogs: list[CogOutput] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (what the CLI and the pipeline print)."""
        est = self.associations.consumers
        return {
            "store": self.write.path, "tiles": self.write.n_tiles, "resumed": self.write.n_resumed,
            "variables": self.variables, "edges": self.match["edges_kept"],
            "unmatched_nodes": self.match["unmatched_nodes"], "associations": self.associations.source,
            "leakage_estimated": int(est["estimated"].sum()) if len(est) and "estimated" in est else 0,
            "cogs": len(self.cogs), "stac": self.stac.collection if self.stac else None, "seconds": self.seconds,
            "uncertainty": self.uncertainty.path if self.uncertainty is not None else None,
            "uncertainty_source": self.uncertainty_source or None,
        }


def _write_json(path: str, data: Any, storage_options: dict[str, Any] | None) -> None:
    import fsspec

    with fsspec.open(path, "w", **((storage_options or {}) if "://" in path else {})) as f:
        f.write(json.dumps(data, indent=1, default=str))


def _sampling_source(config: InteractionsConfig, prob: xr.DataArray) -> tuple[dict[str, Any], str] | None:
    """What to sample the species from: ``({"error": ErrorModel} | {"model": m, "cube": path}, description)``,
    or None (nothing to sample: no interval model, no ensemble)."""
    import posixpath

    from geosdm.models.intervals import ErrorModel
    from geosdm.predict.model import as_model
    from geosdm.predict.uncertainty import n_members

    model_path = config.model
    if model_path is None:
        beside = posixpath.join(posixpath.dirname(config.predictions.rstrip("/")), "uncertainty.zarr")
        try:
            from geosdm.io.layers import open_layers

            unc = open_layers(beside, storage_options=config.predictions_storage_options)
            if unc.attrs.get("geosdm:intervals") == "model" and unc.attrs.get("geosdm:error_model"):
                return {"error": ErrorModel.from_dict(unc.attrs["geosdm:error_model"])}, f"interval model of {beside}"
        except Exception as err:  # noqa: BLE001  (no uncertainty store beside the predictions: look further)
            log.debug("no interval model from %s: %s", beside, err)
        model_path = prob.attrs.get("geosdm:model_path")
    if not model_path:
        return None
    m = as_model(model_path)
    error = getattr(getattr(m, "calibrator_", None), "error", None)
    if error is not None:
        return {"error": error}, f"interval model of {model_path}"
    cube = (prob.attrs.get("geosdm:cube") or {}).get("path") if isinstance(prob.attrs.get("geosdm:cube"), dict) \
        else None
    if n_members(m) >= 2 and cube:
        return {"model": m, "cube": cube}, f"ensemble members of {model_path}"
    return None


def run_interactions(
    config: InteractionsConfig,
    *,
    probability: xr.Dataset | xr.DataArray | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> InteractionsReport:
    """Write (or resume) the interaction layers, then COGs and STAC Items, as ``config`` says.

    Parameters
    ----------
    config
        The step's configuration.
    probability
        A lazy ``(species, y, x)`` probability cube to use instead of opening ``config.predictions`` (e.g.
        straight from :func:`geosdm.predict.predict`).
    client
        ``dask.distributed.Client`` or scheduler address (tiles and COGs run as tasks on its workers).
    progress
        Progress bars over tiles and COGs.
    overwrite
        Rewrite the store from scratch instead of resuming it.

    Returns
    -------
    InteractionsReport

    Raises
    ------
    InputError
        No interaction has both partners among the predicted species, or a bad set/crop name.

    Example
    -------
    >>> cfg = InteractionsConfig(predictions="out/predictions/probability.zarr", edges="net/edges.csv",
    ...                          nodes="net/nodes.csv", surveys=("records/surveys.parquet",),
    ...                          output="out/interactions")  # doctest: +SKIP
    >>> run_interactions(cfg).summary()  # doctest: +SKIP
    """
    import dask
    import pandas as pd

    from geosdm.interactions.cooccurrence import Associations, fit_associations
    from geosdm.interactions.layers import interaction_layers, layer_dtypes, open_probability
    from geosdm.interactions.network import match_species, read_network
    from geosdm.interactions.structure import network_structure
    from geosdm.io.tasks import connect
    from geosdm.io.layers import write_layers
    from geosdm.predict.cog import export_cogs
    from geosdm.predict.stac import write_stac

    t0 = time.perf_counter()
    out = config.output.rstrip("/")
    if "://" not in out:
        from pathlib import Path

        Path(out).mkdir(parents=True, exist_ok=True)
    network = read_network(config.edges, config.nodes)
    prob = open_probability(probability if probability is not None else config.predictions, variable=config.variable,
                            storage_options=config.predictions_storage_options)
    match = match_species(network, [str(s) for s in prob["species"].values], aliases=config.aliases)
    if match.network.edges.empty:
        raise InputError(f"no interaction of {config.edges!r} has both partners among the predicted species "
                         f"{[str(s) for s in prob['species'].values][:8]}...; unmatched nodes "
                         f"{list(match.unmatched_nodes)[:8]}. Add aliases: (network name -> species)")
    if config.leakage is not None:
        assoc = Associations.fixed(match.network, leakage=config.leakage)
    elif config.surveys:
        from geosdm.records import read_records

        records = pd.concat([read_records(p) for p in config.surveys], ignore_index=True)
        assoc = fit_associations(match.network, records, prob, detection=config.detection)
    else:
        log.info("no surveys: strict dependence (leakage 0) for every consumer")
        assoc = Associations.fixed(match.network, leakage=0.0)
    layers = interaction_layers(prob, match, associations=assoc, method=config.method,
                                independent=config.independent, crops=config.crops,
                                sets={k: list(v) for k, v in (config.sets or {}).items()} or None,
                                weighted=config.weighted)
    settings = config.model_dump(exclude={"output", "storage_options", "predictions_storage_options", "cogs",
                                          "per_layer", "multiband", "cog_variables", "stac", "collection_id"})
    identity = {
        "predictions": {"path": config.predictions if probability is None else dask.base.tokenize(prob),
                        "fingerprint": prob.attrs.get("geosdm:fingerprint", ""),
                        "model_hash": prob.attrs.get("geosdm:model_hash", "")},
        "network": dask.base.tokenize(match.network.nodes, match.network.edges),
        "associations": {"leakage": assoc.leakage, "odds_ratio": assoc.odds_ratio},
        "settings": settings,
    }
    structure = network_structure(network).to_dict()
    matched_structure = network_structure(match.network).to_dict()
    attrs = {
        "title": "geosdm interaction-likelihood layers",
        "geosdm:model_hash": str(prob.attrs.get("geosdm:model_hash", "")),
        "geosdm:predictions": config.predictions if probability is None else "<xarray>",
        "geosdm:network": {"edges": config.edges, "nodes": config.nodes, "name": network.name},
        "geosdm:method": config.method,
        "geosdm:associations": assoc.source,
        "geosdm:config": settings,
    }
    if prob.attrs.get("geosdm:period"):  # the covariates' period, so the STAC Item dates the maps, not the run
        attrs["geosdm:period"] = str(prob.attrs["geosdm:period"])
    with connect(client) as c:
        dtypes = layer_dtypes(layers, config.dtype)
        write = write_layers(layers, config.zarr_path, dtypes=dtypes,  # type: ignore[arg-type]
                             attrs=attrs, identity=identity, tile_shape=config.tile_shape,
                             chunk_shape=config.chunk_shape, storage_options=config.storage_options, client=c,
                             progress=progress, overwrite=overwrite, desc="interactions")
        report = InteractionsReport(write, match.summary(), structure, matched_structure, assoc,
                                    [str(v) for v in layers.data_vars])
        unc_vars: list[str] = []
        source = _sampling_source(config, prob) if config.uncertainty else None
        if config.uncertainty and source is None:
            log.info("no interaction uncertainty: the predictions have no interval model (calibrate the model) "
                     "and no ensemble to sample")
        if source is not None:
            from geosdm.interactions.uncertainty import association_samples, interaction_uncertainty

            sampler, report.uncertainty_source = source
            if config.leakage is None and config.surveys:
                assoc_sets: Any = association_samples(match.network, records, prob, n=config.bootstrap,
                                                      seed=config.seed, detection=config.detection)
            else:
                assoc_sets = assoc
            unc = interaction_uncertainty(prob, match, associations=assoc_sets, n_samples=config.n_samples,
                                          quantiles=config.quantiles, seed=config.seed, method=config.method,
                                          crops=config.crops, weighted=config.weighted,
                                          sets={k: list(v) for k, v in (config.sets or {}).items()} or None,
                                          **sampler)
            unc_settings = {**settings, "n_samples": config.n_samples, "bootstrap": config.bootstrap,
                            "quantiles": list(config.quantiles), "seed": config.seed,
                            "samples": unc.attrs["geosdm:samples"]}
            unc_identity = {**identity, "settings": unc_settings, "sampler": dask.base.tokenize(
                unc.attrs.get("geosdm:error_model"), sampler.get("error") and sampler["error"].to_dict(),
                str(prob.attrs.get("geosdm:model_hash", "")),
                [(a.leakage, a.odds_ratio) for a in (assoc_sets if isinstance(assoc_sets, list) else [assoc_sets])])}
            report.uncertainty = write_layers(
                unc, config.uncertainty_path, dtypes=layer_dtypes(unc, config.dtype),  # type: ignore[arg-type]
                attrs={**attrs, **{k: v for k, v in unc.attrs.items() if k.startswith("geosdm:")},
                       "title": "geosdm interaction-likelihood uncertainty", "geosdm:config": unc_settings,
                       "geosdm:sampling_source": report.uncertainty_source},
                identity=unc_identity, tile_shape=config.tile_shape, chunk_shape=config.chunk_shape,
                storage_options=config.storage_options, client=c, progress=progress, overwrite=overwrite,
                desc="interaction uncertainty")
            unc_vars = [str(v) for v in unc.data_vars]
        if config.cogs:
            wanted = list(config.cog_variables) if config.cog_variables is not None else report.variables
            unknown = [v for v in wanted if v not in report.variables]
            if unknown:
                raise InputError(f"cog_variables {unknown} are not layers of this run; choose among {report.variables}")
            for v in wanted:
                report.cogs += export_cogs(config.zarr_path, f"{out}/cogs", variable=v, per_layer=config.per_layer,
                                           multiband=config.multiband,
                                           storage_options=config.storage_options, client=c, progress=progress)
            if report.uncertainty is not None:  # where the headline maps are unsure: their interval width
                widths = [f"{v}_width" for v in wanted if f"{v}_width" in unc_vars]
                for v in widths:
                    report.uncertainty_cogs += export_cogs(
                        config.uncertainty_path, f"{out}/cogs", variable=v, per_layer=config.per_layer,
                        multiband=config.multiband, storage_options=config.storage_options, client=c,
                        progress=progress)
    if config.stac:
        report.stac = write_stac(config.zarr_path, report.cogs, f"{out}/stac", collection_id=config.collection_id,
                                 item_id=f"{config.collection_id}-{write.fingerprint[:8]}",
                                 description="Interaction-likelihood maps (geosdm.interactions)",
                                 storage_options=config.storage_options)
    _write_json(f"{out}/network.json", {"structure": structure, "matched_structure": matched_structure,
                                        "match": report.match}, config.storage_options)
    _write_json(f"{out}/associations.json", assoc.to_dict(), config.storage_options)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
