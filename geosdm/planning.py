"""Plan a pipeline before running it: grid, tiles, objects, bytes, Dask tasks and memory per step, and time.

:func:`plan` reads no data: grids come from the configuration (a ``like:`` raster's header, a region polygon),
variables from the source definitions, species and covariates from the model folder when it exists (else
``species=``/the planned cube). What it cannot know without searching catalogs (how many scenes cover the
region) it estimates from each collection's revisit time and says so in the step's ``assumptions``.

``calibrate=N`` runs N real tiles of each tile-based stage on the built-in demo (the cube: the demo's Sentinel-2
source read over HTTP from its local STAC API; predict: a synthetic covariate cube and a model with the planned
species, covariates and network) and projects wall time for W workers from the measured cost per decoded input
pixel (cube) or per predicted cell x species (predict). Object-store requests are counted from the plan: PUTs
for every object written, ranged GETs for the COG blocks each tile window touches.

>>> from geosdm.planning import plan
>>> p = plan("pipelines/france.yaml")                    # doctest: +SKIP
>>> p.step("predict").tiles, p.step("predict").bytes_written   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from geosdm.errors import InputError

__all__ = ["StepPlan", "Plan", "plan", "calibrate_cube", "REVISIT_DAYS"]

#: Days between observations of one place, per collection (both satellites of a constellation); used to
#: estimate how many scenes a STAC search would return without searching.
REVISIT_DAYS: dict[str, float] = {"sentinel-2": 5.0, "landsat": 8.0}
#: Internal block edge of the COGs read (pixels): ranged GETs per window are estimated from it.
COG_BLOCK = 512
#: Dask tasks per tile of a prediction graph (blocks read inside the tile task; measured 4.02 by
#: benchmarks/predict.py); graphs are submitted ``tiles_per_graph`` tiles at a time (geosdm.io.write_layers).
PREDICT_TASKS_PER_TILE = 4
TILES_PER_GRAPH = 2_048


@dataclass
class StepPlan:
    """What one step will do (``projected_hours`` needs a calibration)."""

    step: str
    grid: str
    cells: int
    tile_shape: tuple[int, int]
    tiles: int
    layers: int  # variables (cube) or species (predict) per cell
    objects_written: int
    bytes_read: int
    bytes_written: int
    dask_tasks: int  # tasks of the largest graph submitted to a cluster at once
    graphs: int  # graphs submitted one after another
    peak_task_memory: int  # bytes one tile task holds at its peak (estimate)
    work_units: float  # decoded input pixels (cube) or cells x species (predict): what calibration prices
    requests_get: int
    requests_put: int
    assumptions: list[str] = field(default_factory=list)
    seconds_per_unit: float | None = None  # measured (calibrate)
    calibration: str | None = None

    def projected_hours(self, workers: int) -> float | None:
        """Wall hours on ``workers`` single-threaded workers (tiles spread evenly); None without calibration."""
        if self.seconds_per_unit is None:
            return None
        per_tile = self.work_units / max(self.tiles, 1) * self.seconds_per_unit
        return math.ceil(self.tiles / max(workers, 1)) * per_tile / 3600.0

    def worker_hours(self) -> float | None:
        return None if self.seconds_per_unit is None else self.work_units * self.seconds_per_unit / 3600.0


@dataclass
class Plan:
    """A pipeline's plan: one :class:`StepPlan` per tile-based step, and the worker counts projected."""

    pipeline: str
    steps: list[StepPlan]
    workers: tuple[int, ...] = (1, 16, 64, 256)

    def step(self, name: str) -> StepPlan:
        for s in self.steps:
            if s.step == name:
                return s
        raise KeyError(f"no step {name!r} in the plan; steps: {[s.step for s in self.steps]}")

    def to_dict(self) -> dict[str, Any]:
        out = {"pipeline": self.pipeline, "workers": list(self.workers), "steps": []}
        for s in self.steps:
            d = asdict(s)
            d["worker_hours"] = s.worker_hours()
            d["projected_hours"] = {str(w): s.projected_hours(w) for w in self.workers}
            out["steps"].append(d)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> Any:
        """A rich Table: one column per step."""
        from rich.table import Table

        t = Table(title=f"plan of {self.pipeline}")
        t.add_column("")
        for s in self.steps:
            t.add_column(s.step, justify="right")
        rows: list[tuple[str, Any]] = [
            ("grid", lambda s: s.grid), ("cells", lambda s: f"{s.cells:,}"),
            ("tiles (shape)", lambda s: f"{s.tiles:,} ({s.tile_shape[0]}x{s.tile_shape[1]})"),
            ("layers", lambda s: f"{s.layers:,}"), ("objects written", lambda s: f"{s.objects_written:,}"),
            ("read", lambda s: _bytes(s.bytes_read)), ("written", lambda s: _bytes(s.bytes_written)),
            ("Dask tasks (largest graph) x graphs", lambda s: f"{s.dask_tasks:,} x {s.graphs:,}"),
            ("peak memory / task", lambda s: _bytes(s.peak_task_memory)),
            ("requests GET / PUT", lambda s: f"{s.requests_get:,} / {s.requests_put:,}"),
            ("calibrated on", lambda s: s.calibration or "-"),
            ("worker time", lambda s: _duration(s.worker_hours())),
        ]
        rows += [(f"wall time, {w} workers", lambda s, w=w: _duration(s.projected_hours(w))) for w in self.workers]
        for label, fn in rows:
            t.add_row(label, *[str(fn(s)) for s in self.steps])
        return t


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000.0
    return str(n)


def _duration(hours: float | None) -> str:
    if hours is None:
        return "-"
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:,.1f} h"


def _grid_text(gbox: Any) -> str:
    res = abs(gbox.resolution.x)
    unit = "°" if gbox.crs.geographic else " m"
    return f"{gbox.shape[0]:,} x {gbox.shape[1]:,} @ {res:g}{unit} {gbox.crs.epsg and f'EPSG:{gbox.crs.epsg}' or gbox.crs}"


def _n_tiles(shape: tuple[int, int], tile: tuple[int, int]) -> int:
    return math.ceil(shape[0] / tile[0]) * math.ceil(shape[1] / tile[1])


def _observations(src: Any, when: str | None, assumptions: list[str]) -> float:
    """Expected observations (solar days) of one place: revisit-based for satellite series, 1 for static layers."""
    import pandas as pd

    if src.composite is None:
        return 1.0
    days = 365.0
    if when and "/" in when and ".." not in when:
        a, b = when.split("/")
        days = max(1.0, (pd.Timestamp(b) - pd.Timestamp(a)).days + 1.0)
    name = f"{src.collection} {src.name}".lower()
    revisit = next((v for k, v in REVISIT_DAYS.items() if k in name), None)
    if revisit is None:
        assumptions.append(f"{src.name}: one observation a month assumed (no revisit time known)")
        return days / 30.4
    assumptions.append(f"{src.name}: one observation every {revisit:g} days over {days:.0f} days (before cloud filter)")
    return days / revisit


def _cube_step(cube: Any) -> StepPlan:
    from geosdm.cube.tiling import SourcePlan, plan_variables
    from geosdm.cube.build import covered_months, working_factor

    gbox = cube.grid.geobox()
    ty, tx = cube.output.tile_shape
    tiles = _n_tiles(gbox.shape, (ty, tx))
    cells = int(gbox.shape[0] * gbox.shape[1])
    res = abs(gbox.resolution.x)
    assumptions: list[str] = []
    n_vars = 0
    pixels = 0.0
    read = 0.0
    gets = 0.0
    peak = 0.0
    for spec in cube.sources:
        src = spec.load()
        when = (spec.datetime or cube.datetime) if src.composite is not None else None
        k = working_factor(spec, res)
        plan = SourcePlan(src, (), k, spec.indices, spec.terrain, spec.assets or (), spec.mask_buffer,
                          covered_months(when), when)
        n_vars += len(plan_variables(plan))
        obs = _observations(src, when, assumptions)
        keys = list(plan.data_assets) + ([src.mask.asset] if src.mask is not None else [])
        bytes_px = sum(np.dtype(src.assets[a].dtype or "float32").itemsize for a in keys)
        work_px = cells * k * k
        pixels += work_px * obs * len(keys)
        read += work_px * obs * bytes_px
        window = (ty * k) * (tx * k)
        gets += tiles * obs * len(keys) * max(1, math.ceil(ty * k / COG_BLOCK)) * max(1, math.ceil(tx * k / COG_BLOCK))
        # raw stack (<= the 512 MiB read budget) + float32 values and a sorted copy of one band + the outputs
        tile_obs = max(1.0, obs)
        peak = max(peak, min(window * tile_obs * bytes_px, 512 * 2**20) + 2 * window * tile_obs * 4)
    peak += n_vars * ty * tx * 4
    objects = n_vars * tiles + tiles + n_vars + 3  # shards, tile markers, array and group metadata, report
    return StepPlan(
        "cube", _grid_text(gbox), cells, (ty, tx), tiles, n_vars, objects, int(read), cells * n_vars * 4,
        tiles, 1, int(peak), pixels, int(gets), objects, assumptions,
    )


def _model_shape(path: str | None) -> tuple[int | None, int | None]:
    """(species, covariates) of a saved model, or (None, None) when the folder does not exist yet."""
    if not path:
        return None, None
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None, None
    data = json.loads(cfg.read_text())
    species = data.get("species")
    features = (data.get("encoder") or {}).get("columns")
    return (len(species) if species else None), (len(features) if features else None)


def _predict_step(predict: Any, cube: StepPlan | None, cube_cfg: Any, species: int | None) -> StepPlan:
    assumptions: list[str] = []
    n_sp, n_cov = _model_shape(predict.model)
    if n_sp is None:
        n_sp = species or (len(predict.species) if predict.species else None)
        if n_sp is None:
            raise InputError(f"cannot tell how many species {predict.model!r} predicts (no model yet); pass "
                             "species=N (CLI: --species N)")
        assumptions.append(f"{n_sp} species (given; the model is not trained yet)")
    if n_cov is None:
        if cube is None:
            raise InputError("the predict step needs the cube step in the same pipeline (or a trained model) to be planned")
        n_cov = cube.layers
        assumptions.append(f"{n_cov} covariates: every variable of the planned cube (before the collinearity filter)")
    if cube_cfg is not None:
        gbox = cube_cfg.grid.geobox()
        tile = tuple(predict.tile_shape or cube_cfg.output.tile_shape)
    else:
        from geosdm.io import open_cube

        ds = open_cube(predict.cube)
        gbox = ds.odc.geobox
        tile = tuple(predict.tile_shape or (int(ds.chunks["y"][0]), int(ds.chunks["x"][0])))
    cells = int(gbox.shape[0] * gbox.shape[1])
    tiles = _n_tiles(gbox.shape, tile)  # type: ignore[arg-type]
    itemsize = {"uint8": 1, "float16": 2, "float32": 4}[predict.dtype]
    written = cells * n_sp * itemsize
    objects = tiles + tiles + 4  # probability shards, markers, metadata
    if predict.cogs:
        written *= 2
        objects += 1 if predict.multiband else n_sp
    if predict.stac:
        objects += 2 if predict.multiband else n_sp + 1
    tpx = tile[0] * tile[1]
    peak = tpx * n_cov * 4 * 2 + tpx * n_sp * itemsize + 4096 * n_sp * 4 * 4
    return StepPlan(
        "predict", _grid_text(gbox), cells, tile, tiles, n_sp, objects, cells * n_cov * 4, written,  # type: ignore[arg-type]
        min(tiles, TILES_PER_GRAPH) * PREDICT_TASKS_PER_TILE, math.ceil(tiles / TILES_PER_GRAPH), int(peak),
        float(cells) * n_sp, tiles * n_cov, objects,
        assumptions,
    )


# ------------------------------------------------------------------------------------------------ calibration


def _calibrate_predict(step: StepPlan, n_tiles: int, network: dict[str, Any], n_cov: int, workdir: Path) -> None:
    """Predict ``n_tiles`` real tiles (capped at 512 x 512) of a synthetic cube with the planned model shape."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from geosdm.grid import geobox_from_bbox, grid_coords
    from geosdm.models import MultiSpeciesSDM
    from geosdm.predict import write_predictions

    side = min(step.tile_shape[0], step.tile_shape[1], 512)
    gbox = geobox_from_bbox((600_000.0, 6_600_000.0, 600_000.0 + 10.0 * side * n_tiles, 6_600_000.0 + 10.0 * side),
                            crs="EPSG:2154", resolution=10.0)
    cov = [f"cov{i:03d}" for i in range(n_cov)]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, n_cov)).astype("float32"), columns=cov)
    Y = pd.DataFrame(rng.poisson(0.3, size=(2000, step.layers)), columns=[f"sp{i:04d}" for i in range(step.layers)])
    model = MultiSpeciesSDM(**{**network, "epochs": 1, "val_size": 0, "seed": 0, "loss": "poisson"}).fit(X, Y)
    model.save(workdir / "model")
    base = da.random.default_rng(0).standard_normal(tuple(gbox.shape), chunks=(side, side), dtype="float32")
    ds = xr.Dataset({c: (("y", "x"), base + i) for i, c in enumerate(cov)}, coords=grid_coords(gbox))
    ds.to_zarr(workdir / "cube.zarr", mode="w", zarr_format=3, consolidated=True,
               encoding={c: {"chunks": (side, side)} for c in cov})
    t0 = time.perf_counter()
    rep = write_predictions(str(workdir / "model"), str(workdir / "cube.zarr"), str(workdir / "out.zarr"),
                            tile_shape=(side, side), overwrite=True)
    sec = time.perf_counter() - t0
    step.seconds_per_unit = sec / (rep.pixels * rep.species)
    step.calibration = f"{rep.n_tiles} tiles of {side}x{side}, {step.layers} species, {n_cov} covariates: {sec:.1f} s"


def calibrate_cube(step: StepPlan, n_tiles: int, workdir: Path) -> None:
    """Build ``n_tiles`` tiles of the demo's Sentinel-2 composite over its local STAC API (HTTP range reads)."""
    from geosdm.cube import build_cube, resolve_sources, solar_day_groups
    from geosdm.cube.config import CubeConfig
    from geosdm.demo import generate
    from geosdm.services import serve_demo
    from geosdm.stac import filter_items

    layout = generate(workdir / "demo", preset="small", seed=0)
    with serve_demo(layout.root, upload=False) as served:
        tile = min(150, 300 // max(n_tiles, 1))  # 20 m cells; the small demo region is 300 cells wide
        bbox = (466020.0, 6579000.0, 466020.0 + 20.0 * tile * n_tiles, 6579000.0 + 20.0 * tile)
        cfg = CubeConfig.model_validate({
            "grid": {"crs": "EPSG:2154", "resolution": 20, "bbox": list(bbox)},
            "datetime": "2024-06-01/2024-08-31",
            "sources": [{"source": "demo-sentinel-2-l2a", "url": served.stac_url}],
            "output": {"path": str(workdir / "cube.zarr"), "tile_shape": [tile, tile]},
            "threads": 1,
        })
        plans = resolve_sources(cfg)
        t0 = time.perf_counter()
        rep = build_cube(cfg, plans=plans, overwrite=True)
        sec = time.perf_counter() - t0
    plan = plans[0]
    keys = len(plan.data_assets) + (1 if plan.source.mask is not None else 0)
    days = len(solar_day_groups(filter_items(plan.items, bbox=tuple(cfg.grid.geobox().extent.to_crs("EPSG:4326").boundingbox))))
    pixels = tile * tile * rep.n_tiles * keys * days
    step.seconds_per_unit = sec / pixels
    step.calibration = (f"demo Sentinel-2, {rep.n_tiles} tiles, {days} dates x {keys} bands at 20 m over HTTP: "
                        f"{sec:.1f} s ({pixels / sec / 1e6:.1f} Mpx/s)")


def plan(
    pipeline: str | PathLike[str] | Any,
    *,
    calibrate: int = 0,
    species: int | None = None,
    workers: Sequence[int] | None = None,
    workdir: str | PathLike[str] | None = None,
) -> Plan:
    """Plan the tile-based steps (cube, predict) of a pipeline; see the module docstring.

    Parameters
    ----------
    pipeline
        A pipeline name or YAML path (see :func:`geosdm.pipeline.find_pipeline`), or a loaded ``PipelineConfig``.
    calibrate
        Tiles to run per stage to price the work (0: no run, no time projection).
    species
        Species of the predict step when its model does not exist yet (default: the pipeline's ``plan.species``).
    workers
        Worker counts the wall time is projected for (default: ``plan.workers``, else 1, 16, 64, 256).
    workdir
        Scratch folder for calibration runs (default: a temporary folder, removed after).
    """
    from geosdm.pipeline import PipelineConfig, load_pipeline

    config = pipeline if isinstance(pipeline, PipelineConfig) else load_pipeline(pipeline)
    hints = config.plan
    if species is None and hints is not None:
        species = hints.species
    if workers is None:
        workers = hints.workers if hints is not None else (1, 16, 64, 256)
    steps: list[StepPlan] = []
    cube = _cube_step(config.cube) if config.cube is not None else None
    if cube is not None:
        steps.append(cube)
    if config.predict is not None:
        steps.append(_predict_step(config.predict, cube, config.cube, species))
    if not steps:
        raise InputError(f"pipeline {config.name!r} has no cube or predict step to plan")
    if calibrate > 0:
        network = {k: v for k, v in (config.train.model if config.train else {}).items()
                   if k in ("network", "hidden", "n_blocks")}
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            for s in steps:
                sub = Path(tmp) / s.step
                sub.mkdir()
                if s.step == "cube":
                    calibrate_cube(s, calibrate, sub)
                else:
                    n_cov = int(s.bytes_read // max(s.cells * 4, 1))
                    _calibrate_predict(s, calibrate, network, n_cov, sub)
    return Plan(config.name, steps, tuple(int(w) for w in workers))
