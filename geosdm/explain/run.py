"""One call for a whole explanation step: importance, response curves, attribution and MESS maps, figures.

Layout under ``output`` (folder; Zarr stores and COGs may also go to an ``s3://`` prefix with
``storage_options``, tables and figures are local)::

    importance.csv               per species x variable: mean, sd over repeats, rank (and grouped/regional)
    importance_groups.csv        the same for variable groups (e.g. all Sentinel-2 layers, all climate layers)
    importance_regions.csv       per region x species x variable (when ``regions`` is set)
    response.csv                 partial dependence + ICE 10/90 % band per species x variable x grid point
    attribution.zarr (+.progress) one (variable, y, x) layer cube per species (geosdm.io.write_layers)
    attribution_regions.csv      mean |attribution| per region x species x variable
    mess.zarr (+.progress)       MESS (y, x), most dissimilar variable, per-variable similarity
    cogs/                        attribution/<species>.tif (one band per covariate), mess.tif
    stac/attribution, stac/mess  one Collection and Item per store (Zarr + COG assets)
    *.png                        importance, response curves, attribution and MESS maps
    summary.json                 headline figures (flat scalars, for the pipeline's report step)
    report.json                  what was written, top variables per species, extrapolated fraction

The pipeline's explain step and ``geosdm explain run`` both call :func:`run_explain`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geosdm.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from geosdm.io.layers import WriteReport
    from geosdm.models import MultiSpeciesSDM

__all__ = ["ExplainConfig", "ExplainReport", "run_explain"]

log = logging.getLogger(__name__)


class ExplainConfig(BaseModel):
    """An explanation step: which model, cube and training table, what to compute and where (unknown keys rejected)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="Model folder written by MultiSpeciesSDM.save.")
    cube: str = Field(description="Covariate cube (Zarr path or URL).")
    table: str = Field(description="Training table (Parquet) the model was fitted on: evaluation points, "
                                   "training ranges, MESS reference.")
    output: str = Field(description="Output folder.")
    species: tuple[str, ...] | None = Field(default=None, description="Species to explain (None: all).")
    seed: int = 0
    # permutation importance
    importance: bool = True
    scoring: Literal["correlation", "mse", "auc"] = "correlation"
    scale: Literal["log_intensity", "probability"] = Field(
        default="log_intensity", description="What permutations are scored on: the log-intensity or the presence "
                                             "probability over `area` (calibrated when the model is).")
    area: float | None = Field(default=None, gt=0, description="m² of the scored probabilities (scale: probability; "
                                                              "None: the model's unit; e.g. the predictions' area).")
    n_repeats: int = Field(default=5, ge=1)
    n_points: int = Field(default=5_000, ge=10, description="Evaluation sites sampled from the table.")
    groups: dict[str, tuple[str, ...]] | Literal["auto", "correlated"] | None = Field(
        default="auto", description="Variable groups also scored together ('auto': by source; 'correlated': "
                                    "land-cover compositions + clusters with |r| >= correlation_threshold; None: none).")
    correlation_threshold: float = Field(default=0.9, gt=0, le=1)
    # regions (importance per region, attribution aggregated per region)
    regions: str | float | None = Field(default=None, description="Polygons (vector file) or a block side in CRS "
                                                                  "units; None: the attribution tiles.")
    region_field: str | None = None
    min_region_points: int = Field(default=50, ge=3)
    # response curves
    response: bool = True
    n_grid: int = Field(default=40, ge=2)
    n_pd: int = Field(default=1_000, ge=1)
    n_ice: int = Field(default=30, ge=0)
    extend: float = Field(default=0.1, ge=0)
    response_scale: Literal["log_intensity", "probability"] = Field(
        default="probability", description="Scale of the response curves: the presence probability over `area` "
                                           "(uncalibrated: the model's own response) or the log-intensity.")
    response_mode: Literal["partial", "on_manifold"] = Field(
        default="partial", description="'on_manifold': collinear covariates (|r| >= correlation_threshold) move "
                                       "together and class fractions keep their sum (geosdm.explain.response).")
    # attribution maps
    attribution: bool = True
    attribution_species: tuple[str, ...] | None = Field(
        default=None, description="Species mapped (None: `species`); each costs a backward pass per cell and step.")
    method: Literal["integrated_gradients", "gradient_x_input"] = "integrated_gradients"
    steps: int = Field(default=32, ge=1)
    attribution_dtype: Literal["float16", "float32"] = "float16"
    # extrapolation
    mess: bool = True
    mess_per_variable: bool = True
    # outputs
    cogs: bool = True
    stac: bool = True
    collection_id: str = "geosdm-explanations"
    figures: bool = True
    n_figure_species: int = Field(default=4, ge=0)
    tile_shape: tuple[int, int] | None = None
    chunk_shape: tuple[int, int] | None = None
    storage_options: dict[str, Any] | None = None
    cube_storage_options: dict[str, Any] | None = None

    def path(self, name: str) -> str:
        return f"{self.output.rstrip('/')}/{name}"

    @classmethod
    def from_yaml(cls, path: str | Path, *, section: str | None = "explain") -> ExplainConfig:
        """Load from a YAML file (a pipeline's ``explain:`` section, or a file holding the config itself), with
        ``${VAR}`` / ``${VAR:-default}`` substituted from the environment as pipelines are."""
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="explain")


@dataclass
class ExplainReport:
    """What an explanation step wrote and found."""

    output: str
    files: dict[str, str] = field(default_factory=dict)
    top_variables: dict[str, list[str]] = field(default_factory=dict)
    top_groups: dict[str, list[str]] = field(default_factory=dict)
    attribution: WriteReport | None = None
    mess: WriteReport | None = None
    extrapolated_fraction: float | None = None
    completeness_error: float | None = None
    figures: list[str] = field(default_factory=list)
    cogs: list[str] = field(default_factory=list)
    stac: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """Headline figures (flat scalars) for reports and the pipeline log."""
        from collections import Counter

        first = Counter(v[0] for v in self.top_variables.values() if v)
        first_group = Counter(v[0] for v in self.top_groups.values() if v)
        return {
            "species explained": len(self.top_variables),
            "most frequent top variable": ", ".join(f"{k} ({n})" for k, n in first.most_common(3)) or None,
            "most frequent top group": ", ".join(f"{k} ({n})" for k, n in first_group.most_common(3)) or None,
            "attribution maps": self.attribution.layers if self.attribution else 0,
            "integrated-gradients completeness error": self.completeness_error,
            "map fraction outside the training range (MESS < 0)": self.extrapolated_fraction,
            "seconds": self.seconds,
        }


def _tidy_importance(imp: xr.Dataset) -> pd.DataFrame:
    frame = imp[["importance_mean", "importance_std"]].to_dataframe().reset_index()
    keep = [c for c in ("region", "species", "variable", "importance_mean", "importance_std") if c in frame.columns]
    frame = frame[keep].rename(columns={"importance_mean": "mean", "importance_std": "sd"})
    by = ["region", "species"] if "region" in frame.columns else ["species"]
    frame["rank"] = frame.groupby(by)["mean"].rank(ascending=False, method="first").astype(int)
    return frame.sort_values(by + ["rank"]).reset_index(drop=True)


def _tidy_response(rc: xr.Dataset) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    rows = []
    q = rc["ice"].quantile([0.1, 0.9], dim="sample") if rc.sizes.get("sample", 0) else None
    for s in rc["species"].values:
        for v in rc["variable"].values:
            c = rc.sel(species=s, variable=v)
            ok = np.isfinite(c["value"].values)
            part = pd.DataFrame({
                "species": str(s), "variable": str(v), "value": c["value"].values[ok], "label": c["label"].values[ok],
                "in_training_range": c["in_range"].values[ok], "partial_dependence": c["partial_dependence"].values[ok],
            })
            if q is not None:
                qq = q.sel(species=s, variable=v)
                part["ice_q10"] = qq.sel(quantile=0.1).values[ok]
                part["ice_q90"] = qq.sel(quantile=0.9).values[ok]
            rows.append(part)
    return pd.concat(rows, ignore_index=True)


def _sites(table: pd.DataFrame, n: int, seed: int, *, distinct: bool) -> pd.DataFrame:
    """Up to ``n`` rows of ``table`` (distinct sites when ``distinct``), in a seeded random order."""
    cols = [c for c in ("x", "y", "crs") if c in table.columns]
    pool = table.drop_duplicates(subset=cols) if distinct and cols else table
    return pool.sample(n=min(n, len(pool)), random_state=seed) if len(pool) > n else pool


def run_explain(
    config: ExplainConfig,
    *,
    model: MultiSpeciesSDM | None = None,
    client: Any | str | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> ExplainReport:
    """Compute and write everything ``config`` asks for (see the module docstring for the layout).

    Parameters
    ----------
    config
        The step's configuration.
    model
        An in-memory fitted model to use instead of loading ``config.model``.
    client
        ``dask.distributed.Client`` or scheduler address (attribution/MESS tiles and COGs run on its workers).
    progress
        Progress bars over tiles and COGs.
    overwrite
        Rewrite the Zarr stores from scratch instead of resuming them.

    Returns
    -------
    ExplainReport
        Paths written, top variables/groups per species, write reports, extrapolated fraction of the map.

    Raises
    ------
    InputError
        No model, or the table/cube does not match the model.

    Example
    -------
    >>> cfg = ExplainConfig(model="out/model", cube="out/cube.zarr", table="out/records/training.parquet",
    ...                     output="out/explain", attribution_species=("plant_01",))  # doctest: +SKIP
    >>> run_explain(cfg).top_variables["plant_01"]  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd

    from geosdm.explain.importance import labels_from_records, permutation_importance, top_variables
    from geosdm.io.tasks import connect
    from geosdm.predict.model import as_model, model_inputs

    t0 = time.perf_counter()
    if model is None and config.model is None:
        raise InputError("no model: set `model:` (a folder written by MultiSpeciesSDM.save) or pass model=")
    m = as_model(model if model is not None else config.model)  # type: ignore[arg-type]
    out = config.output.rstrip("/")
    local = "://" not in out
    if local:
        Path(out).mkdir(parents=True, exist_ok=True)
    figdir = Path(out)  # figures beside the tables: the pipeline's report step picks up <output>/*.png
    report = ExplainReport(output=out)
    try:
        table = pd.read_parquet(config.table)
    except FileNotFoundError:
        raise InputError(f"no training table at {config.table!r}; run the records step first or fix `table:`") from None
    species = list(config.species) if config.species else list(m.species_)
    unknown = [s for s in species if s not in m.species_]
    if unknown:
        raise InputError(f"species {unknown} are not modelled; choose from model.species_ ({len(m.species_)} species)")
    inputs = model_inputs(m)
    variables = list(dict.fromkeys(inputs.columns + inputs.patch_variables))
    figures: list[tuple[str, Any]] = []

    def table_csv(frame: pd.DataFrame, name: str) -> None:
        path = f"{out}/{name}"
        if local:
            frame.to_csv(path, index=False)
        else:  # pragma: no cover - object stores
            import fsspec

            with fsspec.open(path, "w", **(config.storage_options or {})) as f:
                frame.to_csv(f, index=False)
        report.files[name.rsplit(".", 1)[0]] = path

    point_net = not inputs.patch_variables
    # ------------------------------------------------------------------------------------------ importance
    imp = None
    if config.importance and point_net:
        auc = config.scoring == "auc"
        pts = _sites(table[table["kind"].astype(str) != "count"] if "kind" in table else table, config.n_points,
                     config.seed, distinct=not auc)
        y = labels_from_records(pts, m.species_) if auc else None
        common = {"species": species, "scoring": config.scoring, "scale": config.scale, "area": config.area,
                  "y": y, "n_repeats": config.n_repeats,
                  "seed": config.seed}
        imp = permutation_importance(m, pts, **common)
        table_csv(_tidy_importance(imp), "importance.csv")
        report.top_variables = top_variables(imp, 3)
        gimp = None
        if config.groups is not None:
            groups: Any = config.groups
            if groups == "correlated":
                comps, linked = _structure(config, m, pts, variables)
                groups = {**comps, **{k: v for k, v in linked.items()}}
                groups.update({v: [v] for v in variables if not any(v in g for g in groups.values())})
            elif isinstance(groups, dict):
                groups = {k: list(v) for k, v in groups.items()}
            gimp = permutation_importance(m, pts, groups=groups, **common)
            table_csv(_tidy_importance(gimp), "importance_groups.csv")
            report.top_groups = top_variables(gimp, 3)
        if config.regions is not None:
            from geosdm.explain.regions import point_regions
            from geosdm.records.coords import records_xy

            crs = _cube_crs(config)
            x, yy = records_xy(pts, crs) if "crs" in pts.columns else (pts["x"].to_numpy(), pts["y"].to_numpy())
            labels = point_regions(x, yy, config.regions, crs=crs, field=config.region_field)
            rimp = permutation_importance(m, pts, regions=labels, min_region_points=config.min_region_points,
                                          **common)
            table_csv(_tidy_importance(rimp), "importance_regions.csv")
        if config.figures:
            from geosdm.explain.plots import plot_importance

            figures.append(("importance_all_species", plot_importance(imp)))
            if gimp is not None:
                figures.append(("importance_groups", plot_importance(gimp, title="variable groups, mean over species")))
            for s in species[: config.n_figure_species]:
                figures.append((f"importance_{s}", plot_importance(imp, s)))
    elif config.importance:
        log.info("permutation importance and response curves skipped: patch networks read neighbourhoods")
    # -------------------------------------------------------------------------------------------- response
    if config.response and point_net:
        from geosdm.explain.response import response_curves, training_ranges

        sites = _sites(table, max(config.n_pd, config.n_points), config.seed, distinct=True)
        ranges = training_ranges(table, [v for v in inputs.columns if v not in m.encoder_.categories])
        linked_kw: dict[str, Any] = {}
        if config.response_mode == "on_manifold":
            comps, linked = _structure(config, m, sites, list(inputs.columns))
            linked_kw = {"linked": {k: v for k, v in linked.items() if len(v) > 1},
                         "compositions": list(comps.values())}
        rc = response_curves(m, sites, species=species, n_grid=config.n_grid, n_pd=config.n_pd, n_ice=config.n_ice,
                             extend=config.extend, train_ranges=ranges, seed=config.seed, scale=config.response_scale,
                             area=config.area, **linked_kw)
        table_csv(_tidy_response(rc), "response.csv")
        if config.figures:
            from geosdm.explain.plots import covariate_units, plot_response
            from geosdm.io.zarr import open_cube

            units = covariate_units(open_cube(config.cube, storage_options=config.cube_storage_options))
            for s in species[: config.n_figure_species]:
                top = report.top_variables.get(s) or list(rc["variable"].values[:6])
                more = [v for v in (imp["importance_mean"].sel(species=s).to_series().sort_values(ascending=False)
                                    .index[:6] if imp is not None else []) if v not in top]
                figures.append((f"response_{s}", plot_response(rc, s, list(top) + more[: 6 - len(top)],
                                                                        units=units)))
    with connect(client) as c:
        # ------------------------------------------------------------------------------------- attribution
        if config.attribution:
            from geosdm.explain.attribution import attribution_cube
            from geosdm.explain.regions import aggregate_regions
            from geosdm.io.layers import open_layers, write_layers

            chosen = list(config.attribution_species) if config.attribution_species else species
            attr = attribution_cube(m, config.cube, species=chosen, method=config.method, steps=config.steps,
                                    tile_shape=config.tile_shape, storage_options=config.cube_storage_options)
            from geosdm.predict.write import cube_identity

            # the cube by content (a cube rebuilt at the same path is another input), not by path
            identity = {"model": attr.attrs["geosdm:model_hash"],
                        "cube": cube_identity(config.cube, attr.attrs, inputs.variables, config.cube_storage_options),
                        "method": config.method,
                        "steps": config.steps, "species": chosen}
            attrs = {"title": "geosdm attribution maps", **attr.attrs, "geosdm:species": chosen}
            store = config.path("attribution.zarr")
            report.attribution = write_layers(
                attr, store, dtypes=config.attribution_dtype, attrs=attrs, identity=identity,
                chunk_shape=config.chunk_shape, storage_options=config.storage_options, client=c, progress=progress,
                overwrite=overwrite, desc="attribution")
            report.files["attribution"] = store
            written = open_layers(store, storage_options=config.storage_options)
            tile = written.attrs.get("geosdm:tile_shape") or [written.sizes["y"], written.sizes["x"]]
            res = abs(float(written.odc.geobox.resolution.x))
            regions = config.regions if config.regions is not None else float(tile[0]) * res
            per = aggregate_regions(written[chosen], regions, field=config.region_field).compute()
            rows = []
            for s in chosen:
                frame = per[s].to_pandas().stack().rename("mean_abs_attribution").reset_index()
                frame.insert(0, "species", s)
                rows.append(frame)
            regional = pd.concat(rows, ignore_index=True)
            regional = regional.merge(per["n_cells"].to_pandas().rename("n_cells").reset_index(), on="region")
            table_csv(regional, "attribution_regions.csv")
            if config.cogs:
                from geosdm.predict.cog import export_cogs

                attr_cogs = []
                for s in chosen:
                    attr_cogs += export_cogs(store, config.path("cogs/attribution"), variable=s, per_layer=False, multiband=True,
                                             storage_options=config.storage_options, client=c, progress=progress)
                report.cogs += [cg.path for cg in attr_cogs]
                if config.stac:
                    _stac(config, store, attr_cogs, "attribution", report)
            if point_net:
                from geosdm.explain.attribution import attribute

                pts = _sites(table, 500, config.seed, distinct=True)
                a = attribute(m, pts, species=chosen, method=config.method, steps=config.steps)
                gap = np.abs(a.log_intensity - a.baseline_log_intensity - a.attribution.sum("variable")).values
                span = np.abs(a.log_intensity - a.baseline_log_intensity).values
                if np.isfinite(gap).any():
                    report.completeness_error = round(float(np.nanmax(gap) / max(np.nanmax(span), 1e-12)), 6)
            if config.figures:
                from geosdm.explain.plots import plot_attribution

                from geosdm.explain.importance import variable_groups

                by_source = variable_groups(variables)
                for s in chosen[: config.n_figure_species]:
                    figures.append((f"attribution_{s}", plot_attribution(written, s)))
                    figures.append((f"attribution_{s}_groups", plot_attribution(written, s, groups=by_source)))
                    top = report.top_variables.get(s)
                    if top:
                        figures.append((f"attribution_{s}_{top[0]}", plot_attribution(written, s, top[0])))
        # -------------------------------------------------------------------------------------------- MESS
        if config.mess:
            from geosdm.explain.extrapolation import mess, reference_from
            from geosdm.io.layers import open_layers, write_layers
            from geosdm.predict.write import cube_identity

            ref = reference_from(table, [v for v in variables], model=m)
            ext = mess(ref, config.cube, per_variable=config.mess_per_variable, tile_shape=config.tile_shape,
                       storage_options=config.cube_storage_options)
            store = config.path("mess.zarr")
            report.mess = write_layers(
                ext, store, dtypes="float32", attrs={"title": "geosdm extrapolation (MESS)", **ext.attrs},
                identity={"cube": cube_identity(config.cube, ext.attrs, list(variables), config.cube_storage_options),
                          "reference": ext.attrs["geosdm:reference_token"],
                          "per_variable": config.mess_per_variable},
                chunk_shape=config.chunk_shape, storage_options=config.storage_options, client=c, progress=progress,
                overwrite=overwrite, desc="mess")
            report.files["mess"] = store
            written_m = open_layers(store, storage_options=config.storage_options)["mess"]
            import dask

            below, finite = dask.compute((written_m < 0).sum(), np.isfinite(written_m).sum())
            report.extrapolated_fraction = round(float(below) / max(float(finite), 1.0), 6)
            if config.cogs:
                from geosdm.predict.cog import export_cogs

                cogs = export_cogs(store, config.path("cogs"), variable="mess", storage_options=config.storage_options,
                                   client=c, progress=progress)
                report.cogs += [cg.path for cg in cogs]
                if config.stac:
                    _stac(config, store, cogs, "mess", report)
            if config.figures:
                from geosdm.explain.plots import plot_mess

                from geosdm.explain.importance import composition_groups
                from geosdm.io.zarr import open_cube

                fractions = [v for g in composition_groups(open_cube(config.cube, storage_options=config.cube_storage_options),
                                                           variables).values() for v in g]
                figures.append(("mess", plot_mess(open_layers(store, storage_options=config.storage_options),
                                                  exclude=fractions)))
    if figures and local:
        import matplotlib.pyplot as plt

        figdir.mkdir(parents=True, exist_ok=True)
        for name, fig in figures:
            path = figdir / f"{_safe(name)}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            report.figures.append(str(path))
    report.seconds = round(time.perf_counter() - t0, 3)
    if local:
        Path(out, "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=_json_default))
        Path(out, "summary.json").write_text(json.dumps(report.summary(), indent=1, default=_json_default))
    return report


def _structure(config: ExplainConfig, model: Any, points: Any, variables: list[str],
               ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Class-fraction compositions (from the cube's attrs) and correlation clusters of the other numeric covariates."""
    from geosdm.explain.importance import composition_groups, correlated_groups
    from geosdm.io.zarr import open_cube

    cube = open_cube(config.cube, storage_options=config.cube_storage_options)
    comps = composition_groups(cube, variables)
    inside = {v for g in comps.values() for v in g}
    numeric = [v for v in variables if v not in inside and v not in model.encoder_.categories]
    return comps, correlated_groups(points, numeric, threshold=config.correlation_threshold)


def _stac(config: ExplainConfig, store: str, cogs: list[Any], what: str, report: ExplainReport) -> None:
    """One Collection per store (``<collection_id>-<what>``) under ``stac/<what>/``."""
    from geosdm.predict.stac import write_stac

    cid = f"{config.collection_id}-{what}"
    st = write_stac(store, cogs, config.path(f"stac/{what}"), collection_id=cid, item_id=cid,
                    storage_options=config.storage_options)
    report.stac += [st.collection, *st.items]


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _json_default(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _cube_crs(config: ExplainConfig) -> Any:
    from geosdm.io.zarr import open_cube

    return open_cube(config.cube, storage_options=config.cube_storage_options).odc.geobox.crs
