"""Generate the demo region: world -> scenes (COG) -> STAC -> species truth -> records -> network."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import xarray as xr

from geosdm.bioclim import BIOCLIM_META
from geosdm.demo._climate import make_climate
from geosdm.demo._noise import block_mean
from geosdm.demo._optical import (
    LANDSAT_BANDS,
    S2_BANDS,
    SEASONS,
    make_sky,
    ndvi,
    render_landsat,
    render_s2,
    scene_dates,
    scene_grid,
    season_of,
    surface_reflectance,
)
from geosdm.demo._presets import DemoPreset, get_preset
from geosdm.demo._species import driver_pool, make_records, make_species, realise
from geosdm.demo._stac import add_asset, make_collection, make_item, write_cog
from geosdm.demo._warp import warp
from geosdm.demo._world import LANDCOVER_CLASSES, World, make_world
from geosdm.demo.layout import COLLECTIONS, DemoLayout
from geosdm.errors import InputError
from geosdm.grid import geobox_from_bbox, grid_coords
from geosdm.io.zarr import quiet_zarr

__all__ = ["generate"]

log = logging.getLogger(__name__)

#: index of the Sentinel-2 date made fully cloudy (a reported gap, never filled)
CLOUDY_DATE_INDEX = 3


def _lonlat_bounds(world: World) -> tuple[float, float, float, float]:
    return tuple(world.geobox.extent.to_crs("EPSG:4326").boundingbox)  # type: ignore[return-value]


def generate(out: str | PathLike[str], *, preset: str = "small", seed: int = 0, overwrite: bool = False) -> DemoLayout:
    """Write the demo region under ``out`` and return its layout.

    Deterministic: the same ``preset`` and ``seed`` give byte-identical files. The folder is written under a
    temporary name and renamed at the end, so an interrupted run never leaves a half-written demo behind.

    Example
    -------
    >>> layout = generate("demo-output", preset="small", seed=0)  # doctest: +SKIP
    """
    p = get_preset(preset)
    final = Path(out).resolve()
    if final.exists():
        if not overwrite and (final / "region.json").exists():
            log.info("demo already exists at %s; reusing it", final)
            return DemoLayout(final)
        shutil.rmtree(final)
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    layout = DemoLayout(tmp)
    seeds = np.random.SeedSequence(seed).spawn(8)
    rng = [np.random.default_rng(s) for s in seeds]

    world = make_world(p, rng[0])
    climate = make_climate(p, world, rng[1])
    target = geobox_from_bbox(p.bbox, crs="EPSG:2154", resolution=p.target_res)
    if tuple(target.boundingbox) != tuple(p.bbox):
        raise InputError(f"demo preset {p.name!r}: bbox {p.bbox} is not aligned to its target resolution {p.target_res}")
    factor = int(round(p.target_res / p.fine_res))
    off = int(round(p.margin / p.fine_res))
    crop = (slice(off, off + target.shape[0] * factor), slice(off, off + target.shape[1] * factor))

    cov: dict[str, np.ndarray] = {
        "elevation": block_mean(world.elevation[crop], factor),
        "slope": block_mean(world.slope[crop], factor),
    }
    bio_t = warp(climate.bio, climate.geobox, target, "bilinear")
    for i, name in enumerate(BIOCLIM_META):
        cov[name] = bio_t[i]
    lc_region = world.landcover[crop]
    lc_frac = {k: block_mean((lc_region == k).astype(np.float32), factor) for k in LANDCOVER_CLASSES}
    for k, frac in lc_frac.items():
        cov[f"lc_{k}"] = frac
    composites: dict[str, np.ndarray] = {}
    for season in SEASONS:
        refl = block_mean(surface_reflectance(lc_region, world.brightness[crop], season), factor)
        for b, band in enumerate(S2_BANDS):
            composites[f"s2_{band}_{season}"] = refl[b]
        composites[f"s2_ndvi_{season}"] = ndvi(refl[2], refl[3])
    cov["s2_ndvi_jja"] = composites["s2_ndvi_jja"]
    bias_t = block_mean(world.bias[crop], factor)

    pool = driver_pool(cov, rng[6])  # the generator's own draw, apart from the library's collinearity filter
    species, prob, suit, edges, joint = make_species(cov, rng[2], pool=pool.selected)
    occ = realise(species, prob, suit, rng[3])
    po, surveys = make_records(
        species, occ, suit, bias_t, cov["elevation"], lc_frac, target, po_scale=p.po_scale, n_plots=p.n_plots, rng=rng[4]
    )

    items = _write_scenes(layout, p, world, climate, rng[5])
    _write_stac(layout, items)
    _write_truth(layout, target, cov, composites, bias_t, species, prob, suit, occ, edges, joint)
    layout.records.mkdir(parents=True, exist_ok=True)
    po.to_csv(layout.presence_only_csv, index=False)
    surveys.to_parquet(layout.surveys_parquet, index=False)
    _write_network(layout, species, edges)
    from geosdm.demo._scenarios import make_scenarios

    scenarios = make_scenarios(layout, preset=p, world=world, climate=climate, target=target, crop=crop, factor=factor,
                               cov=cov, species=species, prob=prob, edges=edges,
                               rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(8,))))
    s2_dates = [it.datetime.isoformat() for it in items["sentinel-2-l2a"] if it.properties["s2:mgrs_tile"].startswith("30")]
    region = {
        "preset": p.name,
        "seed": seed,
        "target_grid": {
            "crs": "EPSG:2154",
            "resolution": p.target_res,
            "shape": list(target.shape),
            "transform": list(target.affine)[:6],
            "bbox": list(p.bbox),
        },
        "bbox_lonlat": list(target.extent.to_crs("EPSG:4326").boundingbox),
        "fine_resolution": p.fine_res,
        "s2_dates": s2_dates,
        "fully_cloudy_s2_date": s2_dates[CLOUDY_DATE_INDEX],
        "seasons": {k: list(v) for k, v in SEASONS.items()},
        "n_items": {c: len(v) for c, v in items.items()},
        "n_species": len(species),
        "n_presence_only": int(len(po)),
        "n_survey_plots": int(surveys["plot_id"].nunique()),
        "landcover_classes": {str(k): v for k, v in LANDCOVER_CLASSES.items()},
        "towns": [list(t) for t in world.towns],
        "driver_pool": pool.to_dict(),
        "scenarios": scenarios,
    }
    layout.region_json.write_text(json.dumps(region, indent=2))
    tmp.rename(final)
    return DemoLayout(final)


def _rel(layout: DemoLayout, path: Path) -> str:
    return path.relative_to(layout.root).as_posix()


def _write_scenes(layout: DemoLayout, p: DemoPreset, world: World, climate: Any, rng: np.random.Generator) -> dict[str, list[pystac.Item]]:
    """Render and write every COG; return the STAC Items per collection (asset hrefs absolute paths)."""
    items: dict[str, list[pystac.Item]] = {c: [] for c in COLLECTIONS}
    w, s, e, n = _lonlat_bounds(world)
    pool = ThreadPoolExecutor(max_workers=2)
    futures = []

    def submit(*args: Any, **kw: Any) -> None:
        futures.append(pool.submit(write_cog, *args, **kw))

    # Sentinel-2: two UTM zones meeting at 0° longitude, overlapping by about 1.5 km.
    tiles = [("30TYT", "EPSG:32630", (w - 0.005, s - 0.005, 0.01, n + 0.005)), ("31TBN", "EPSG:32631", (-0.01, s - 0.005, e + 0.005, n + 0.005))]
    grids = {tile: scene_grid(world, crs, p.fine_res, bb) for tile, crs, bb in tiles}
    dates = scene_dates(p.s2_dates)
    covers = np.clip(rng.beta(0.6, 2.2, size=len(dates)) * 0.75, 0.0, 0.7)
    covers[CLOUDY_DATE_INDEX] = 1.0
    covers[min(4, len(dates) - 1)] = 0.0
    for i, when in enumerate(dates):
        season = season_of(when)
        sky = make_sky(world, float(covers[i]), snow=season == "djf" and rng.uniform() < 0.6, rng=rng)
        for tile, crs, _ in tiles:
            grid = grids[tile]
            dn, scl, cover = render_s2(grid, sky, season, rng)
            item_id = f"S2B_{tile}_{when:%Y%m%d}_0_L2A"
            folder = layout.cogs / "sentinel-2-l2a" / item_id
            item = make_item(
                item_id, "sentinel-2-l2a", grid.geobox, when,
                properties={
                    "platform": "sentinel-2b", "constellation": "sentinel-2", "instruments": ["msi"],
                    "eo:cloud_cover": round(cover, 2), "s2:processing_baseline": "05.10", "s2:mgrs_tile": tile,
                    "gsd": p.fine_res,
                },
            )
            EO = pystac.extensions.eo.EOExtension
            EO.ext(item, add_if_missing=True).cloud_cover = round(cover, 2)
            for b, (band, meta) in enumerate(S2_BANDS.items()):
                path = folder / f"{band}.tif"
                submit(path, dn[b], grid.geobox, nodata=0)
                add_asset(item, band, str(path), dtype="uint16", nodata=0, title=f"{band} ({meta[0]})", scale=0.0001,
                          offset=-0.1, resolution=p.fine_res, eo_band=meta, roles=("data", "reflectance"))
            path = folder / "SCL.tif"
            submit(path, scl, grid.geobox, nodata=0, categorical=True)
            add_asset(item, "SCL", str(path), dtype="uint8", nodata=0, title="Scene classification map",
                      resolution=p.fine_res, roles=("data",))
            items["sentinel-2-l2a"].append(item)

    # Landsat: one UTM 31N scene covering the region, 30 m.
    lgrid = scene_grid(world, "EPSG:32631", p.landsat_res, (w - 0.005, s - 0.005, e + 0.005, n + 0.005))
    for i, when in enumerate(scene_dates(p.landsat_dates, offset_days=7, hour=10, minute=31)):
        season = season_of(when)
        sky = make_sky(world, float(np.clip(rng.beta(0.7, 1.8) * 0.8, 0, 0.8)), snow=False, rng=rng)
        dn, qa, cover = render_landsat(lgrid, sky, season, rng)
        item_id = f"LC09_L2SP_199028_{when:%Y%m%d}_02_T1"
        folder = layout.cogs / "landsat-c2-l2" / item_id
        item = make_item(item_id, "landsat-c2-l2", lgrid.geobox, when, properties={
            "platform": "landsat-9", "instruments": ["oli", "tirs"], "landsat:wrs_path": "199", "landsat:wrs_row": "028",
            "landsat:collection_category": "T1", "gsd": p.landsat_res,
        })
        pystac.extensions.eo.EOExtension.ext(item, add_if_missing=True).cloud_cover = round(cover, 2)
        for b, (band, meta) in enumerate(LANDSAT_BANDS.items()):
            path = folder / f"{band}.tif"
            submit(path, dn[b], lgrid.geobox, nodata=0)
            add_asset(item, band, str(path), dtype="uint16", nodata=0, title=f"{meta[0]} surface reflectance",
                      scale=2.75e-5, offset=-0.2, resolution=p.landsat_res, eo_band=meta, roles=("data", "reflectance"))
        path = folder / "qa_pixel.tif"
        submit(path, qa, lgrid.geobox, nodata=1, categorical=True)
        add_asset(item, "qa_pixel", str(path), dtype="uint16", nodata=1, title="Pixel quality assessment (bit flags)",
                  resolution=p.landsat_res, roles=("cloud", "cloud-shadow", "snow-ice", "water-mask"))
        items["landsat-c2-l2"].append(item)

    # Copernicus-DEM-like: EPSG:4326, about 1 arc-second.
    dem_box = geobox_from_bbox((w, s, e, n), crs="EPSG:4326", resolution=p.dem_res_deg)
    dem = warp(world.elevation, world.geobox, dem_box, "bilinear", nodata=-32767.0)
    item = make_item("Copernicus_DSM_COG_10_N46_00_W001_00_DEM", "cop-dem-glo-30", dem_box,
                     dt.datetime(2021, 4, 22, tzinfo=dt.timezone.utc), properties={"gsd": 30})
    path = layout.cogs / "cop-dem-glo-30" / item.id / "data.tif"
    submit(path, dem, dem_box, nodata=-32767.0)
    add_asset(item, "data", str(path), dtype="float32", nodata=-32767.0, title="Elevation", unit="m", resolution=30)
    items["cop-dem-glo-30"].append(item)

    # Corine-like land cover, Lambert-93 at the fine resolution.
    item = make_item("demo-landcover-2024", "demo-landcover", world.geobox, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    path = layout.cogs / "demo-landcover" / item.id / "data.tif"
    submit(path, world.landcover, world.geobox, nodata=0, categorical=True)
    add_asset(item, "data", str(path), dtype="uint8", nodata=0, title="Land cover class", classes=LANDCOVER_CLASSES,
              resolution=p.fine_res)
    items["demo-landcover"].append(item)

    # Monthly climate (one item per month) and the bioclim layers derived from it.
    for m in range(12):
        start = dt.datetime(2024, m + 1, 1, tzinfo=dt.timezone.utc)
        end = dt.datetime(2024 + (m == 11), (m + 1) % 12 + 1, 1, tzinfo=dt.timezone.utc) - dt.timedelta(seconds=1)
        item = make_item(f"demo-climate-2024-{m + 1:02d}", "demo-climate-monthly", climate.geobox, None, start=start, end=end)
        for key, arr, unit, title in [
            ("tmin", climate.tmin[m], "degC", "mean daily minimum temperature"),
            ("tmax", climate.tmax[m], "degC", "mean daily maximum temperature"),
            ("prec", climate.prec[m], "mm", "monthly precipitation"),
        ]:
            path = layout.cogs / "demo-climate-monthly" / item.id / f"{key}.tif"
            submit(path, arr, climate.geobox, nodata=-9999.0)
            add_asset(item, key, str(path), dtype="float32", nodata=-9999.0, title=title, unit=unit, resolution=p.climate_res)
        items["demo-climate-monthly"].append(item)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
    item = make_item("demo-bioclim-2024", "demo-bioclim", climate.geobox, None, start=start, end=end)
    urls = []
    for i, (name, (long_name, unit)) in enumerate(BIOCLIM_META.items()):
        path = layout.cogs / "demo-bioclim" / item.id / f"{name}.tif"
        submit(path, climate.bio[i], climate.geobox, nodata=-9999.0)
        add_asset(item, name, str(path), dtype="float32", nodata=-9999.0, title=long_name, unit=unit, resolution=p.climate_res)
        urls.append(_rel(layout, path))
    items["demo-bioclim"].append(item)
    for f in futures:
        f.result()
    pool.shutdown()
    layout.bioclim_urls.write_text("\n".join(urls) + "\n")
    return items


def _write_stac(layout: DemoLayout, items: dict[str, list[pystac.Item]]) -> None:
    """ItemCollections with hrefs relative to the demo root, and a self-contained static catalog."""
    descriptions = {
        "sentinel-2-l2a": "Sentinel-2 L2A-like scenes (demo): two UTM zones, SCL mask, baseline 04.00 offset.",
        "landsat-c2-l2": "Landsat Collection 2 Level-2-like scenes (demo): QA_PIXEL bit flags.",
        "cop-dem-glo-30": "Copernicus DEM GLO-30-like elevation (demo), EPSG:4326.",
        "demo-landcover": "Corine-like categorical land cover (demo), Lambert-93.",
        "demo-climate-monthly": "Monthly tmin/tmax/precipitation (demo), ~1 km, Lambert-93.",
        "demo-bioclim": "Bioclimatic variables bio01-bio19 derived from the monthly demo climate.",
    }
    (layout.stac / "item-collections").mkdir(parents=True, exist_ok=True)
    catalog = pystac.Catalog("geosdm-demo", "geosdm offline demo region", title="geosdm demo")
    for cid, its in items.items():
        feats = []
        for it in its:
            d = it.to_dict(include_self_link=False, transform_hrefs=False)
            # The core schema requires a collection link when "collection" is set; relative to the demo root.
            d["links"] = [{"rel": "collection", "href": _rel(layout, layout.collection_json(cid)), "type": "application/json"}]
            for a in d["assets"].values():
                a["href"] = _rel(layout, Path(a["href"]))
            feats.append(d)
        ic = {"type": "FeatureCollection", "features": feats}
        layout.item_collection(cid).write_text(json.dumps(ic, indent=1))
        catalog.add_child(make_collection(cid, descriptions[cid], its))
    catalog.normalize_hrefs(str(layout.stac))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)


def _write_truth(layout: DemoLayout, target: Any, cov: dict[str, np.ndarray], composites: dict[str, np.ndarray],
                 bias: np.ndarray, species: list[Any], prob: dict[str, np.ndarray], suit: dict[str, np.ndarray],
                 occ: dict[str, np.ndarray], edges: pd.DataFrame, joint: np.ndarray) -> None:
    coords = grid_coords(target)
    names = [s.name for s in species]
    ds = xr.Dataset(coords=coords)
    for k, v in {**cov, **composites}.items():
        ds[k] = (("y", "x"), v.astype(np.float32))
    ds["bias"] = (("y", "x"), bias.astype(np.float32), {"long_name": "observer bias intensity (relative)"})
    ds["probability"] = (("species", "y", "x"), np.stack([prob[n] for n in names]).astype(np.float32),
                         {"long_name": "true occurrence probability per cell"})
    ds["suitability"] = (("species", "y", "x"), np.stack([suit[n] for n in names]).astype(np.float32),
                         {"long_name": "environmental suitability (pests/enemies before biotic dependence)"})
    ds["occurrence"] = (("species", "y", "x"), np.stack([occ[n] for n in names]).astype(np.uint8),
                        {"long_name": "realised occurrence used to draw the records"})
    ds["joint"] = (("edge", "y", "x"), joint, {"long_name": "true joint probability that both partners are present"})
    ds = ds.assign_coords(species=np.array(names, dtype=object), edge=np.arange(len(edges)),
                          edge_source=("edge", edges["source"].to_numpy().astype(object)),
                          edge_target=("edge", edges["target"].to_numpy().astype(object)))
    for v in ds.data_vars:
        ds[v].attrs["grid_mapping"] = "spatial_ref"
    layout.truth.mkdir(parents=True, exist_ok=True)
    with quiet_zarr():
        ds.to_zarr(layout.truth_zarr, mode="w", zarr_format=3, consolidated=True)
    layout.species_json.write_text(json.dumps([s.to_dict() for s in species], indent=1))


def _write_network(layout: DemoLayout, species: list[Any], edges: pd.DataFrame) -> None:
    layout.network.mkdir(parents=True, exist_ok=True)
    nodes = pd.DataFrame({"species": [s.name for s in species], "role": [s.role for s in species], "guild": [s.guild for s in species]})
    nodes.to_csv(layout.nodes_csv, index=False)
    edges.to_csv(layout.edges_csv, index=False)
