"""Source definitions: one YAML file per data source in ``catalogs/``, validated once into a frozen model.

A source definition says where the Items come from (a STAC API, a static catalog, or plain COG URLs), which
assets to load and how to read them (dtype, nodata, scale/offset, resampling, units, long name, role), which
asset masks clouds and how (Sentinel-2 SCL classes or Landsat QA_PIXEL bits), which assets are categorical
(with their class table), the Sentinel-2 processing-baseline offset rule, and how time is aggregated (seasons
or months; median and quantiles). Physical value = DN * ``scale`` + ``offset``.

>>> from geosdm.sources import load_source
>>> src = load_source("pc-sentinel-2-l2a")                  # catalogs/pc-sentinel-2-l2a.yaml
>>> src.assets["B04"].scale, src.mask.keep
(0.0001, (4, 5, 6))
>>> demo = load_source("demo-sentinel-2-l2a", url="http://127.0.0.1:7822")   # fills the URL placeholder

Where ``load_source(name)`` looks
---------------------------------
A path (ending in ``.yaml``/``.yml`` or containing a path separator) is read as given. A bare name is looked up
as ``<name>.yaml`` in, in order: every folder listed in ``$GEOSDM_CATALOGS`` (``os.pathsep``-separated), then
the ``catalogs/`` folder of the source checkout that holds the imported ``geosdm`` package (so an editable
install, ``pip install -e .``, finds the shipped catalogs), then ``geosdm/catalogs/`` inside the installed
package (a wheel ships them there; :func:`geosdm.resources.shipped_dirs`). :func:`catalog_dirs` lists the
folders searched; :func:`available_sources` the names; :func:`find_source` the file a name or path resolves to.

Placeholders
------------
Every string value may hold ``${VAR}`` (required) or ``${VAR:-default}`` (optional) environment references,
substituted before validation; the demo catalogs use ``url: ${GEOSDM_STAC_URL:-}`` so the local STAC API's
address is given at run time (environment variable, or ``load_source(..., url=...)``).

Modules: :mod:`geosdm.sources.schema` (the frozen models), :mod:`geosdm.sources.loading` (finding, templates,
substitution, validation); every name is importable from ``geosdm.sources``.

Consumers: :mod:`geosdm.stac` (search, item checks, offsets) and :mod:`geosdm.cube` (load, mask, composite).
"""

from __future__ import annotations

from geosdm._yaml import substitute_env
from geosdm.sources.loading import (
    available_sources,
    catalog_dirs,
    fill_parameters,
    find_source,
    load_source,
    parse_source,
)
from geosdm.sources.schema import (
    DTYPES,
    RESAMPLING,
    AssetConfig,
    CompositeConfig,
    Dtype,
    FrozenDict,
    FrozenMap,
    HarmonizeConfig,
    MaskConfig,
    ParameterConfig,
    Resampling,
    Role,
    SourceConfig,
    Statistic,
)

__all__ = [
    "AssetConfig",
    "MaskConfig",
    "HarmonizeConfig",
    "CompositeConfig",
    "ParameterConfig",
    "SourceConfig",
    "load_source",
    "parse_source",
    "fill_parameters",
    "find_source",
    "catalog_dirs",
    "available_sources",
    "substitute_env",
    "DTYPES",
    "RESAMPLING",
    "Dtype",
    "FrozenDict",
    "FrozenMap",
    "Resampling",
    "Role",
    "Statistic",
]
