"""The schema of a source definition: frozen pydantic models of a source, its assets, mask, harmonisation,
composites and template parameters (see :mod:`geosdm.sources` for the files and how they are found).

Every model is immutable, rejects unknown keys and hashes from its canonical JSON, so a definition can key caches
and be part of a cube's fingerprint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WrapSerializer, model_validator

__all__ = [
    "AssetConfig",
    "MaskConfig",
    "HarmonizeConfig",
    "CompositeConfig",
    "ParameterConfig",
    "SourceConfig",
    "FrozenDict",
    "FrozenMap",
    "DTYPES",
    "RESAMPLING",
]


#: dtypes a source asset may declare (what GDAL/odc-stac read without surprises).
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: Resampling names understood by odc-stac / rasterio.
RESAMPLING = (
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
    "min", "max", "med", "q1", "q3", "sum", "rms",
)  # fmt: skip

Dtype = Literal["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]
Resampling = Literal[
    "nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode",
    "min", "max", "med", "q1", "q3", "sum", "rms",
]  # fmt: skip
Role = Literal["reflectance", "continuous", "categorical", "mask"]
Statistic = Literal["median", "mean", "min", "max", "std"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenDict(dict[_K, _V]):
    """A dict that refuses changes after construction; pickles (Dask workers) and deep-copies normally."""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is read-only; build a new config (model_copy(update=...))")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


def _freeze(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return FrozenDict(value)


#: A read-only mapping field: validated like a dict, stored as a :class:`FrozenDict`, dumped as a dict.
FrozenMap = Annotated[Mapping[_K, _V], AfterValidator(_freeze), WrapSerializer(lambda v, handler: handler(dict(v)))]


class _Frozen(BaseModel):
    """Immutable, rejects unknown keys, hashes and tokenizes (Dask) from its canonical JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, self.model_dump_json()))

    def __dask_tokenize__(self) -> tuple[str, str]:
        return (type(self).__qualname__, self.model_dump_json())


def _nodata_fits(dtype: str, nodata: float | None) -> bool:
    if nodata is None:
        return True
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return True
    if math.isnan(nodata) or float(nodata) != int(nodata):
        return False
    info = np.iinfo(dt)
    return info.min <= int(nodata) <= info.max


class AssetConfig(_Frozen):
    """How to read one asset (one band) of a source.

    ``dtype``/``nodata`` describe the stored DN; ``scale``/``offset`` turn DN into physical ``units``
    (value = DN * scale + offset). ``dtype: null`` means "as the Item's ``raster:bands`` or the file header
    says" (used for URL lists whose files we cannot inspect here). ``name`` is the band name used in cube
    variable names (defaults to the asset key), so providers with different keys (``red`` vs ``B04``) give
    the same cube. ``role``: ``reflectance`` (optical band, masked and composited), ``continuous`` (any other
    covariate), ``categorical`` (class map, needs ``classes``), ``mask`` (the cloud/quality mask).
    """

    long_name: str
    dtype: Dtype | None
    nodata: float | None = None
    scale: float = 1.0
    offset: float = 0.0
    units: str = "1"
    role: Role = "continuous"
    resampling: Resampling | None = None
    name: str | None = None
    classes: FrozenMap[int, str] = Field(default_factory=FrozenDict)
    href: str | None = None
    band: int | str | None = None
    variable: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AssetConfig:
        if self.scale == 0:
            raise ValueError("scale is 0, which would erase every value; use 1.0 for unscaled data")
        if self.dtype is not None and not _nodata_fits(self.dtype, self.nodata):
            raise ValueError(
                f"nodata {self.nodata!r} cannot be stored in dtype {self.dtype}; give a value inside the dtype "
                "range (e.g. 0 for uint16, -9999 for int16) or null"
            )
        integer = self.dtype is None or np.dtype(self.dtype).kind in "iu"
        if self.role in ("categorical", "mask"):
            if not integer:
                raise ValueError(f"a {self.role} asset needs an integer dtype, got {self.dtype}")
            if self.resampling not in (None, "nearest", "mode"):
                raise ValueError(
                    f"a {self.role} asset cannot use resampling {self.resampling!r} (it would invent classes "
                    "or bit patterns); use 'nearest' (or 'mode' for categorical)"
                )
        if self.role == "categorical" and not self.classes:
            raise ValueError("a categorical asset needs a class table: add `classes: {value: name, ...}`")
        if isinstance(self.band, int) and self.band < 1:
            raise ValueError(f"band {self.band} is not a band number; bands are numbered from 1 (as in GDAL)")
        return self

    @property
    def categorical(self) -> bool:
        """True for class maps (aggregated to per-class fractions, never interpolated)."""
        return self.role == "categorical"

    @property
    def resampling_method(self) -> str:
        """``resampling`` or the role's default: nearest for masks/classes, bilinear otherwise."""
        if self.resampling is not None:
            return self.resampling
        return "nearest" if self.role in ("categorical", "mask") else "bilinear"


class MaskConfig(_Frozen):
    """Which pixels of the mask asset are clear observations.

    ``kind: classes`` (Sentinel-2 SCL): a pixel is clear when its value is in ``keep`` (or in ``snow`` when
    ``keep_snow``); ``reject`` lists the rest explicitly so every class is a decision. ``kind: bits`` (Landsat
    QA_PIXEL): ``bits`` names bit positions (0 = least significant); a pixel is masked when any of
    ``reject_bits`` (or ``snow_bit`` unless ``keep_snow``) is set.
    """

    asset: str
    kind: Literal["classes", "bits"]
    keep: tuple[int, ...] = ()
    reject: tuple[int, ...] = ()
    snow: tuple[int, ...] = ()
    bits: FrozenMap[str, int] = Field(default_factory=FrozenDict)
    reject_bits: tuple[str, ...] = ()
    snow_bit: str | None = None
    keep_snow: bool = False

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        if self.kind == "classes":
            if not self.keep:
                raise ValueError("a classes mask needs `keep:` (the clear classes, e.g. [4, 5, 6] for SCL)")
            if not self.reject:
                raise ValueError("a classes mask needs `reject:` (e.g. [0, 1, 2, 3, 7, 8, 9, 10] for SCL)")
            for a, b, la, lb in ((self.keep, self.reject, "keep", "reject"), (self.keep, self.snow, "keep", "snow"),
                                 (self.reject, self.snow, "reject", "snow")):  # fmt: skip
                if both := sorted(set(a) & set(b)):
                    raise ValueError(f"classes {both} are in both `{la}` and `{lb}`; each class needs one rule")
            if self.bits or self.reject_bits or self.snow_bit:
                raise ValueError("`bits`, `reject_bits`, `snow_bit` belong to `kind: bits` masks")
        else:
            if not self.bits or not self.reject_bits:
                raise ValueError(
                    "a bits mask needs `bits:` (name -> bit index) and `reject_bits:` (names that mask a pixel)"
                )
            named = [*self.reject_bits, *([self.snow_bit] if self.snow_bit else [])]
            if unknown := [b for b in named if b not in self.bits]:
                raise ValueError(f"bit names {unknown} are not in `bits` {sorted(self.bits)}")
            if bad := {k: v for k, v in self.bits.items() if not 0 <= v < 64}:
                raise ValueError(f"bit indices {bad} are outside 0..63")
            if self.keep or self.reject or self.snow:
                raise ValueError("`keep`, `reject`, `snow` belong to `kind: classes` masks")
        return self

    @property
    def clear_values(self) -> tuple[int, ...]:
        """Classes counted as clear (``keep`` plus ``snow`` when ``keep_snow``); classes masks only."""
        return tuple(sorted({*self.keep, *(self.snow if self.keep_snow else ())}))

    @property
    def reject_bitmask(self) -> int:
        """Integer with every rejecting bit set (``value & reject_bitmask == 0`` means clear); bits masks only."""
        names = [*self.reject_bits, *([self.snow_bit] if self.snow_bit and not self.keep_snow else [])]
        return sum(1 << self.bits[n] for n in set(names))

    def is_clear(self, data: Any) -> Any:
        """Boolean array, True where ``data`` (mask DN: numpy, Dask or xarray) is a clear observation.

        Lazy in, lazy out: nothing is computed. Nodata pixels are not clear (SCL 0 is rejected; QA fill bit).
        """
        if self.kind == "bits":
            return (data & self.reject_bitmask) == 0
        if hasattr(data, "isin"):  # xarray
            return data.isin(list(self.clear_values))
        import dask.array as da

        if isinstance(data, da.Array):
            return da.isin(data, list(self.clear_values))
        return np.isin(data, self.clear_values)


class HarmonizeConfig(_Frozen):
    """Sentinel-2 processing-baseline offset rule (baseline >= 04.00 adds 1000 DN to L2A reflectance).

    For each item and each listed asset the offset is ``offset_dn * scale`` when the item's
    ``baseline_property`` is >= ``min_baseline`` and ``applied_property`` (e.g. Earth Search's
    ``earthsearch:boa_offset_applied``) is not true; otherwise 0. Items without a baseline fall back to the
    offset their ``raster:bands`` declare, then to the acquisition date (>= ``cutoff_date``).
    """

    assets: tuple[str, ...]
    min_baseline: str = "04.00"
    offset_dn: float = -1000.0
    baseline_property: str = "s2:processing_baseline"
    applied_property: str | None = None
    cutoff_date: date = date(2022, 1, 25)

    @model_validator(mode="after")
    def _check(self) -> HarmonizeConfig:
        if not re.fullmatch(r"\d{1,2}\.\d{1,2}", self.min_baseline):
            raise ValueError(f"min_baseline {self.min_baseline!r} is not like '04.00'")
        if not self.assets:
            raise ValueError("`assets` is empty; list the reflectance assets the offset applies to")
        return self


_DEFAULT_SEASONS = {"djf": (12, 1, 2), "mam": (3, 4, 5), "jja": (6, 7, 8), "son": (9, 10, 11)}


class CompositeConfig(_Frozen):
    """Temporal aggregation of a time series into per-period statistics.

    ``period``: ``season`` (``seasons``: label -> months, default meteorological DJF/MAM/JJA/SON, pooled over
    all years of the date range), ``month`` (labels ``m01``..``m12``) or ``year`` (one label, ``year``).
    ``statistics`` and ``quantiles`` (0 < q < 1; labelled ``q10`` for 0.1) are computed over clear
    observations; pixels with fewer than ``min_count`` clear observations are NaN.
    """

    period: Literal["season", "month", "year"] = "season"
    seasons: FrozenMap[str, tuple[int, ...]] = Field(default_factory=lambda: FrozenDict(_DEFAULT_SEASONS))
    statistics: tuple[Statistic, ...] = ("median",)
    quantiles: tuple[float, ...] = ()
    min_count: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> CompositeConfig:
        seen: dict[int, str] = {}
        for label, months in self.seasons.items():
            if not re.fullmatch(r"[a-z][a-z0-9]*", label):
                raise ValueError(f"season label {label!r} must be lowercase letters/digits (it names variables)")
            for m in months:
                if not 1 <= m <= 12:
                    raise ValueError(f"season {label!r} has month {m}; months are 1..12")
                if m in seen:
                    raise ValueError(f"month {m} is in seasons {seen[m]!r} and {label!r}; seasons must not overlap")
                seen[m] = label
        if bad := [q for q in self.quantiles if not 0 < q < 1]:
            raise ValueError(f"quantiles {bad} are outside (0, 1); write 0.1 for the 10th percentile")
        if not self.statistics and not self.quantiles:
            raise ValueError("no statistics: give `statistics: [median]` and/or `quantiles: [0.1, 0.9]`")
        return self

    def periods(self) -> dict[str, tuple[int, ...]]:
        """Period label -> months (1..12), in calendar order of their first month."""
        if self.period == "month":
            return {f"m{m:02d}": (m,) for m in range(1, 13)}
        if self.period == "year":
            return {"year": tuple(range(1, 13))}
        return dict(self.seasons)

    def stat_labels(self) -> tuple[str, ...]:
        """Statistic labels in output order, e.g. ``('median', 'q10', 'q90')``."""
        return (*self.statistics, *(f"q{round(q * 100):02d}" for q in self.quantiles))


class ParameterConfig(_Frozen):
    """One parameter of a parameterised source (a CMIP6 source's GCM, SSP, period, resolution).

    Templates ``{name}`` (the value as given), ``{name|lower}`` and ``{name|upper}`` in any string of the
    definition (hrefs, URLs, titles) are filled by :func:`load_source` (``parameters=``), before validation.
    ``values`` lists the allowed values (None: any value matching ``pattern``); ``default`` is used when the
    caller gives none (required when ``default`` is None).
    """

    description: str = ""
    values: tuple[str, ...] | None = None
    pattern: str | None = None
    default: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ParameterConfig:
        if self.values is not None and not self.values:
            raise ValueError("`values` is empty; list the allowed values or drop the key (any value)")
        if self.default is not None:
            self.validate_value(self.default, "default")
        return self

    def validate_value(self, value: str, name: str) -> str:
        """``value`` as a string if allowed, else ``ValueError`` naming the allowed values."""
        v = str(value)
        if self.values is not None and v not in self.values:
            raise ValueError(f"parameter {name!r} = {v!r} is not one of {list(self.values)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, v):
            raise ValueError(f"parameter {name!r} = {v!r} does not match {self.pattern!r}")
        return v


class SourceConfig(_Frozen):
    """One data source: where Items come from and how to read, mask and aggregate their assets.

    ``kind``: ``stac-api`` (``url`` is the API root; searched with pystac-client), ``static`` (``url`` is a
    static ``catalog.json``/``collection.json`` path or URL, walked), ``cog-urls`` (no catalog: every asset
    has an ``href`` to a COG; wrapped into an Item by :func:`geosdm.stac.items_from_cog_urls`; ``datetime``
    is the nominal date or ``start/end`` range of the data), ``raster`` (GeoTIFF/COG files, local, ``https://``
    or ``s3://``: every asset has an ``href``, and a ``band`` for multi-band files; read with rioxarray),
    ``dataset`` (a NetCDF or Zarr dataset at ``url``, local or object store: each asset names a ``variable``;
    a ``time_dim`` is composited by ``composite`` like STAC time series). ``raster``/``dataset`` sources take
    their CRS from the file (GeoTIFF header, CF ``grid_mapping``, latitude/longitude units) or from ``crs``
    when the file has none; ``format`` (``netcdf``/``zarr``) when the URL's suffix does not say;
    ``storage_options`` for fsspec (object stores). ``sign``: optional ``module:function`` that signs Items
    (e.g. ``planetary_computer:sign_inplace``), used only if importable.
    """

    name: str
    collection: str
    assets: FrozenMap[str, AssetConfig]
    title: str = ""
    description: str = ""
    license: str | None = None
    kind: Literal["stac-api", "static", "cog-urls", "raster", "dataset"] = "stac-api"
    url: str | None = None
    crs: str | None = None
    format: Literal["netcdf", "zarr"] | None = None
    time_dim: str = "time"
    storage_options: FrozenMap[str, Any] | None = None
    sign: str | None = None
    cloud_property: str | None = "eo:cloud_cover"
    max_cloud: float | None = Field(default=None, ge=0, le=100)
    datetime: str | None = None
    prefix: str | None = None
    mask: MaskConfig | None = None
    harmonize: HarmonizeConfig | None = None
    composite: CompositeConfig | None = None
    parameters: FrozenMap[str, ParameterConfig] = Field(default_factory=FrozenDict)
    #: the values the templates were filled with (set by :func:`load_source`; part of the hash / fingerprint)
    parameter_values: FrozenMap[str, str] = Field(default_factory=FrozenDict)

    @model_validator(mode="before")
    @classmethod
    def _blank_url(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("url") == "":
            data = {**data, "url": None}  # an unset optional placeholder (${VAR:-})
        if isinstance(data, Mapping) and data.get("kind") in ("raster", "dataset") and "collection" not in data:
            data = {**data, "collection": data.get("name", "")}  # no catalog: the collection is the source
        return data

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if not self.assets:
            raise ValueError("`assets` is empty; list at least one asset to load")
        masks = [k for k, a in self.assets.items() if a.role == "mask"]
        if self.mask is not None:
            if self.mask.asset not in self.assets:
                raise ValueError(f"mask asset {self.mask.asset!r} is not in `assets` {sorted(self.assets)}")
            mask_asset = self.assets[self.mask.asset]
            if mask_asset.role != "mask":
                raise ValueError(f"mask asset {self.mask.asset!r} needs `role: mask`, has {mask_asset.role!r}")
            if self.mask.kind == "bits" and mask_asset.dtype is not None:
                width = np.dtype(mask_asset.dtype).itemsize * 8
                if too_high := {k: v for k, v in self.mask.bits.items() if v >= width}:
                    raise ValueError(f"mask bits {too_high} do not fit the {width}-bit dtype {mask_asset.dtype}")
        elif masks:
            raise ValueError(f"assets {masks} have `role: mask` but there are no mask rules; add a `mask:` block")
        if len(masks) > 1:
            raise ValueError(f"assets {masks} all have `role: mask`; one source has one mask asset")
        reflectance = [k for k, a in self.assets.items() if a.role == "reflectance"]
        if self.composite is not None and reflectance and self.mask is None:
            raise ValueError(
                f"reflectance assets {reflectance} are composited without mask rules; add a `mask:` block "
                "(SCL classes or QA bits) so clouds do not enter the composites"
            )
        if self.harmonize is not None and (bad := [a for a in self.harmonize.assets if a not in reflectance]):
            raise ValueError(f"harmonize.assets {bad} are not reflectance assets of this source {reflectance}")
        names = [a.name or k for k, a in self.assets.items()]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"band names {dupes} are used by more than one asset; give each a distinct `name`")
        if self.kind in ("cog-urls", "raster"):
            if missing := [k for k, a in self.assets.items() if not a.href]:
                raise ValueError(f"kind {self.kind} needs an `href` for every asset; missing for {missing}")
            if self.kind == "cog-urls" and not self.datetime:
                raise ValueError("kind cog-urls needs `datetime:` (nominal date or 'start/end' of the data)")
        elif hrefs := [k for k, a in self.assets.items() if a.href]:
            raise ValueError(f"assets {hrefs} have `href`, which only `kind: raster` and `cog-urls` sources use")
        if self.kind != "raster" and (banded := [k for k, a in self.assets.items() if a.band is not None]):
            raise ValueError(f"assets {banded} have `band`, which only `kind: raster` sources use")
        if self.kind != "dataset" and (named := [k for k, a in self.assets.items() if a.variable is not None]):
            raise ValueError(f"assets {named} have `variable`, which only `kind: dataset` sources use")
        if self.kind == "dataset" and not self.url:
            raise ValueError("kind dataset needs `url:` (path or URL of the NetCDF file or Zarr store)")
        if self.kind in ("raster", "dataset"):
            if self.mask is not None:
                raise ValueError(f"kind {self.kind} has no cloud mask rules; set invalid cells as `nodata`")
            if self.kind == "raster" and self.composite is not None:
                raise ValueError("kind raster files have no time axis to composite; use `kind: dataset` for time "
                                 "series (NetCDF/Zarr) or drop `composite:`")
        elif self.crs or self.format or self.storage_options:
            raise ValueError("`crs`, `format` and `storage_options` belong to `kind: raster`/`dataset` sources")
        if self.kind == "static" and not self.url:
            raise ValueError("kind static needs `url:` (path or URL of the static catalog.json)")
        for k in self.parameters:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", k):
                raise ValueError(f"parameter name {k!r} must be lowercase letters, digits, _ (it is a template)")
        if unknown := sorted(set(self.parameter_values) - set(self.parameters)):
            raise ValueError(f"parameter_values {unknown} are not declared in `parameters` {sorted(self.parameters)}")
        return self

    def band_name(self, asset: str) -> str:
        """Band name of ``asset`` used in cube variable names (``name`` or the asset key)."""
        return self.assets[asset].name or asset

    @property
    def data_assets(self) -> tuple[str, ...]:
        """Asset keys that become cube variables (everything but the mask)."""
        return tuple(k for k, a in self.assets.items() if a.role != "mask")
