"""Cube build configuration: the grid, the sources (with per-source processing) and the output store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


__all__ = ["GridConfig", "SourceSpec", "OutputConfig", "CubeConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridConfig(_Frozen):
    """Target grid: ``bbox`` (in ``bbox_crs``, default ``crs``), a ``region`` polygon file, a ``preset``, or
    ``like``: exactly the grid of a raster file or dataset (its CRS, transform and shape; ``crs`` only where the
    file has none), e.g. a cube on the native grid of the covariate rasters."""

    crs: str | None = None
    resolution: float | None = Field(default=None, gt=0)
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    region: str | None = None
    preset: Literal["france", "europe"] | None = None
    like: str | None = None

    @model_validator(mode="after")
    def _one_extent(self) -> GridConfig:
        given = [k for k in ("bbox", "region", "preset", "like") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of bbox, region, preset or like for the grid (got {given or 'none'})")
        if self.like is None and self.resolution is None:
            raise ValueError("the grid needs `resolution:` (CRS units per pixel) unless it is `like:` a raster")
        if self.like is not None and self.resolution is not None:
            raise ValueError("`like:` takes the raster's own resolution; drop `resolution:` (or use bbox/region)")
        return self

    def geobox(self) -> Any:
        """The aligned :class:`odc.geo.geobox.GeoBox` (``crs`` defaults to EPSG:2154, Lambert-93)."""
        from geosdm.grid import geobox_from_bbox, geobox_from_geometry, preset_geobox, read_region

        if self.like:
            from geosdm.cube._raster import raster_geobox

            return raster_geobox(self.like, crs=self.crs)
        crs = self.crs or "EPSG:2154"
        assert self.resolution is not None
        if self.preset:
            return preset_geobox(self.preset, resolution=self.resolution)
        if self.region:
            return geobox_from_geometry(read_region(self.region), crs=crs, resolution=self.resolution)
        return geobox_from_bbox(self.bbox, crs=crs, resolution=self.resolution, bbox_crs=self.bbox_crs)  # type: ignore[arg-type]


class SourceSpec(_Frozen):
    """One source in a cube and how to process it.

    ``source``: a name in ``catalogs/``, a YAML path, or the source definition itself (a mapping, as in a
    ``catalogs/*.yaml`` file; handy for a user's own rasters). ``url`` overrides the source's STAC API URL;
    ``catalog`` reads Items from a static catalog / ItemCollection file instead of searching an API.
    ``working_resolution``: load at this finer resolution (an integer divisor of the target resolution),
    mask and composite there, then aggregate to the target grid (means; class fractions for categorical
    assets). ``indices``: spectral indices from the composites. ``terrain``: derivatives of a DEM source.
    ``mask_buffer``: working pixels by which masked (cloud, shadow) areas grow, so cloud edges blurred by
    resampling do not leak into composites.
    """

    source: str | dict[str, Any]
    url: str | None = None
    catalog: str | None = None
    datetime: str | None = None
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    assets: tuple[str, ...] | None = None
    working_resolution: float | None = Field(default=None, gt=0)
    indices: tuple[str, ...] = ()
    terrain: tuple[Literal["slope"], ...] = ()
    mask_buffer: int = Field(default=1, ge=0)

    @property
    def label(self) -> str:
        """The source's name for messages (the catalog name, or an inline definition's ``name``)."""
        return self.source if isinstance(self.source, str) else str(self.source.get("name", "<inline source>"))

    def load(self) -> Any:
        """The validated :class:`geosdm.sources.SourceConfig` (``url`` applied)."""
        from geosdm.sources import load_source, parse_source

        if isinstance(self.source, str):
            return load_source(self.source, url=self.url) if self.url else load_source(self.source)
        raw = {**self.source, **({"url": self.url} if self.url else {})}
        raw.setdefault("name", "inline")
        return parse_source(raw, origin=f"inline source {raw['name']!r}")


class OutputConfig(_Frozen):
    """Where and how the cube is written (Zarr v3, one shard per tile)."""

    path: str
    tile_shape: tuple[int, int] = (256, 256)
    chunk_shape: tuple[int, int] | None = None
    storage_options: dict[str, Any] | None = None


class CubeConfig(_Frozen):
    """A whole cube build; loaded from YAML (``cube:`` section of a pipeline or a file of its own)."""

    grid: GridConfig
    sources: tuple[SourceSpec, ...]
    output: OutputConfig
    datetime: str | None = None
    backend: Literal["odc", "stackstac"] = "odc"
    retries: int = Field(default=3, ge=0)
    threads: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> CubeConfig:
        if not self.sources:
            raise ValueError("`sources` is empty; list at least one source")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, *, section: str | None = "cube") -> CubeConfig:
        from geosdm._yaml import model_from_yaml

        return model_from_yaml(cls, path, section=section, what="cube")
