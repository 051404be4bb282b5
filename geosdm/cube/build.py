"""Build a covariate cube tile by tile: search -> plan -> create the sharded store -> tiles -> report.

Each tile (one Zarr shard of every variable) is one task: locally a loop with a progress bar, on a
``dask.distributed`` cluster one future per tile (the plan, with its Items, is sent once, as a task's result). Tiles already
marked done are skipped, so a rerun after a kill completes only the missing tiles; tiles whose markers record
Items that failed to read are rebuilt by a rerun (``retry_failed``), so an outage during a build is repaired by
rerunning it once the Items can be read.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from geosdm._secrets import redact
from geosdm.cube._raster import RASTER_KINDS, check_layers
from geosdm.cube.tiling import SourcePlan, check_indices, plan_variables, process_tile
from geosdm.cube.config import CubeConfig, SourceSpec
from geosdm.errors import GridError, InputError
from geosdm.grid import Tile, tiles
from geosdm.io.zarr import CubeStore, fingerprint
from geosdm.stac import items_from_static_catalog, search

__all__ = ["BuildReport", "build_cube", "configure_gdal", "covered_months", "resolve_sources", "working_factor"]

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What a build did: tiles, time, items that failed to read, gaps (pixels with no clear observation)."""

    path: str
    variables: list[str]
    n_tiles: int
    n_skipped: int
    seconds: float
    items: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    gap_fraction: dict[str, dict[str, float]] = field(default_factory=dict)
    #: tiles of a resumed build rebuilt because their markers recorded Items that failed to read
    retried: list[list[int]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def working_factor(spec: SourceSpec, target_res: float) -> int:
    """Working pixels per target pixel, per axis, for ``spec`` on a grid of resolution ``target_res`` (1 without a
    ``working_resolution``); ``InputError`` unless the working resolution divides the target a whole number of times."""
    if spec.working_resolution is None:
        return 1
    ratio = target_res / spec.working_resolution
    k = int(round(ratio))
    if k < 1 or abs(ratio - k) > 1e-6:
        raise InputError(
            f"source {spec.label!r}: working_resolution {spec.working_resolution} must divide the target "
            f"resolution {target_res} a whole number of times (e.g. {target_res / max(1, k)})"
        )
    return k


def covered_months(when: str | None) -> tuple[int, ...] | None:
    """Calendar months (1..12) a STAC datetime range covers; None when open-ended, absent or a year or more.

    Composite periods outside them get no variables (they would be all gaps).

    Example
    -------
    >>> covered_months("2024-06-01/2024-08-31")
    (6, 7, 8)
    >>> covered_months("2023-11-15/2024-02-10")
    (1, 2, 11, 12)
    """
    import pandas as pd

    if not when:
        return None
    parts = str(when).split("/")
    if any(p in ("", "..") for p in parts):
        return None
    try:
        start, end = pd.Timestamp(parts[0]), pd.Timestamp(parts[-1])
    except ValueError:
        raise InputError(f"datetime {when!r} is not an ISO date or range like 2024-06-01/2024-08-31") from None
    first, last = start.year * 12 + start.month - 1, end.year * 12 + end.month - 1
    if last < first:
        raise InputError(f"datetime {when!r} ends before it starts; write start/end")
    if last - first >= 11:
        return None
    return tuple(sorted({i % 12 + 1 for i in range(first, last + 1)}))


def resolve_sources(config: CubeConfig) -> list[SourcePlan]:
    """Load each source definition and find its Items over the grid (STAC API search or static catalog); raster
    and dataset sources are opened and checked against the grid instead (CRS, variables, overlap)."""
    gbox = config.grid.geobox()
    lonlat = tuple(gbox.extent.to_crs("EPSG:4326").boundingbox)
    plans = []
    for spec in config.sources:
        src = spec.load()
        when = spec.datetime or config.datetime
        if src.composite is None:
            when = None  # static layers (DEM, land cover, bioclim) are not filtered by the cube's dates
        if spec.assets:
            unknown = [a for a in spec.assets if a not in src.data_assets]
            if unknown:
                raise InputError(f"source {src.name!r} has no data assets {unknown}; it has {list(src.data_assets)}")
        if src.kind in RASTER_KINDS:  # files and datasets: no Items; their grids are checked against the cube's
            check_layers(src, gbox, spec.assets or None, when=when)
            plan = SourcePlan(src, (), working_factor(spec, abs(gbox.resolution.x)), spec.indices, spec.terrain,
                              spec.assets or (), spec.mask_buffer, covered_months(when), when)
            check_indices(plan)
            plans.append(plan)
            continue
        if spec.catalog:
            items = items_from_static_catalog(spec.catalog, src, bbox=lonlat, datetime=when, max_cloud=spec.max_cloud)
        else:
            items = search(src, bbox=lonlat, datetime=when, max_cloud=spec.max_cloud)
        plan = SourcePlan(
            src, tuple(items), working_factor(spec, abs(gbox.resolution.x)), spec.indices, spec.terrain,
            spec.assets or (), spec.mask_buffer, covered_months(when),
        )
        check_indices(plan)
        _check_overlap(plan, gbox)
        plans.append(plan)
    return plans


def _check_overlap(plan: SourcePlan, gbox: Any) -> None:
    from odc.geo.geom import Geometry
    from shapely.geometry import shape

    target = gbox.extent.to_crs("EPSG:4326")
    for item in plan.items:
        if item.geometry and Geometry(shape(item.geometry), "EPSG:4326").intersects(target):
            return
    raise GridError(
        f"the grid {tuple(round(v, 4) for v in target.boundingbox)} (lon/lat) lies outside all "
        f"{len(plan.items)} Items of source {plan.source.name!r}; check the grid's bbox and CRS"
    )


def _run_tile(tile: Tile, plans: list[SourcePlan], store: CubeStore, backend: str, retries: int, threads: int) -> dict[str, Any]:
    configure_gdal()  # in this process: a Dask worker has its own GDAL settings (odc-stac's are per process)
    ds, info = process_tile(plans, tile.geobox, backend=backend, retries=retries, threads=threads)
    # float32 with NaN fill, stored as computed: straight zarr region writes, no xarray store per tile
    store.write_arrays(tile.index, tile.slices, {name: var.values for name, var in ds.data_vars.items()}, info)
    return info


def build_cube(
    config: CubeConfig,
    *,
    client: Any | None = None,
    progress: bool = False,
    overwrite: bool = False,
    plans: list[SourcePlan] | None = None,
    retry_failed: bool = True,
) -> BuildReport:
    """Build (or resume) the cube described by ``config``.

    Parameters
    ----------
    client
        A ``dask.distributed.Client`` (LocalCluster or a scheduler address); tiles run as one task each on its
        workers. None runs tiles in this process, one after another.
    progress
        Show a progress bar over tiles.
    overwrite
        Delete an existing output first (otherwise an existing output built from the same configuration and
        Items is resumed, and a different one is an error).
    plans
        Pre-resolved sources (from :func:`resolve_sources`), to skip the search.
    retry_failed
        On resume, rebuild the tiles whose markers record Items that failed to read (a timeout, a 5xx, a file
        missing then), so a cube built during an outage is completed once the Items can be read; Items that
        still fail are left out and reported again. False keeps those tiles as built (they stay listed in the
        report's ``failures`` and the cube's ``geosdm:failed_items``).

    Returns
    -------
    BuildReport; also written to ``<output>.progress/report.json`` and summarised in the cube's attributes.
    """
    t0 = time.perf_counter()
    gbox = config.grid.geobox()
    plans = plans if plans is not None else resolve_sources(config)
    variables = [v for p in plans for v in plan_variables(p)]
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"variables {dupes} come from more than one source; give the sources distinct prefixes")
    fp = fingerprint({  # what is computed, not where Items were found (a served API's port changes per run)
        "config": config.model_dump(
            mode="json", exclude={"output": {"storage_options"}, "sources": {"__all__": {"url", "catalog"}}}
        ),
        "items": {p.source.name: sorted(i.id for i in p.items) for p in plans},
    })
    store = CubeStore(config.output.path, gbox, config.output.tile_shape, config.output.chunk_shape, config.output.storage_options)
    attrs = {
        "title": "geosdm covariate cube",
        "Conventions": "CF-1.8",
        "geosdm:sources": [p.source.name for p in plans],
        "geosdm:source_items": {p.source.name: sorted(i.id for i in p.items) for p in plans},
        "geosdm:tile_shape": list(config.output.tile_shape),
        "geosdm:config": redact(config.model_dump(mode="json", exclude={"output": {"storage_options"}})),
    }
    with store.writer():  # one writer per output: a second run waits for none and is refused
        store.create(variables, attrs=attrs, fingerprint=fp, overwrite=overwrite)
        all_tiles = list(tiles(gbox, config.output.tile_shape))
        done = store.done_tiles()
        retried = _tiles_with_failures(store) if (retry_failed and done) else {}
        if retried:
            ids = sorted({i for fl in retried.values() for i in fl})
            log.warning("cube %s: rebuilding %d tile(s) built while Items failed to read (%s); pass "
                        "retry_failed=False to keep them", config.output.path, len(retried), ", ".join(ids[:10]))
            store.unmark(sorted(retried))  # a kill during the rebuild leaves them unmarked, never stale-marked
            done -= set(retried)
        todo = [t for t in all_tiles if t.index not in done]
        log.info("cube %s: %d tiles, %d already done", config.output.path, len(all_tiles), len(done))
        if client is None:
            bar = _bar(len(all_tiles), len(done), progress)
            if config.threads > 1 and all(p.source.kind in RASTER_KINDS for p in plans):
                # windowed reads + GDAL warps release the GIL: run `threads` tiles at once (STAC tiles instead
                # parallelise inside the tile, over Items and bands)
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(config.threads) as pool:
                    for _ in pool.map(lambda t: _run_tile(t, plans, store, config.backend, config.retries, 1), todo):
                        bar.update(1)
            else:
                for t in todo:
                    _run_tile(t, plans, store, config.backend, config.retries, config.threads)
                    bar.update(1)
            bar.close()
        else:
            from dask.distributed import as_completed

            from geosdm.io.tasks import shared_input

            plans_f = shared_input(client, plans, key=f"cube-plans-{fp}")
            futures = [
                client.submit(_run_tile, t, plans_f, store, config.backend, config.retries, 1, key=f"cube-tile-{fp}-{t.index[0]}-{t.index[1]}", pure=False)
                for t in todo
            ]
            bar = _bar(len(all_tiles), len(done), progress)
            for fut in as_completed(futures):
                fut.result()
                bar.update(1)
            bar.close()
        infos = store.tile_infos()
        failures: dict[str, list[dict[str, str]]] = {}
        gaps: dict[str, dict[str, list[float]]] = {}
        used: dict[str, set[str]] = {}
        for info in infos:
            for src, fl in info.get("failures", {}).items():
                failures.setdefault(src, []).extend(fl)
            for src, per in info.get("gap_fraction", {}).items():
                for period, frac in per.items():
                    gaps.setdefault(src, {}).setdefault(period, []).append(frac)
            for src, ids in info.get("items", {}).items():
                used.setdefault(src, set()).update(ids)
        report = BuildReport(
            path=config.output.path,
            variables=names,
            n_tiles=len(all_tiles),
            n_skipped=len(done),
            seconds=round(time.perf_counter() - t0, 3),
            items={k: len(v) for k, v in used.items()},
            failures={k: _unique(v) for k, v in failures.items()},
            gap_fraction={s: {p: float(np.mean(v)) for p, v in per.items()} for s, per in gaps.items()},
            retried=[list(i) for i in sorted(retried)],
        )
        if report.failures:
            log.warning("items that could not be read were left out and are listed in the report: %s", report.failures)
        store.fs.makedirs(store.progress_path, exist_ok=True)
        with store.fs.open(f"{store.progress_path}/report.json", "w") as f:
            f.write(report.to_json())
        store.finalize({"geosdm:failed_items": report.failures, "geosdm:gap_fraction": report.gap_fraction})
        return report


def _tiles_with_failures(store: CubeStore) -> dict[tuple[int, int], list[str]]:
    """Tile index -> ids of the Items its marker records as failed to read (tiles without failures left out)."""
    out = {}
    for info in store.tile_infos():
        ids = [str(f.get("item_id", "?")) for fl in info.get("failures", {}).values() for f in fl]
        if ids:
            out[(int(info["index"][0]), int(info["index"][1]))] = ids
    return out


def _unique(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for r in rows:
        seen.setdefault(r["item_id"], r)
    return list(seen.values())


def _bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="tile", desc="cube", disable=not enabled)


def configure_gdal() -> None:
    """GDAL settings for cloud reads (retries, timeouts, no directory listing) in this process, through odc-stac
    (which keeps them per process and ignores a Dask client: each tile task sets them where it runs)."""
    from odc.stac import configure_rio

    from geosdm.stac import http_timeouts

    connect, read = http_timeouts()
    options = {"cloud_defaults": True, "GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "0.5",
               "GDAL_HTTP_CONNECTTIMEOUT": str(int(max(1, connect))), "GDAL_HTTP_TIMEOUT": str(int(max(1, read)))}
    configure_rio(**options)
