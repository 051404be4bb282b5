"""The demo world on a fine Lambert-93 grid: terrain, rivers, towns, roads, land cover, observer bias.

Everything follows the recipe in the architecture notes: fractal terrain with a ridge, a meandering river in
a carved valley, towns on flat lowland joined by roads, Corine-like land cover decided per parcel from
elevation, slope, aspect and river proximity. All randomness comes from one ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from odc.geo.geobox import GeoBox
from scipy import ndimage
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import cKDTree

from geosdm.demo._noise import fractal_noise
from geosdm.demo._presets import DemoPreset
from geosdm.grid import geobox_from_bbox

__all__ = ["World", "LANDCOVER_CLASSES", "make_world"]

#: Corine-like land-cover classes of the demo (value -> name).
LANDCOVER_CLASSES: dict[int, str] = {
    1: "urban fabric",
    2: "roads and industrial",
    3: "arable land",
    4: "vineyards and orchards",
    5: "pastures",
    6: "complex cultivation",
    7: "broad-leaved forest",
    8: "coniferous forest",
    9: "natural grassland",
    10: "moors and heathland",
    11: "inland wetlands",
    12: "water bodies",
}


@dataclass
class World:
    """Fine-grid fields of the demo world (all on ``geobox``, Lambert-93)."""

    geobox: GeoBox
    elevation: np.ndarray  # m
    slope: np.ndarray  # degrees
    aspect: np.ndarray  # degrees clockwise from north, the direction the slope faces
    landcover: np.ndarray  # uint8 class values (LANDCOVER_CLASSES)
    brightness: np.ndarray  # multiplicative reflectance modulation (~1)
    d_river: np.ndarray  # m
    d_road: np.ndarray  # m
    d_town: np.ndarray  # m
    bias: np.ndarray  # observer-bias intensity in (0, 1]
    towns: list[tuple[float, float, float]] = field(default_factory=list)  # (x, y, radius) in metres


def _distance(mask: np.ndarray, res: float) -> np.ndarray:
    return (ndimage.distance_transform_edt(~mask) * res).astype(np.float32)


def _rasterize_polyline(points: np.ndarray, gbox: GeoBox, mask: np.ndarray) -> None:
    """Burn a polyline (N x 2 array of x, y in the grid CRS) into ``mask`` (1 pixel wide)."""
    inv = ~gbox.affine
    res = abs(gbox.resolution.x)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        n = max(2, int(np.hypot(x1 - x0, y1 - y0) / (res / 2)))
        xs = np.linspace(x0, x1, n)
        ys = np.linspace(y0, y1, n)
        cols, rows = inv * (xs, ys)
        rows = np.floor(rows).astype(int)
        cols = np.floor(cols).astype(int)
        ok = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
        mask[rows[ok], cols[ok]] = True


def _wiggly(p0: np.ndarray, p1: np.ndarray, rng: np.random.Generator, depth: int = 4, amp: float = 0.12) -> np.ndarray:
    """Midpoint-displaced polyline between two points (roads that follow the land a little)."""
    pts = [p0, p1]
    for level in range(depth):
        new = [pts[0]]
        for a, b in zip(pts[:-1], pts[1:]):
            d = b - a
            normal = np.array([-d[1], d[0]])
            mid = (a + b) / 2 + normal * rng.normal(0, amp / (level + 1))
            new += [mid, b]
        pts = new
    return np.array(pts)


def make_world(preset: DemoPreset, rng: np.random.Generator) -> World:
    """Generate the fine-grid world for ``preset``."""
    x0, y0, x1, y1 = preset.bbox
    m = preset.margin
    gbox = geobox_from_bbox((x0 - m, y0 - m, x1 + m, y1 + m), crs="EPSG:2154", resolution=preset.fine_res)
    ny, nx = gbox.shape
    res = preset.fine_res
    xs = gbox.coords["x"].values.astype(np.float64)
    ys = gbox.coords["y"].values.astype(np.float64)
    u = (xs - xs[0]) / (xs[-1] - xs[0])  # 0..1 west -> east
    v = (ys - ys[-1]) / (ys[0] - ys[-1])  # 0..1 south -> north
    U, V = np.meshgrid(u, v)
    width = xs[-1] - xs[0]

    # Rivers: a meandering main river north-south, plus (large regions) an east-west tributary.
    river = np.zeros((ny, nx), dtype=bool)
    t = np.linspace(0, 1, 400)
    phase = rng.uniform(0, 2 * np.pi)
    rx = xs[0] + width * (0.45 + 0.12 * np.sin(2 * np.pi * 1.7 * t + phase) + 0.04 * np.sin(2 * np.pi * 5.3 * t))
    ry = ys[-1] + (ys[0] - ys[-1]) * t
    main = np.column_stack([rx, ry])
    _rasterize_polyline(main, gbox, river)
    if preset.name != "small":
        j = 220
        tx = np.linspace(rx[j], xs[-1], 200)
        ty = ry[j] + (ys[0] - ys[-1]) * (0.1 * np.sin(np.linspace(0, 3 * np.pi, 200)) + 0.15 * np.linspace(0, 1, 200))
        _rasterize_polyline(np.column_stack([tx, ty]), gbox, river)
    d_river = _distance(river, res)

    # Terrain: fractal noise + a ridge in the north-east + valleys carved along rivers.
    relief = min(1.0, width / 40_000.0) ** 0.6  # smaller regions get gentler relief
    elevation = 170.0 + 55.0 * relief * fractal_noise((ny, nx), 3.8, rng)
    ridge = np.exp(-(((V - (0.95 - 0.35 * U)) / 0.18) ** 2))
    elevation += 260.0 * relief * ridge * (0.6 + 0.4 * U)
    elevation += 0.012 * np.minimum(d_river, 12_000.0) - 35.0 * np.exp(-((d_river / 400.0) ** 2))
    elevation = np.maximum(elevation, 20.0).astype(np.float32)
    gy, gx = np.gradient(elevation, res)
    dzdx, dzdy = gx, -gy  # rows run south
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy))).astype(np.float32)
    aspect = (np.degrees(np.arctan2(-dzdx, -dzdy)) % 360.0).astype(np.float32)

    # Towns on flat lowland, away from the river; roads as a minimum spanning tree plus two exits.
    smooth_slope = ndimage.uniform_filter(slope, size=9)
    suit = (smooth_slope < np.percentile(smooth_slope, 40)) & (elevation < np.percentile(elevation, 60))
    suit &= d_river > 300
    edge = int(0.08 * min(ny, nx))
    suit[:edge] = suit[-edge:] = False
    suit[:, :edge] = suit[:, -edge:] = False
    cand = np.argwhere(suit)
    towns: list[tuple[float, float, float]] = []
    min_gap = 0.22 * width if preset.name != "small" else 0.4 * width
    for idx in rng.permutation(len(cand)):
        r, c = cand[idx]
        x, y = xs[c], ys[r]
        if all(np.hypot(x - tx_, y - ty_) > min_gap for tx_, ty_, _ in towns):
            radius = rng.uniform(0.012, 0.03) * width if preset.name != "small" else rng.uniform(0.04, 0.06) * width
            towns.append((float(x), float(y), float(radius)))
        if len(towns) == preset.n_towns:
            break
    roads = np.zeros((ny, nx), dtype=bool)
    pts = np.array([(tx_, ty_) for tx_, ty_, _ in towns])
    if len(pts) > 1:
        dist = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
        mst = minimum_spanning_tree(dist).tocoo()
        for a, b in zip(mst.row, mst.col):
            _rasterize_polyline(_wiggly(pts[a], pts[b], rng), gbox, roads)
    for k, (ex, ey) in enumerate([(xs[0], ys[int(ny * 0.3)]), (xs[-1], ys[int(ny * 0.7)])]):
        start = pts[k % len(pts)]
        _rasterize_polyline(_wiggly(start, np.array([ex, ey]), rng), gbox, roads)
    if res < 20:  # keep roads about 20 m wide
        roads = ndimage.binary_dilation(roads)
    d_road = _distance(roads, res)
    town_mask = np.zeros((ny, nx), dtype=bool)
    town_noise = fractal_noise((ny, nx), 2.2, rng)
    X, Y = np.meshgrid(xs, ys)
    for tx_, ty_, rad in towns:
        town_mask |= np.hypot(X - tx_, Y - ty_) < rad * (1 + 0.25 * town_noise)
    d_town = _distance(town_mask, res)

    # Land cover decided per parcel (Voronoi cells) from terrain and river proximity.
    n_parcels = max(50, int((ny * res) * (nx * res) / preset.parcel_size**2))
    seeds = np.column_stack([rng.uniform(xs[0], xs[-1], n_parcels), rng.uniform(ys[-1], ys[0], n_parcels)])
    _, parcel = cKDTree(seeds).query(np.column_stack([X.ravel(), Y.ravel()]), workers=-1)
    parcel = parcel.reshape(ny, nx)
    pu = rng.uniform(size=n_parcels)[parcel]
    pv = rng.uniform(size=n_parcels)[parcel]
    erank = (np.argsort(np.argsort(elevation.ravel())) / elevation.size).reshape(ny, nx)
    south = (aspect > 120) & (aspect < 240) & (slope > 2.5)
    flat = smooth_slope < 3.0
    lc = np.zeros((ny, nx), dtype=np.uint8)
    high = erank > 0.85
    midhigh = (erank > 0.6) & ~high
    lowflat = ~high & ~midhigh & flat
    lowslope = ~high & ~midhigh & ~flat
    lc[high] = np.where(pu < 0.55, 8, np.where(pu < 0.75, 10, np.where(slope > 10, 10, 9)))[high]
    lc[midhigh] = np.where(pu < 0.55, 7, np.where(pu < 0.7, 8, np.where(pu < 0.88, 5, 9)))[midhigh]
    lc[lowflat] = np.where(pu < 0.55, 3, np.where(pu < 0.72, 6, np.where(pu < 0.9, 5, 7)))[lowflat]
    lc[lowslope] = np.where(south & (pu < 0.4), 4, np.where(pu < 0.6, 5, np.where(pu < 0.85, 7, 6)))[lowslope]
    lc[(d_river < 250) & (smooth_slope < 4) & (pv < 0.45)] = 11
    lc[(d_town < 1.5 * 600) & (pv > 0.9) & ~town_mask] = 2
    lc[town_mask] = 1
    lc[roads] = 2
    lc[river] = 12
    lc[ndimage.binary_dilation(river) & (res < 20)] = 12

    brightness = (1.0 + 0.06 * fractal_noise((ny, nx), 2.5, rng)).astype(np.float32)
    bias = 0.02 + 0.6 * np.exp(-d_road / 400.0) + 1.0 * np.exp(-d_town / 800.0)
    bias = (bias / bias.max()).astype(np.float32)
    return World(gbox, elevation, slope, aspect, lc, brightness, d_river, d_road, d_town, bias, towns)
