"""The demo region: deterministic, valid COGs and STAC, known truth with real biotic dependence."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from geosdm.demo import COLLECTIONS, DemoLayout, generate


def _checksums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(demo_small: DemoLayout, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = generate(tmp_path / "again", preset="small", seed=0)
    a, b = _checksums(demo_small.root), _checksums(again.root)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, f"files differ between identical runs: {differing[:5]}"


def test_other_seed_differs(tmp_path: Path, demo_small: DemoLayout) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = generate(tmp_path / "other", preset="small", seed=1)
    assert (other.root / "records/presence_only.csv").read_bytes() != demo_small.presence_only_csv.read_bytes()


def test_all_cogs_valid(demo_small: DemoLayout) -> None:
    from rio_cogeo.cogeo import cog_validate

    cogs = sorted(demo_small.cogs.rglob("*.tif"))
    assert len(cogs) > 150
    bad = [(str(p), errs) for p in cogs for ok, errs, _ in [cog_validate(str(p), quiet=True)] if not ok]
    assert not bad, bad[:3]


def test_sentinel2_in_two_utm_zones_with_offset(demo_small: DemoLayout) -> None:
    ic = json.loads(demo_small.item_collection("sentinel-2-l2a").read_text())
    feats = ic["features"]
    assert len({f["properties"]["datetime"] for f in feats}) >= 12
    codes = {f["properties"]["proj:code"] for f in feats}
    assert codes == {"EPSG:32630", "EPSG:32631"}
    band = feats[0]["assets"]["B04"]["raster:bands"][0]
    assert band["offset"] == -0.1 and band["scale"] == 0.0001 and band["nodata"] == 0
    assert {"B02", "B03", "B04", "B08", "B11", "B12", "SCL"} <= set(feats[0]["assets"])
    clouds = [f["properties"]["eo:cloud_cover"] for f in feats]
    assert min(clouds) == 0 and max(clouds) > 95
    # SCL has clouds, shadows; snow appears in winter somewhere
    codes_seen: set[int] = set()
    for f in feats:
        with rasterio.open(demo_small.root / f["assets"]["SCL"]["href"]) as src:
            codes_seen |= set(np.unique(src.read(1)).tolist())
    assert {3, 8, 9, 11} <= codes_seen


def test_clear_pixels_match_truth_reflectance(demo_small: DemoLayout) -> None:
    """DN -> reflectance with the baseline-04.00 offset reproduces the known surface on a clear date."""
    region = demo_small.region()
    truth = xr.open_zarr(demo_small.truth_zarr)
    ic = json.loads(demo_small.item_collection("sentinel-2-l2a").read_text())
    clear = [f for f in ic["features"] if f["properties"]["eo:cloud_cover"] == 0][0]
    with rasterio.open(demo_small.root / clear["assets"]["B08"]["href"]) as src:
        dn = src.read(1).astype(float)
    refl = dn[dn > 0] * 1e-4 - 0.1
    assert 0.1 < np.median(refl) < 0.5
    assert region["n_species"] >= 40
    assert np.isfinite(truth["s2_B08_mam"].values).all()


def test_stac_items_valid_against_core_schema(demo_small: DemoLayout) -> None:
    """Every Item validates against the STAC core Item schema bundled with pystac (offline)."""
    import jsonschema
    import pystac
    from referencing import Registry, Resource

    from pystac.validation.local_validator import get_local_schema_cache

    cache = get_local_schema_cache()  # the core schemas bundled with pystac, keyed by their URIs
    registry = Registry().with_resources((uri, Resource.from_contents(doc)) for uri, doc in cache.items())
    item_schema = next(doc for uri, doc in cache.items() if uri.endswith("item-spec/json-schema/item.json"))
    validator = jsonschema.Draft7Validator(item_schema, registry=registry)
    n = 0
    for coll in COLLECTIONS:
        for f in json.loads(demo_small.item_collection(coll).read_text())["features"]:
            errors = list(validator.iter_errors(f))
            assert not errors, (f["id"], errors[0].message)
            assert "https://stac-extensions.github.io/projection/v2.0.0/schema.json" in f["stac_extensions"]
            n += 1
    assert n >= 30
    cat = pystac.Catalog.from_file(str(demo_small.catalog_json))
    assert {c.id for c in cat.get_children()} == set(COLLECTIONS)
    assert sum(1 for _ in cat.get_items(recursive=True)) == n


def test_truth_has_biotic_dependence(demo_small: DemoLayout) -> None:
    truth = xr.open_zarr(demo_small.truth_zarr).load()
    prob = truth["probability"]
    names = list(truth["species"].values)
    roles = pd.read_csv(demo_small.nodes_csv).set_index("species")["role"]
    assert set(roles) == {"plant", "pest", "enemy"} and len(names) >= 40
    edges = pd.read_csv(demo_small.edges_csv)
    assert set(edges["interaction"]) <= {"herbivory", "parasitism", "predation"}
    gaps = []
    for e in range(truth.sizes["edge"]):
        s, t = str(truth["edge_source"][e].values), str(truth["edge_target"][e].values)
        joint = truth["joint"][e].values
        indep = prob.sel(species=s).values * prob.sel(species=t).values
        assert np.all(joint <= np.minimum(prob.sel(species=s).values, prob.sel(species=t).values) + 1e-6)
        gaps.append(float(np.mean(joint - indep)))
    assert min(gaps) > 0, "a consumer needs its resource, so joint > product of marginals"
    prev = prob.mean(("y", "x")).values
    assert prev.min() > 0.003 and prev.max() < 0.6


def test_records_carry_known_bias_and_detection(demo_small: DemoLayout) -> None:
    from pyproj import Transformer

    truth = xr.open_zarr(demo_small.truth_zarr).load()
    po = pd.read_csv(demo_small.presence_only_csv)
    assert {"species", "decimalLongitude", "decimalLatitude", "eventDate"} <= set(po.columns)
    x, y = Transformer.from_crs(4326, 2154, always_xy=True).transform(po.decimalLongitude, po.decimalLatitude)
    b = truth["bias"].sel(x=xr.DataArray(x), y=xr.DataArray(y), method="nearest").values
    assert b.mean() > 1.5 * float(truth["bias"].mean()), "presence-only records lean towards roads and towns"
    surveys = pd.read_parquet(demo_small.surveys_parquet)
    assert {"presence_absence", "count"} == set(surveys["kind"])
    assert surveys["plot_area_m2"].nunique() == 1 and surveys["plot_id"].nunique() >= 100
    pa = surveys[surveys.kind == "presence_absence"]
    occ = truth["occurrence"].sel(x=xr.DataArray(pa.x.values), y=xr.DataArray(pa.y.values), species=xr.DataArray(pa.species.values))
    occ = occ.values.astype(bool)
    detected = pa.value.values > 0
    assert not np.any(detected & ~occ), "no false positives"
    assert 0.4 < detected[occ].mean() < 0.97, "imperfect detection"


def test_demo_cogs_read_over_vsicurl_and_vsis3(demo_small: DemoLayout, demo_small_served) -> None:  # type: ignore[no-untyped-def]
    """GDAL reads the same demo COG from the range HTTP server and from the S3 server."""
    rel = next(f["assets"]["B04"]["href"] for f in json.loads(demo_small.item_collection("sentinel-2-l2a").read_text())["features"])
    with rasterio.open(demo_small.root / rel) as src:
        local = src.read(1, window=((10, 60), (20, 90)))
    with rasterio.open(f"/vsicurl/{demo_small_served.http_href(rel)}") as src:
        assert src.overviews(1), "a COG carries overviews"
        np.testing.assert_array_equal(src.read(1, window=((10, 60), (20, 90))), local)
    with demo_small_served.gdal_env(), rasterio.open(f"/vsis3/{demo_small_served.bucket}/{rel}") as src:
        np.testing.assert_array_equal(src.read(1, window=((10, 60), (20, 90))), local)


def test_demo_stac_api_search_by_bbox_date_cloud(demo_small: DemoLayout, demo_small_served) -> None:  # type: ignore[no-untyped-def]
    from pystac_client import Client

    from geosdm.stac import cloud_cover_search_kwargs, filter_items

    client = Client.open(demo_small_served.stac_url)
    region = demo_small.region()
    summer = list(client.search(collections=["sentinel-2-l2a"], bbox=region["bbox_lonlat"], datetime="2024-06-01/2024-08-31").items())
    assert len(summer) == 6 and {i.properties["proj:code"] for i in summer} == {"EPSG:32630", "EPSG:32631"}
    cloudy = region["fully_cloudy_s2_date"][:10]
    allyear = client.search(collections=["sentinel-2-l2a"], datetime="2024-01-01/2024-12-31", **cloud_cover_search_kwargs(client, 50))
    kept = filter_items(allyear.items(), max_cloud=50)
    assert kept and all(i.properties["eo:cloud_cover"] <= 50 for i in kept)
    assert cloudy not in {i.datetime.date().isoformat() for i in kept}
    west = list(client.search(collections=["sentinel-2-l2a"], bbox=[-0.2, 46.0, -0.05, 46.5]).items())
    assert west and all(i.properties["s2:mgrs_tile"] == "30TYT" for i in west)


def test_true_model_reproduces_the_truth_and_its_drivers(demo_small: DemoLayout) -> None:
    from geosdm.demo import TrueModel
    from geosdm.explain import permutation_importance

    truth = xr.open_zarr(demo_small.truth_zarr)
    region = json.loads(demo_small.region_json.read_text())
    pool = region["driver_pool"]
    assert set(pool["dropped"]).isdisjoint(pool["selected"]) and pool["threshold"] == 0.7
    covariates = [str(v) for v, a in truth.data_vars.items() if a.dims == ("y", "x") and v != "bias"]
    cells = truth[covariates].isel(y=slice(0, 100, 3), x=slice(0, 100, 3)).load()
    X = pd.DataFrame({v: cells[v].values.ravel() for v in covariates})
    model = TrueModel.from_layout(demo_small, covariates=covariates)
    expected = truth["probability"].isel(y=slice(0, 100, 3), x=slice(0, 100, 3)).load()
    got = model.predict_proba(X)
    want = np.stack([expected.sel(species=s).values.ravel() for s in model.species_], axis=-1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    from geosdm.predict.model import model_probability

    cell = model.area_unit_m2_  # probabilities per truth cell; over two cells the cloglog link's 1 - (1 - p)^2
    assert cell == pytest.approx(60.0**2)
    np.testing.assert_allclose(model_probability(model, X), got, atol=1e-5)
    np.testing.assert_allclose(model_probability(model, X, area=2 * cell), 1 - (1 - got) ** 2, atol=1e-5)
    species = json.loads(demo_small.species_json.read_text())
    drivers = {d["variable"] for s in species for d in s["drivers"]}
    assert drivers <= set(pool["selected"]), "drivers come from the decorrelated pool"
    imp = permutation_importance(model, X, n_repeats=2, seed=0)["importance_mean"]
    plant = next(s for s in species if s["role"] == "plant")
    own = {d["variable"] for d in plant["drivers"]}
    row = imp.sel(species=plant["name"]).to_series()
    assert (row[list(own)] > 1e-6).all() and (row.drop(list(own)).abs() < 1e-9).all()
    pest = next(s for s in species if s["role"] == "pest")
    host_drivers = {d["variable"] for s in species if s["name"] in pest["partners"] for d in s["drivers"]}
    assert (imp.sel(species=pest["name"]).to_series()[list(host_drivers)] > 1e-6).all(), "pests follow their hosts"
    with pytest.raises(Exception, match="true drivers"):
        model.predict_proba(X.drop(columns=sorted(drivers)[:1]))
