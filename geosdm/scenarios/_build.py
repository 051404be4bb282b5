"""Build scenario stores: only the replaced covariates, on the baseline cube's grid and tiles, tile by tile.

A scenario store is a sharded Zarr v3 store like a cube (same GeoBox, same shards) that holds only the variables
the scenario replaces; :func:`geosdm.scenarios.open_scenario` overlays them on the baseline lazily. Each tile is one
task: the scenario's sources are read with the cube builder's own tile processing
(:func:`geosdm.cube.tiling.process_tile`: windowed reads, warps, categorical fractions, composites), derived
covariates are computed from their inputs (bioclim from a monthly climate), the replaced values are checked against
the baseline's (units), written, and the tile is marked; a rerun builds only the missing tiles.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from geosdm._secrets import redact
from geosdm.bioclim import BIOCLIM_META, biovars_numpy
from geosdm.cube.build import configure_gdal, resolve_sources
from geosdm.cube.config import CubeConfig, GridConfig, OutputConfig, SourceSpec
from geosdm.cube.tiling import SourcePlan, plan_variables, process_tile
from geosdm.errors import GridError, InputError, MissingVariableError
from geosdm.grid import Tile, tiles
from geosdm.io.zarr import CubeStore, VariableSpec, fingerprint, open_cube, read_window
from geosdm.scenarios.config import ScenarioConfig, ScenariosConfig, expand_variables

__all__ = ["ScenarioReport", "ScenarioPlan", "plan_scenario", "build_scenario", "build_scenarios"]

log = logging.getLogger(__name__)

_CELSIUS = {"degc", "°c", "deg_c", "celsius", "degrees_celsius", "c"}
_KELVIN = {"k", "kelvin", "degk"}
_MONTH = re.compile(r"m(\d{2})(?:_[a-z0-9]+)?")


@dataclass
class ScenarioReport:
    """What a scenario build did (also written to ``<store>.progress/report.json``)."""

    name: str
    path: str
    baseline: str
    period: str
    variables: list[str]
    n_tiles: int
    n_skipped: int
    seconds: float
    sources: dict[str, list[str]] = field(default_factory=dict)  # input label -> the covariates it replaced

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True)
class _Derive:
    """bioclim from a monthly source: the 12 variable names of tmin, tmax and prec in month order."""

    tmin: tuple[str, ...]
    tmax: tuple[str, ...]
    prec: tuple[str, ...]


@dataclass(frozen=True)
class ScenarioPlan:
    """A resolved scenario: the sources over the baseline's grid, what each replaces, and the store to write."""

    name: str
    config: ScenarioConfig
    cube: CubeConfig  # the scenario's sources as a cube build onto the baseline's grid and tiles
    plans: tuple[SourcePlan, ...]
    derive: tuple[_Derive | None, ...]  # per plan
    keep: tuple[tuple[str, ...], ...]  # per plan: the covariates it replaces
    variables: tuple[VariableSpec, ...]
    baseline: str
    baseline_attrs: dict[str, Any]
    units: dict[str, str]  # replaced covariate -> the baseline's units (for the value checks)
    categorical: frozenset[str]

    @property
    def replaced(self) -> list[str]:
        return [v for k in self.keep for v in k]


def _grid_of(baseline: str, ds: Any) -> tuple[GridConfig, Any, tuple[int, int], tuple[int, int]]:
    """The baseline's grid (as its build configured it, checked against the store), tile and chunk shapes."""
    import odc.geo.xr  # noqa: F401  (registers .odc)

    gbox = ds.odc.geobox
    if gbox is None or gbox.crs is None:
        raise GridError(f"baseline {baseline!r} has no grid (CRS and transform); is it a geosdm cube?")
    cfg = ds.attrs.get("geosdm:config") or {}
    grid = None
    if isinstance(cfg, dict) and cfg.get("grid"):
        try:
            grid = GridConfig.model_validate(cfg["grid"])
            if grid.like is not None or grid.geobox() != gbox:
                grid = None
        except Exception:  # a grid that cannot be rebuilt here (region file moved): use the store's own
            grid = None
    if grid is None:
        grid = GridConfig(crs=str(gbox.crs), resolution=abs(gbox.resolution.x), bbox=tuple(gbox.boundingbox))
        if grid.geobox() != gbox:
            raise GridError(f"baseline {baseline!r}: its grid {gbox} cannot be described by a bbox and resolution "
                            "(non-square or rotated pixels); build the baseline with `grid: {crs, resolution, bbox}`")
    any_var = next(iter(ds.data_vars.values()), None)
    if any_var is None:
        raise InputError(f"baseline {baseline!r} holds no variables; build the cube first (geosdm cube build)")
    tile = tuple(any_var.encoding.get("shards") or ds.attrs.get("geosdm:tile_shape") or (256, 256))[-2:]
    chunk = tuple(any_var.encoding.get("chunks") or tile)[-2:]
    return grid, gbox, tile, chunk  # type: ignore[return-value]


def _monthly(plan: SourcePlan, names: list[str], inp: Any, scenario: str) -> _Derive:
    out: dict[str, tuple[str, ...]] = {}
    src = plan.source
    for role in ("tmin", "tmax", "prec"):
        band = inp.monthly[role]
        keys = [k for k in src.data_assets if src.band_name(k) == band]
        if not keys:
            raise MissingVariableError(
                f"scenario {scenario!r}: `derive: bioclim` needs a {role} band named {band!r} in source {src.name!r}, "
                f"which has {[src.band_name(k) for k in src.data_assets]}; set `monthly: {{{role}: <band>}}`")
        units = src.assets[keys[0]].units.strip().lower()
        if role != "prec" and units in _KELVIN:
            raise InputError(f"scenario {scenario!r}: source {src.name!r} gives {band} in Kelvin; bioclim needs degC: "
                             "set the asset's `offset: -273.15` (and `units: degC`)")
        name = f"{src.prefix}_{band}" if src.prefix else band
        months: dict[int, str] = {}
        for n in names:
            if n.startswith(name + "_") and (m := _MONTH.fullmatch(n[len(name) + 1:])):
                months.setdefault(int(m.group(1)), n)
        if sorted(months) != list(range(1, 13)):
            raise InputError(
                f"scenario {scenario!r}: `derive: bioclim` needs 12 monthly values of {band!r} from source {src.name!r} "
                f"(a `composite: {{period: month}}` over the whole year); it gives months {sorted(months) or 'none'}")
        out[role] = tuple(months[m] for m in range(1, 13))
    return _Derive(out["tmin"], out["tmax"], out["prec"])


def plan_scenario(name: str, scenario: ScenarioConfig, baseline: str, *, output: str,
                  storage_options: dict[str, Any] | None = None, backend: str = "odc", retries: int = 3,
                  threads: int = 2) -> ScenarioPlan:
    """Resolve a scenario against its baseline: load and check every input, decide what each replaces.

    Raises
    ------
    InputError, MissingVariableError
        A bad period for a source (names its allowed periods), a replaced variable the baseline lacks (unknown
        variable) or the source does not give, a variable replaced twice, a monthly source unfit for bioclim.
    GridError
        A source that does not overlap the baseline's grid, or a baseline without a usable grid.
    """
    from geosdm.records import covariate_names

    ds = open_cube(baseline, storage_options=storage_options)
    base_vars = covariate_names(ds)
    grid, gbox, tile_shape, chunk_shape = _grid_of(baseline, ds)
    specs = []
    for inp in scenario.replace:
        try:
            raw = inp.resolved(scenario.period)
        except InputError as err:
            raise InputError(f"scenario {name!r}, input {inp.label!r}: {err}") from None
        specs.append(SourceSpec(source=raw, catalog=inp.catalog, datetime=inp.datetime,
                                working_resolution=inp.working_resolution, assets=inp.assets,
                                mask_buffer=inp.mask_buffer))
    cube = CubeConfig(grid=grid, sources=tuple(specs),
                      output=OutputConfig(path=output, tile_shape=tile_shape, chunk_shape=chunk_shape,
                                          storage_options=storage_options),
                      backend=backend, retries=retries, threads=threads)  # type: ignore[arg-type]
    plans = resolve_sources(cube)
    derive: list[_Derive | None] = []
    keep: list[tuple[str, ...]] = []
    attrs: dict[str, dict[str, Any]] = {}
    taken: dict[str, str] = {}
    for inp, plan in zip(scenario.replace, plans):
        specs_p = plan_variables(plan)
        names = [v.name for v in specs_p]
        d = _monthly(plan, names, inp, name) if inp.derive == "bioclim" else None
        derive.append(d)
        given = list(BIOCLIM_META) if d else names
        for v in specs_p:
            attrs[v.name] = dict(v.attrs)
        if d:
            for b, (long_name, units) in BIOCLIM_META.items():
                attrs[b] = {"long_name": long_name, "units": units, "source": plan.source.name,
                            "derived": f"bioclim from monthly {inp.monthly['tmin']}, {inp.monthly['tmax']}, "
                                       f"{inp.monthly['prec']}"}
        if inp.variables is not None:
            wanted = expand_variables(inp.variables, list(dict.fromkeys([*given, *base_vars])))
            if unknown := [v for v in wanted if v not in base_vars]:
                raise MissingVariableError(
                    f"scenario {name!r}: input {inp.label!r} replaces {unknown}, which the baseline {baseline!r} does "
                    f"not have (it has {base_vars}); a scenario replaces baseline covariates: fix the names or "
                    "rebuild the baseline with them")
            if absent := [v for v in wanted if v not in given]:
                raise MissingVariableError(
                    f"scenario {name!r}: source {plan.source.name!r} gives {given}, not {absent}; fix `variables` "
                    "or add the assets to the source")
        else:
            wanted = [v for v in given if v in base_vars]
            if not wanted:
                raise InputError(
                    f"scenario {name!r}: source {plan.source.name!r} gives {given}, none of which is a covariate of "
                    f"the baseline {baseline!r} ({base_vars}); list `variables:` or fix the source's names/prefix")
        for v in wanted:
            if v in taken:
                raise InputError(f"scenario {name!r}: {v!r} is replaced by both {taken[v]!r} and {plan.source.name!r}; "
                                 "give each covariate one input (`variables:`)")
            taken[v] = plan.source.name
        keep.append(tuple(wanted))
    variables = []
    for v in taken:
        a = {**{k: x for k, x in ds[v].attrs.items() if k not in ("grid_mapping", "source")}, **attrs.get(v, {}),
             "scenario": name}
        base_units, new_units = str(ds[v].attrs.get("units", "")).strip().lower(), str(a.get("units", "")).strip().lower()
        if scenario.check_values and base_units in _CELSIUS and new_units in _KELVIN:
            raise InputError(f"scenario {name!r}: {v} from source {taken[v]!r} is in Kelvin, the baseline's in degC; "
                             "set the asset's `offset: -273.15` (CHELSA stores K/10: `scale: 0.1, offset: -273.15`)")
        a["units"] = ds[v].attrs.get("units", a.get("units", "1"))
        variables.append(VariableSpec(v, attrs=a))
    units = {v: str(ds[v].attrs.get("units", "")) for v in taken}
    categorical = frozenset(v for v in taken if ds[v].attrs.get("categorical"))
    return ScenarioPlan(name, scenario, cube, tuple(plans), tuple(derive), tuple(keep), tuple(variables), baseline,
                        dict(ds.attrs), units, categorical)


def _derive_bioclim(ds: Any, d: _Derive) -> dict[str, np.ndarray]:
    stack = {r: np.stack([ds[n].values for n in getattr(d, r)], axis=-1) for r in ("tmin", "tmax", "prec")}
    bio = biovars_numpy(stack["tmin"], stack["tmax"], stack["prec"])
    return {b: bio[..., i] for i, b in enumerate(BIOCLIM_META)}


def _check_values(plan: ScenarioPlan, tile: Tile, arrays: dict[str, np.ndarray], source_of: dict[str, str]) -> None:
    """Refuse replaced values far off the baseline's in this tile: a median shift past 50 degC (Kelvin, K/10) or a
    ratio of medians past 5 (a scale factor missed), naming the variable, the source and the fix."""
    names = tuple(v for v in arrays if v not in plan.categorical)
    if not names:
        return
    base = read_window(plan.baseline, names, tile.slices, storage_options=plan.cube.output.storage_options)
    for i, v in enumerate(names):
        new, old = arrays[v], base[i]
        ok = np.isfinite(new) & np.isfinite(old)
        if ok.sum() < 4:
            continue
        units = plan.units.get(v, "").strip().lower()
        if units in _CELSIUS:
            shift = float(np.median(new[ok] - old[ok]))
            if abs(shift) > 50:
                guess = ("Kelvin (an offset of -273.15 missing)" if 200 < shift < 350 else
                         "tenths of a degree or K/10 (a scale of 0.1 missing)")
                raise InputError(
                    f"scenario {plan.name!r}: {v} from source {source_of[v]!r} is {shift:+.1f} degC off the baseline "
                    f"{plan.baseline!r} (median over tile {tile.index}); the source's values look like {guess}. Set "
                    "the asset's `scale`/`offset` (CHELSA: scale 0.1, offset -273.15 for temperatures) or, if the "
                    "change is real, `check_values: false` on the scenario")
            continue
        b, n = float(np.median(np.abs(old[ok]))), float(np.median(np.abs(new[ok])))
        if b > 1e-6 and n > 1e-6 and not 0.2 <= n / b <= 5.0:
            raise InputError(
                f"scenario {plan.name!r}: {v} from source {source_of[v]!r} is {n / b:.3g} x the baseline's "
                f"{plan.baseline!r} (median over tile {tile.index}, units {plan.units.get(v) or '?'}); a scale factor "
                "looks missing or doubled (CHELSA stores precipitation x10: `scale: 0.1`). Fix the asset's `scale`, "
                "or, if the change is real, set `check_values: false` on the scenario")


def _run_tile(tile: Tile, plan: ScenarioPlan, store: CubeStore, threads: int) -> dict[str, Any]:
    configure_gdal()
    ds, info = process_tile(list(plan.plans), tile.geobox, backend=plan.cube.backend, retries=plan.cube.retries,
                            threads=threads)
    arrays: dict[str, np.ndarray] = {}
    source_of: dict[str, str] = {}
    for p, d, keep in zip(plan.plans, plan.derive, plan.keep):
        values = _derive_bioclim(ds, d) if d is not None else {v: ds[v].values for v in keep}
        for v in keep:
            arrays[v] = np.asarray(values[v], dtype=np.float32)
            source_of[v] = p.source.name
    if plan.config.check_values:
        _check_values(plan, tile, arrays, source_of)
    store.write_arrays(tile.index, tile.slices, arrays, info)
    return info


def build_scenario(
    name: str,
    scenario: ScenarioConfig,
    *,
    baseline: str,
    output: str,
    storage_options: dict[str, Any] | None = None,
    client: Any | None = None,
    progress: bool = False,
    overwrite: bool = False,
    backend: str = "odc",
    retries: int = 3,
    threads: int = 2,
    plan: ScenarioPlan | None = None,
) -> ScenarioReport:
    """Build (or resume) the store of one scenario: its replaced covariates on the baseline's grid and tiles.

    Parameters
    ----------
    name
        The scenario's name (recorded in the store and on each variable, attr ``scenario``).
    scenario
        Its period, description and inputs.
    baseline
        Path or URL of the baseline cube (a geosdm cube store).
    output
        Path or URL of the scenario store (``<scenarios output>/<name>.zarr`` in a pipeline).
    client
        A ``dask.distributed.Client``: one task per tile; None runs tiles here, one after another.
    overwrite
        Delete an existing store first; otherwise a store built from the same scenario and baseline is resumed and
        a different one is refused.

    Returns
    -------
    ScenarioReport; the store's attrs hold ``geosdm:scenario`` (name, period, description, replaced covariates,
    inputs with their parameters, baseline path) and ``geosdm:baseline_fingerprint``.

    Example
    -------
    >>> cfg = ScenariosConfig.from_yaml("pipelines/demo-small.yaml")                      # doctest: +SKIP
    >>> build_scenario("warm2", cfg.futures["warm2"], baseline="demo-output/cube.zarr",   # doctest: +SKIP
    ...                output="demo-output/scenarios/warm2.zarr")
    """
    t0 = time.perf_counter()
    plan = plan or plan_scenario(name, scenario, baseline, output=output, storage_options=storage_options,
                                 backend=backend, retries=retries, threads=threads)
    gbox = plan.cube.grid.geobox()
    inputs = [{"source": p.source.name, "parameters": dict(p.source.parameter_values), "replaces": list(k),
               **({"derive": "bioclim"} if d else {})} for p, d, k in zip(plan.plans, plan.derive, plan.keep)]
    fp = fingerprint({
        "scenario": name,
        "config": plan.cube.model_dump(mode="json", exclude={"output": {"storage_options", "path"},
                                                             "sources": {"__all__": {"url", "catalog"}}}),
        "inputs": inputs, "check_values": scenario.check_values,
        "items": {p.source.name: sorted(i.id for i in p.items) for p in plan.plans},
        "baseline": plan.baseline_attrs.get("geosdm:fingerprint"),
    })
    out = plan.cube.output
    store = CubeStore(output, gbox, out.tile_shape, out.chunk_shape, storage_options)
    attrs = {
        "title": f"geosdm scenario {name} ({scenario.period})",
        "Conventions": "CF-1.8",
        "geosdm:scenario": {"name": name, "period": scenario.period, "description": scenario.description,
                            "replaced": plan.replaced, "inputs": redact(inputs), "baseline": baseline},
        "geosdm:baseline_fingerprint": plan.baseline_attrs.get("geosdm:fingerprint"),
        "geosdm:sources": [p.source.name for p in plan.plans],
        "geosdm:tile_shape": list(out.tile_shape),
    }
    with store.writer():
        store.create(list(plan.variables), attrs=attrs, fingerprint=fp, overwrite=overwrite)
        all_tiles = list(tiles(gbox, out.tile_shape))
        done = store.done_tiles()
        todo = [t for t in all_tiles if t.index not in done]
        log.info("scenario %s -> %s: %d tiles, %d already done", name, output, len(all_tiles), len(done))
        from tqdm.auto import tqdm

        bar = tqdm(total=len(all_tiles), initial=len(done), unit="tile", desc=f"scenario {name}", disable=not progress)
        if client is None:
            if threads > 1 and len(todo) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads) as pool:
                    for _ in pool.map(lambda t: _run_tile(t, plan, store, 1), todo):
                        bar.update(1)
            else:
                for t in todo:
                    _run_tile(t, plan, store, threads)
                    bar.update(1)
        else:
            from dask.distributed import as_completed

            from geosdm.io.tasks import shared_input

            plan_f = shared_input(client, plan, key=f"scenario-plan-{fp}")
            futures = [client.submit(_run_tile, t, plan_f, store, 1, key=f"scenario-tile-{fp}-{t.index[0]}-{t.index[1]}",
                                     pure=False) for t in todo]
            for fut in as_completed(futures):
                fut.result()
                bar.update(1)
        bar.close()
        report = ScenarioReport(
            name=name, path=output, baseline=baseline, period=scenario.period, variables=plan.replaced,
            n_tiles=len(all_tiles), n_skipped=len(done), seconds=round(time.perf_counter() - t0, 3),
            sources={p.source.name: list(k) for p, k in zip(plan.plans, plan.keep)},
        )
        store.fs.makedirs(store.progress_path, exist_ok=True)
        with store.fs.open(f"{store.progress_path}/report.json", "w") as f:
            f.write(report.to_json())
        store.finalize()
    return report


def build_scenarios(config: ScenariosConfig, *, baseline: str | None = None, names: list[str] | None = None,
                    client: Any | None = None, progress: bool = False, overwrite: bool = False,
                    source_url: str | None = None) -> dict[str, ScenarioReport]:
    """Build (or resume) every scenario of ``config`` (or those in ``names``), one store each.

    ``baseline`` overrides ``config.baseline``; ``source_url`` is given to STAC API inputs without their own
    ``url``/``catalog`` (the demo's served API). Returns name -> :class:`ScenarioReport`.
    """
    base = baseline or config.baseline
    if not base:
        raise InputError("scenarios need a baseline cube: set `scenarios.baseline` or run them after a cube step")
    wanted = names or list(config.futures)
    if unknown := [n for n in wanted if n not in config.futures]:
        raise InputError(f"no scenarios named {unknown}; the configuration declares {list(config.futures)}")
    reports = {}
    for name in wanted:
        sc = config.futures[name]
        if source_url:
            sc = sc.model_copy(update={"replace": tuple(
                i if (i.url or i.catalog or not _is_stac_api(i, sc.period)) else i.model_copy(update={"url": source_url})
                for i in sc.replace)})
        reports[name] = build_scenario(name, sc, baseline=base, output=config.path(name),
                                       storage_options=config.storage_options, client=client, progress=progress,
                                       overwrite=overwrite, backend=config.backend, retries=config.retries,
                                       threads=config.threads)
    return reports


def _is_stac_api(inp: Any, period: str) -> bool:
    return inp.resolved(period).get("kind", "stac-api") == "stac-api"
