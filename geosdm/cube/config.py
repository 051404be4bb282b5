"""Cube build configuration: the grid, the sources (with per-source processing) and the output store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


__all__ = ["GridConfig", "SourceSpec", "OutputConfig", "CubeConfig"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridConfig(_Frozen):
    """Target grid: ``bbox`` (in ``bbox_crs``, default ``crs``), a ``region`` polygon file, or a ``preset``."""

    crs: str = "EPSG:2154"
    resolution: float = Field(gt=0)
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    region: str | None = None
    preset: Literal["france", "europe"] | None = None

    @model_validator(mode="after")
    def _one_extent(self) -> GridConfig:
        given = [k for k in ("bbox", "region", "preset") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of bbox, region or preset for the grid (got {given or 'none'})")
        return self

    def geobox(self) -> Any:
        """The aligned :class:`odc.geo.geobox.GeoBox`."""
        from geosdm.grid import geobox_from_bbox, geobox_from_geometry, preset_geobox, read_region

        if self.preset:
            return preset_geobox(self.preset, resolution=self.resolution)
        if self.region:
            return geobox_from_geometry(read_region(self.region), crs=self.crs, resolution=self.resolution)
        return geobox_from_bbox(self.bbox, crs=self.crs, resolution=self.resolution, bbox_crs=self.bbox_crs)  # type: ignore[arg-type]


class SourceSpec(_Frozen):
    """One source in a cube and how to process it.

    ``source``: a name in ``catalogs/`` or a YAML path. ``url`` overrides the source's STAC API URL;
    ``catalog`` reads Items from a static catalog / ItemCollection file instead of searching an API.
    ``working_resolution``: load at this finer resolution (an integer divisor of the target resolution),
    mask and composite there, then aggregate to the target grid (means; class fractions for categorical
    assets). ``indices``: spectral indices from the composites. ``terrain``: derivatives of a DEM source.
    ``mask_buffer``: working pixels by which masked (cloud, shadow) areas grow, so cloud edges blurred by
    resampling do not leak into composites.
    """

    source: str
    url: str | None = None
    catalog: str | None = None
    datetime: str | None = None
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    assets: tuple[str, ...] | None = None
    working_resolution: float | None = Field(default=None, gt=0)
    indices: tuple[str, ...] = ()
    terrain: tuple[Literal["slope"], ...] = ()
    mask_buffer: int = Field(default=1, ge=0)


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
