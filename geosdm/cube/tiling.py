"""Per-tile processing: load -> mask -> composite -> aggregate to the target grid -> indices / fractions / terrain.

One tile is one bounded unit of work (one Dask task on a cluster): its memory depends on the tile shape and
the working resolution, never on the region's size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pystac
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

from geosdm._allocator import release_freed_memory
from geosdm.cube._raster import RASTER_KINDS, load_raster_observations
from geosdm.cube._load import Observations, StackReadError, load_band_stacks, load_observations
from geosdm.cube.composite import composite_periods
from geosdm.cube.indices import INDICES, common_name, compute_index
from geosdm.errors import InputError
from geosdm.grid import grid_coords
from geosdm.io.zarr import VariableSpec
from geosdm.sources import SourceConfig
from geosdm.stac import filter_items

__all__ = ["SourcePlan", "plan_variables", "process_tile", "refine", "block_nanmean"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePlan:
    """A resolved source of a build: its definition, Items and processing options."""

    source: SourceConfig
    items: tuple[pystac.Item, ...]
    factor: int = 1  # working pixels per target pixel, per axis
    indices: tuple[str, ...] = ()
    terrain: tuple[str, ...] = ()
    assets: tuple[str, ...] = ()
    mask_buffer: int = 1
    months: tuple[int, ...] | None = None  # months the build's dates cover (None: all)
    when: str | None = None  # the build's datetime range (selects time steps of dataset sources)

    @property
    def periods(self) -> dict[str, tuple[int, ...]]:
        """Composite periods that overlap the build's dates (label -> months); none for static sources."""
        if self.source.composite is None:
            return {}
        every = self.source.composite.periods()
        if self.months is None:
            return every
        return {label: m for label, m in every.items() if set(m) & set(self.months)}

    @property
    def data_assets(self) -> tuple[str, ...]:
        return self.assets or self.source.data_assets

    @property
    def temporal(self) -> bool:
        return self.source.composite is not None

    def _name(self, band: str) -> str:
        return f"{self.source.prefix}_{band}" if self.source.prefix else band


def plan_variables(plan: SourcePlan) -> list[VariableSpec]:
    """The output variables a source contributes (names, dtypes, CF attributes), known before any read."""
    src = plan.source
    out: list[VariableSpec] = []
    for key in plan.data_assets:
        a = src.assets[key]
        band = src.band_name(key)
        if a.categorical:
            for value, cls in sorted(a.classes.items()):
                out.append(VariableSpec(
                    f"{src.prefix or band}_{value}",
                    attrs={"long_name": f"fraction of {cls}", "units": "1", "categorical": "fraction",
                           "class_value": int(value), "class_name": cls, "source": src.name},
                ))
        elif plan.temporal:
            comp = src.composite
            for period in plan.periods:
                for stat in comp.stat_labels():  # type: ignore[union-attr]
                    suffix = "" if stat == "median" else f"_{stat}"
                    out.append(VariableSpec(
                        f"{plan._name(band)}_{period}{suffix}",
                        attrs={"long_name": f"{a.long_name}, {stat} over clear observations, {period}", "units": a.units,
                               "period": period, "statistic": stat, "source": src.name},
                    ))
        else:
            out.append(VariableSpec(plan._name(band), attrs={"long_name": a.long_name, "units": a.units, "source": src.name}))
    if plan.temporal:
        for period in plan.periods:
            for index in plan.indices:
                out.append(VariableSpec(
                    f"{src.prefix or src.name}_{index}_{period}",
                    attrs={"long_name": f"{index.upper()} of the median composite, {period}", "units": "1",
                           "period": period, "source": src.name},
                ))
            out.append(VariableSpec(
                f"{src.prefix or src.name}_count_{period}",
                attrs={"long_name": f"mean number of clear observations per pixel, {period} (QA)", "units": "1",
                       "period": period, "qa": "valid_count", "source": src.name},
            ))
    for t in plan.terrain:
        out.append(VariableSpec(t, attrs={"long_name": "terrain slope", "units": "degree", "source": src.name}))
    return out


def refine(gbox: GeoBox, factor: int) -> GeoBox:
    """The same extent at ``factor`` x finer resolution (pixel edges aligned with ``gbox``)."""
    if factor == 1:
        return gbox
    ny, nx = gbox.shape
    return GeoBox((ny * factor, nx * factor), gbox.affine @ Affine.scale(1 / factor), gbox.crs)


def block_nanmean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the finite values in each ``factor`` x ``factor`` block (NaN where none)."""
    if factor == 1:
        return a.astype(np.float32)
    ny, nx = a.shape[-2:]
    blocks = a.reshape(a.shape[:-2] + (ny // factor, factor, nx // factor, factor))
    axes = (-3, -1)
    if not np.issubdtype(blocks.dtype, np.inexact):
        return np.mean(blocks, axis=axes).astype(np.float32)
    # np.nanmean's own steps (same sums, same division, so the same floats) without its "Mean of empty slice"
    # warning, which would need the process-wide warnings filters changed from the tile's band threads
    missing = np.isnan(blocks)
    total = np.sum(np.where(missing, blocks.dtype.type(0), blocks), axis=axes)
    count = np.sum(~missing, axis=axes, dtype=np.intp)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(total, count, out=total, casting="unsafe")
    return total.astype(np.float32)


def _first_valid(stack: np.ndarray) -> np.ndarray:
    """Mosaic along time: the first finite value per pixel."""
    out = stack[0].copy()
    for layer in stack[1:]:
        gap = ~np.isfinite(out)
        if not gap.any():
            break
        out[gap] = layer[gap]
    return out


def _fractions(classes: np.ndarray, values: list[int], factor: int) -> dict[int, np.ndarray]:
    valid = np.isfinite(classes)
    n_valid = block_nanmean(valid.astype(np.float32), factor) * factor * factor
    out = {}
    for v in values:
        hits = block_nanmean((classes == v).astype(np.float32), factor) * factor * factor
        with np.errstate(invalid="ignore", divide="ignore"):
            out[v] = np.where(n_valid > 0, hits / n_valid, np.nan).astype(np.float32)
    return out


def _buffer_mask(clear: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink clear areas by ``pixels`` (grow the masked clouds/shadows) in each time step."""
    if pixels <= 0:
        return clear
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # grow within each date, never across dates
    return ndimage.binary_erosion(clear, structure=structure, iterations=pixels, border_value=1)


def _slope(elev: np.ndarray, res: float) -> np.ndarray:
    gy, gx = np.gradient(elev.astype(np.float64), res)
    return np.degrees(np.arctan(np.hypot(gx, gy))).astype(np.float32)


@dataclass
class TileResult:
    variables: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def process_source(plan: SourcePlan, tile_gbox: GeoBox, *, backend: str, retries: int, threads: int) -> TileResult:
    """All output variables of one source over one tile (target resolution)."""
    src = plan.source
    halo = 1 if plan.terrain else 0
    work = refine(tile_gbox, plan.factor)
    load_box = work.pad(halo) if halo else work
    if src.kind in RASTER_KINDS:
        obs = load_raster_observations(src, load_box, assets=plan.data_assets, when=plan.when, threads=threads)
        return _compute(plan, obs, tile_gbox, work, halo)
    specs = plan_variables(plan)
    nan = np.full(tuple(tile_gbox.shape), np.nan, np.float32)
    items = filter_items(plan.items, bbox=tuple(tile_gbox.extent.to_crs("EPSG:4326").boundingbox))
    if not items:
        res = {s.name: (np.zeros_like(nan) if s.attrs.get("qa") else nan.copy()) for s in specs}
        return TileResult(res, {"gaps": {src.name: "no items over tile"}})
    if plan.temporal and backend == "odc":
        try:  # one read per band for all dates; per-day reads only when radiometry differs or a read fails
            fast = load_band_stacks(items, src, load_box, assets=plan.data_assets, retries=retries, threads=threads)
            release_freed_memory()  # the read threads' temporaries, before the bands' floats are made
            if fast is not None:
                return _compute(plan, fast, tile_gbox, work, halo, threads)
        except StackReadError as err:
            log.info("source %s: %s; re-reading per day to isolate the failing Items", src.name, err)
    obs = load_observations(items, src, load_box, assets=plan.data_assets, backend=backend, retries=retries, threads=threads)
    return _compute(plan, obs, tile_gbox, work, halo, threads)


def _compute(plan: SourcePlan, obs: Observations, tile_gbox: GeoBox, work: GeoBox, halo: int, threads: int = 1) -> TileResult:
    """Mask, composite, aggregate and derive every variable of one source from its observations (``threads``
    bands at a time)."""
    src = plan.source
    k = plan.factor
    specs = plan_variables(plan)
    info: dict[str, Any] = {"items": {src.name: [i for ids in obs.item_ids for i in ids]}}
    if obs.failures:
        info["failures"] = {src.name: [f.__dict__ for f in obs.failures]}
    crop = (slice(halo, halo + work.shape[0]), slice(halo, halo + work.shape[1]))
    # the mask is the same for every band: grow the masked areas once per tile, not once per band
    buffered = _buffer_mask(obs.clear, plan.mask_buffer)[:, crop[0], crop[1]] if plan.temporal and obs.clear is not None else None
    temporal_keys = [key for key in plan.data_assets if plan.temporal and not src.assets[key].categorical]

    def one_band(key: str) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        a = src.assets[key]
        band = src.band_name(key)
        vals = obs.values[band]
        part: dict[str, np.ndarray] = {}
        meds: dict[str, dict[str, np.ndarray]] = {}
        if a.categorical:
            fr = _fractions(_first_valid(vals)[crop], sorted(a.classes), k)
            for value, arr in fr.items():
                part[f"{src.prefix or band}_{value}"] = arr
        elif plan.temporal:
            comp = src.composite
            clear = buffered if buffered is not None else np.isfinite(vals[:, crop[0], crop[1]])
            stats, counts = composite_periods(
                vals[:, crop[0], crop[1]], clear, obs.months, plan.periods,
                statistics=comp.statistics, quantiles=comp.quantiles, min_count=comp.min_count,  # type: ignore[union-attr]
            )
            del vals
            for (period, stat), arr in stats.items():
                suffix = "" if stat == "median" else f"_{stat}"
                part[f"{plan._name(band)}_{period}{suffix}"] = block_nanmean(arr, k)
                if stat == "median" and (cn := common_name(band)):
                    meds.setdefault(period, {})[cn] = part[f"{plan._name(band)}_{period}"]
            if key == temporal_keys[-1]:  # the count layer is the last band's (as each band overwrote it)
                for period, cnt in counts.items():
                    part[f"{src.prefix or src.name}_count_{period}"] = block_nanmean(cnt.astype(np.float32), k)
        else:
            mosaic = _first_valid(vals)
            part[plan._name(band)] = block_nanmean(mosaic[crop], k)
            if "slope" in plan.terrain:
                part["slope"] = block_nanmean(_slope(mosaic, abs(work.resolution.x))[crop], k)
        return part, meds

    keys = list(plan.data_assets)
    if threads > 1 and len(keys) > 1:
        # numpy releases the GIL on whole-layer operations: bands in parallel use every core of the tile's
        # worker (each band's floats exist only while it is composited, so memory grows by `threads` bands)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(keys)), thread_name_prefix="geosdm-band") as pool:
            results = list(pool.map(one_band, keys))
    else:
        results = [one_band(key) for key in keys]
    out: dict[str, np.ndarray] = {}
    medians: dict[str, dict[str, np.ndarray]] = {}
    for part, meds in results:  # in band order, as before
        out.update(part)
        for period, bands in meds.items():
            medians.setdefault(period, {}).update(bands)
    for period, bands in medians.items():
        for index in plan.indices:
            out[f"{src.prefix or src.name}_{index}_{period}"] = compute_index(index, bands)
    if plan.temporal:
        gaps = {p: float(np.mean(out[f"{src.prefix or src.name}_count_{p}"] == 0)) for p in plan.periods}
        info.setdefault("gap_fraction", {})[src.name] = gaps
    missing = [s.name for s in specs if s.name not in out]
    if missing:
        raise InputError(f"source {src.name!r}: variables {missing} were planned but not produced; check indices/terrain")
    return TileResult(out, info)


def process_tile(plans: list[SourcePlan], tile_gbox: GeoBox, *, backend: str = "odc", retries: int = 3, threads: int = 2) -> tuple[xr.Dataset, dict[str, Any]]:
    """Every source's variables over one tile, as a Dataset on the tile's grid, plus the tile's report."""
    data: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for plan in plans:
        res = process_source(plan, tile_gbox, backend=backend, retries=retries, threads=threads)
        for name, arr in res.variables.items():
            data[name] = (("y", "x"), arr)
        for key, val in res.info.items():
            info.setdefault(key, {}).update(val)
        del res
        release_freed_memory()
    coords = {k: v.values for k, v in grid_coords(tile_gbox).items() if k in ("y", "x")}
    return xr.Dataset(data, coords=coords), info


def check_indices(plan: SourcePlan) -> None:
    """Fail early when an index needs bands the source does not have."""
    names = {common_name(plan.source.band_name(k)) for k in plan.data_assets}
    for index in plan.indices:
        if index not in INDICES:
            raise InputError(f"unknown spectral index {index!r} for source {plan.source.name!r}; choose from {sorted(INDICES)}")
        need = set(INDICES[index]) - names
        if need:
            raise InputError(
                f"index {index!r} needs bands {sorted(need)} that source {plan.source.name!r} does not load; "
                "add the assets or drop the index"
            )
