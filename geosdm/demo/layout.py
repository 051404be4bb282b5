"""Where the demo region's files live under its output folder (one place, used by every stage and test)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["DemoLayout", "COLLECTIONS"]

#: STAC collections written by the demo, named like the real ones they stand in for.
COLLECTIONS = (
    "sentinel-2-l2a",  # UTM 30N + 31N tiles, 20 m (small: 20 m), SCL mask, baseline 04.00 offset
    "landsat-c2-l2",  # UTM 31N, 30 m, QA_PIXEL bit flags, scale 2.75e-5 offset -0.2
    "cop-dem-glo-30",  # EPSG:4326 ~1 arc-second DEM
    "demo-landcover",  # Corine-like categorical map, EPSG:2154, classification extension
    "demo-climate-monthly",  # 12 items (one per month): tmin, tmax, prec, EPSG:2154 ~1 km
    "demo-bioclim",  # one item: bio01..bio19 derived from the monthly climate
)


@dataclass(frozen=True)
class DemoLayout:
    """Paths inside a demo output folder.

    ``cogs/<collection>/<item id>/<asset>.tif`` hold the rasters; ``stac/`` a static catalog plus one
    ItemCollection JSON per collection (hrefs relative to the demo root, rewritten by the services);
    ``records/`` species records; ``network/`` the interaction network; ``truth/`` the known truth.
    """

    root: Path

    @classmethod
    def at(cls, root: str | PathLike[str]) -> "DemoLayout":
        return cls(Path(root).resolve())

    @property
    def region_json(self) -> Path:
        """Preset, seed, target grid, lon/lat bbox, dates, file inventory."""
        return self.root / "region.json"

    @property
    def cogs(self) -> Path:
        return self.root / "cogs"

    @property
    def stac(self) -> Path:
        return self.root / "stac"

    @property
    def catalog_json(self) -> Path:
        return self.stac / "catalog.json"

    def item_collection(self, collection: str) -> Path:
        """ItemCollection (GeoJSON FeatureCollection) of one collection, asset hrefs relative to ``root``."""
        return self.stac / "item-collections" / f"{collection}.json"

    def collection_json(self, collection: str) -> Path:
        return self.stac / collection / "collection.json"

    @property
    def bioclim_urls(self) -> Path:
        """Plain list of bioclim COG paths (relative to root), like a WorldClim/CHELSA URL list."""
        return self.root / "cogs" / "bioclim_urls.txt"

    @property
    def records(self) -> Path:
        return self.root / "records"

    @property
    def presence_only_csv(self) -> Path:
        """GBIF-like presence-only records in lon/lat (EPSG:4326)."""
        return self.records / "presence_only.csv"

    @property
    def surveys_parquet(self) -> Path:
        """Presence/absence (and count) survey records at plots, in Lambert-93."""
        return self.records / "surveys.parquet"

    @property
    def network(self) -> Path:
        return self.root / "network"

    @property
    def nodes_csv(self) -> Path:
        return self.network / "nodes.csv"

    @property
    def edges_csv(self) -> Path:
        return self.network / "edges.csv"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def truth_zarr(self) -> Path:
        """Zarr store on the target grid: covariates, species probabilities, bias, edge joints, composites."""
        return self.truth / "truth.zarr"

    @property
    def species_json(self) -> Path:
        """The virtual species: role, prevalence, response functions (the known drivers)."""
        return self.truth / "species.json"

    @property
    def scenarios(self) -> Path:
        """Scenario inputs (read by the scenario sources, not truth): ``cmip6/<GCM>/<ssp>/demo_bioc_*.tif``
        (19-band bioclim), ``projection/demo_monthly_*.nc`` (monthly NetCDF), ``landuse/landcover_<year>.tif``."""
        return self.root / "scenarios"

    @property
    def scenarios_truth_zarr(self) -> Path:
        """The scenarios' truth on the target grid: future covariates ``(scenario, y, x)``, ``probability``
        ``(scenario, species, y, x)``, ``joint`` ``(scenario, edge, y, x)`` (scoring only)."""
        return self.truth / "scenarios.zarr"

    @property
    def scenarios_json(self) -> Path:
        """Per scenario: period, SSP, changes, replaced covariates, per-species prevalence and centroid shift."""
        return self.truth / "scenarios.json"

    def region(self) -> dict[str, Any]:
        return json.loads(self.region_json.read_text())
