"""Load one tile's observations of one source: odc-stac (default) or stackstac, per-item radiometry, masks.

Both backends return the same :class:`Observations`: physical values per band (scale/offset applied per Item,
so mixed Sentinel-2 processing baselines are right), a clear-observation mask, one time step per solar day
(same-day Items mosaicked, first valid wins). Failed reads are retried with backoff; Items that still fail are
dropped from the tile and reported, never silently filled.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pystac
from odc.geo.geobox import GeoBox

from geosdm.errors import DataSourceError
from geosdm.sources import SourceConfig
from geosdm.stac import asset_scale_offset, odc_stac_config, resampling_config

__all__ = ["Observations", "ItemFailure", "StackReadError", "load_band_stacks", "load_observations", "solar_day_groups"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# odc-loader reprojects windows read over HTTP through rasterio with an explicit source transform, which makes
# rasterio warn that the in-memory window "has no geotransform"; the result is right (tests compare HTTP-read
# cubes with local reads), so this one message is silenced rather than shown once per window.
warnings.filterwarnings("ignore", message="Dataset has no geotransform, gcps, or rpcs", module="rasterio.warp")


@dataclass
class ItemFailure:
    """An Item that could not be read after retries (reported in the build report)."""

    item_id: str
    error: str


@dataclass
class Observations:
    """A source's observations over one tile: ``values[band]`` (time, y, x) float32, ``clear`` (time, y, x).

    ``values`` may load each band on access (:func:`load_band_stacks`): read each band once.
    """

    values: Mapping[str, np.ndarray]
    clear: np.ndarray | None
    times: list[dt.datetime]
    item_ids: list[list[str]]
    failures: list[ItemFailure] = field(default_factory=list)

    @property
    def months(self) -> np.ndarray:
        return np.array([t.month for t in self.times], dtype=np.int16)


def _centre_lon(item: pystac.Item) -> float:
    b = item.bbox or [0, 0, 0, 0]
    return (b[0] + b[2]) / 2.0


def solar_day_groups(items: Sequence[pystac.Item]) -> list[list[pystac.Item]]:
    """Items grouped by local solar day (UTC time + longitude / 15 h), in time order."""
    groups: dict[dt.date, list[pystac.Item]] = {}
    for item in sorted(items, key=lambda i: (i.datetime or i.common_metadata.start_datetime, i.id)):
        when = item.datetime or item.common_metadata.start_datetime
        day = (when + dt.timedelta(hours=_centre_lon(item) / 15.0)).date()
        groups.setdefault(day, []).append(item)
    return list(groups.values())


def _retry(fn: Callable[[], T], *, retries: int, what: str, base_delay: float = 0.5) -> T:
    delay = base_delay
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - any read error is retried, then reported by the caller
            if attempt == retries:
                raise
            log.warning("read of %s failed (%s); retry %d/%d in %.1fs", what, err, attempt + 1, retries, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _nodata(item: pystac.Item, asset: str) -> float | None:
    rb = (item.assets[asset].extra_fields.get("raster:bands") or [{}])[0]
    nd = rb.get("nodata")
    if nd is None:
        return None
    return float("nan") if nd == "nan" else float(nd)


def _physical(dn: np.ndarray, item: pystac.Item, asset: str) -> np.ndarray:
    scale, offset = asset_scale_offset(item, asset)
    out = dn.astype(np.float32)
    nd = _nodata(item, asset)
    if np.issubdtype(dn.dtype, np.integer):  # always finite: only the nodata value is invalid
        invalid = None if nd is None or np.isnan(nd) else dn == nd
    else:
        invalid = ~np.isfinite(out) if nd is None or np.isnan(nd) else (out == nd) | ~np.isfinite(out)
    out *= np.float32(scale)  # in place: the same float32 arithmetic as out * scale + offset, no temporaries
    out += np.float32(offset)
    if invalid is not None:
        np.copyto(out, np.float32(np.nan), where=invalid)
    return out


def _driver(source: SourceConfig) -> Any:
    """odc-stac's reader driver with shared nearest-neighbour warp maps; make one per tile (see _warpmap).

    None (odc-stac's own driver) where this odc-stac/odc-loader lacks the internals the driver builds on.
    """
    try:
        from geosdm.cube._warpmap import shared_warp_driver
    except ImportError:  # pragma: no cover - another odc-loader layout: the stock reader gives the same arrays
        return None
    return shared_warp_driver(odc_stac_config(source))


def _load_odc(group: Sequence[pystac.Item], source: SourceConfig, keys: list[str], gbox: GeoBox, threads: int,
              driver: Any = None) -> dict[str, np.ndarray]:
    import odc.stac

    ds = odc.stac.load(
        list(group), bands=keys, geobox=gbox, groupby="solar_day", resampling=resampling_config(source),
        stac_cfg=odc_stac_config(source), chunks=None, pool=threads, fail_on_error=True, progress=None,
        driver=driver or _driver(source),
    )
    return {k: ds[k].values[0] for k in keys}


def _load_stackstac(group: Sequence[pystac.Item], source: SourceConfig, keys: list[str], gbox: GeoBox, threads: int) -> dict[str, np.ndarray]:
    """stackstac per resampling method; Items mosaicked first-valid in the given order."""
    import stackstac
    from rasterio.enums import Resampling

    items = []
    for it in group:  # stackstac reads the EPSG code from proj:epsg only
        it = it.clone()
        code = it.properties.get("proj:code")
        if code and "proj:epsg" not in it.properties and str(code).upper().startswith("EPSG:"):
            it.properties["proj:epsg"] = int(str(code).split(":")[1])
        for a in it.assets.values():
            c = a.extra_fields.get("proj:code")
            if c and "proj:epsg" not in a.extra_fields and str(c).upper().startswith("EPSG:"):
                a.extra_fields["proj:epsg"] = int(str(c).split(":")[1])
        items.append(it)
    methods = resampling_config(source)
    out: dict[str, np.ndarray] = {}
    for method in sorted(set(methods[k] for k in keys)):
        sel = [k for k in keys if methods[k] == method]
        arr = stackstac.stack(
            items, assets=sel, epsg=gbox.crs.epsg, resolution=abs(gbox.resolution.x), bounds=tuple(gbox.boundingbox),
            snap_bounds=False, resampling=Resampling[method], dtype="float64", fill_value=np.nan, rescale=False,
            xy_coords="center", sortby_date=False,
        )
        vals = arr.compute(scheduler="threads", num_workers=threads).values  # (item, band, y, x)
        if vals.shape[-2:] != tuple(gbox.shape):
            raise DataSourceError(f"stackstac returned shape {vals.shape[-2:]} for grid {tuple(gbox.shape)}")
        for b, k in enumerate(sel):
            mosaic = vals[0, b].copy()
            for i in range(1, vals.shape[0]):
                nd = _nodata(group[i], k)
                layer = vals[i, b]
                fill = ~np.isfinite(mosaic) | ((mosaic == nd) if nd is not None and not np.isnan(nd) else False)
                mosaic[fill] = layer[fill]
            nd0 = _nodata(group[0], k)
            mosaic[~np.isfinite(mosaic)] = nd0 if nd0 is not None and not np.isnan(nd0) else np.nan
            out[k] = mosaic
    return out


def load_observations(
    items: Sequence[pystac.Item],
    source: SourceConfig,
    gbox: GeoBox,
    *,
    assets: Sequence[str] | None = None,
    backend: str = "odc",
    retries: int = 3,
    threads: int = 2,
) -> Observations:
    """Read ``assets`` (default: all data assets) and the mask asset of ``items`` over ``gbox``.

    Raises
    ------
    DataSourceError
        Every Item failed to read (the messages of the failures are included).
    """
    if backend == "odc":  # one driver for the tile: every day and band reuses its warp maps
        driver = _driver(source)
        loader: Callable[..., dict[str, np.ndarray]] = lambda g, s, k, b, t: _load_odc(g, s, k, b, t, driver)  # noqa: E731
    else:
        loader = _load_stackstac
    data_keys = list(assets or source.data_assets)
    mask_key = source.mask.asset if source.mask is not None else None
    keys = data_keys + ([mask_key] if mask_key else [])
    values: dict[str, list[np.ndarray]] = {source.band_name(k): [] for k in data_keys}
    clear: list[np.ndarray] = []
    times: list[dt.datetime] = []
    ids: list[list[str]] = []
    failures: list[ItemFailure] = []
    for group in solar_day_groups(items):
        try:
            raw = _retry(lambda: loader(group, source, keys, gbox, threads), retries=retries, what=f"{[i.id for i in group]}")
        except Exception:  # noqa: BLE001 - isolate the failing Items, keep the readable ones
            good = []
            for item in group:
                try:
                    _retry(lambda: loader([item], source, keys, gbox, threads), retries=0, what=item.id)
                    good.append(item)
                except Exception as err:  # noqa: BLE001
                    failures.append(ItemFailure(item.id, f"{type(err).__name__}: {err}"))
            if not good:
                continue
            group = good
            raw = _retry(lambda: loader(group, source, keys, gbox, threads), retries=retries, what=f"{[i.id for i in group]}")
        for k in data_keys:
            values[source.band_name(k)].append(_physical(raw[k], group[0], k))
        if mask_key:
            m = raw[mask_key]
            nd = _nodata(group[0], mask_key)
            ok = np.asarray(source.mask.is_clear(np.nan_to_num(m, nan=0).astype(np.int64)))  # type: ignore[union-attr]
            if nd is not None and not np.isnan(nd):
                ok &= m != nd
            clear.append(ok & np.isfinite(m))
        times.append(group[0].datetime or group[0].common_metadata.start_datetime)
        ids.append([i.id for i in group])
    if not times:
        raise DataSourceError(
            f"source {source.name!r}: none of its {len(items)} Items could be read over this tile; failures: "
            f"{[f'{f.item_id}: {f.error}' for f in failures][:5]}. Check the asset URLs and credentials."
        )
    stacked = {k: np.stack(v) for k, v in values.items()}
    return Observations(stacked, np.stack(clear) if clear else None, times, ids, failures)


class StackReadError(DataSourceError):
    """A band-at-a-time read failed; the caller falls back to per-day reads that isolate the failing Items."""


def _uniform_radiometry(items: Sequence[pystac.Item], keys: Sequence[str]) -> bool:
    for k in keys:
        first = (asset_scale_offset(items[0], k), _nodata(items[0], k))
        for item in items[1:]:
            other = (asset_scale_offset(item, k), _nodata(item, k))
            if other != first and not (other[0] == first[0] and other[1] is not None and first[1] is not None
                                       and np.isnan(other[1]) and np.isnan(first[1])):
                return False
    return True


class _BandStacks(Mapping[str, np.ndarray]):
    """All dates of each band, as physical values on access.

    ``raw`` holds bands already read (the stored dtype, e.g. uint16) and is emptied as they are used, so the
    float copy of only one band exists at a time; bands not in ``raw`` are read on access with one call each.
    """

    def __init__(self, items: Sequence[pystac.Item], source: SourceConfig, gbox: GeoBox, keys: Sequence[str],
                 raw: dict[str, np.ndarray], retries: int, threads: int, driver: Any = None) -> None:
        self._items, self._source, self._gbox, self._retries, self._threads = list(items), source, gbox, retries, threads
        self._driver = driver
        self._keys = {source.band_name(k): k for k in keys}
        self._raw = raw

    def __getitem__(self, band: str) -> np.ndarray:
        key = self._keys[band]
        raw = self._raw.pop(key, None)
        if raw is None:
            raw = _read_stack(self._items, self._source, [key], self._gbox, self._retries, self._threads, self._driver)[key]
        return _physical(raw, self._items[0], key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _read_stack(items: Sequence[pystac.Item], source: SourceConfig, keys: list[str], gbox: GeoBox, retries: int,
                threads: int, driver: Any = None) -> Any:
    """One odc-stac read of ``keys`` for every solar day (same-day Items mosaicked first-valid)."""
    try:
        return _retry(lambda: _load_all_dates(items, source, keys, gbox, threads, driver=driver), retries=retries,
                      what=f"{keys} of {len(items)} items")
    except Exception as err:  # noqa: BLE001 - the caller re-reads per day, isolating the failing Items
        raise StackReadError(f"{keys}: {type(err).__name__}: {err}") from err


def _load_all_dates(items: Sequence[pystac.Item], source: SourceConfig, keys: list[str], gbox: GeoBox, threads: int,
                    *, driver: Any = None) -> Any:
    import odc.stac

    return odc.stac.load(
        list(items), bands=keys, geobox=gbox, groupby="solar_day", resampling=resampling_config(source),
        stac_cfg=odc_stac_config(source), chunks=None, pool=threads, fail_on_error=True, progress=None,
        driver=driver or _driver(source),
    )


def load_band_stacks(
    items: Sequence[pystac.Item],
    source: SourceConfig,
    gbox: GeoBox,
    *,
    assets: Sequence[str] | None = None,
    retries: int = 3,
    threads: int = 2,
    memory_budget: int = 512 * 2**20,
) -> Observations | None:
    """Observations of all dates read with one odc-stac call (or one per band above ``memory_budget`` bytes).

    Far fewer calls than per-day reads, and floats for one band at a time. Returns None when the Items'
    radiometry differs (e.g. mixed Sentinel-2 processing baselines), which needs per-day reads. Reads raise
    :class:`StackReadError` on failure.
    """
    data_keys = list(assets or source.data_assets)
    mask_key = source.mask.asset if source.mask is not None else None
    if not _uniform_radiometry(items, data_keys + ([mask_key] if mask_key else [])):
        return None
    n_days = len(solar_day_groups(items))
    nbytes = sum(np.dtype(source.assets[k].dtype or "float32").itemsize for k in data_keys) * n_days * gbox.shape[0] * gbox.shape[1]
    first = data_keys + [mask_key] if mask_key else list(data_keys)
    if nbytes > memory_budget:  # read the mask (or one band) now, the other bands one at a time on access
        first = [mask_key or data_keys[0]]
    driver = _driver(source)  # one per tile: the mask and every band share its warp maps
    ds = _read_stack(items, source, first, gbox, retries, threads, driver)
    raw = {k: ds[k].values for k in first if k != mask_key}
    times = [dt.datetime.fromisoformat(str(np.datetime_as_string(t, unit="s"))).replace(tzinfo=dt.timezone.utc)
             for t in ds.time.values]
    clear = None
    if mask_key:
        m = ds[mask_key].values
        nd = _nodata(items[0], mask_key)
        clear = np.asarray(source.mask.is_clear(m))  # type: ignore[union-attr]
        if nd is not None and not np.isnan(nd):
            clear &= m != nd
    ids = [[i.id for g in solar_day_groups(items) for i in g]]
    # every band already read: drop the driver (and its warp maps) before the bands are composited
    driver = driver if any(k not in raw for k in data_keys) else None
    return Observations(_BandStacks(items, source, gbox, data_keys, raw, retries, threads, driver), clear, times, ids)
