"""geosdm.services: real STAC API (rustac), range HTTP and S3 (moto) servers on 127.0.0.1; no mocks.

Searches run against ``tiny_served_demo`` (the tiny folder from tests/fixtures/services.py, whose items are
known); ``served_demo`` and its parts may serve another folder when ``services_root`` is overridden.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from urllib.request import ProxyHandler, Request, build_opener

import numpy as np
import psutil
import pytest
import rasterio
import xarray as xr
from pystac_client import Client

from geosdm.errors import DataSourceError, InputError, ServiceError
from geosdm.stac import cloud_cover_search_kwargs, filter_items
from geosdm.services import (
    HttpServer,
    S3Server,
    ServedDemo,
    StacApiServer,
    gdal_s3_env,
    absolutize_hrefs,
    s3_client,
    serve_demo,
    write_served_stac,
)
from tests.fixtures.services import LANDSAT, S2, TinyStacDemo

TCJ_0601, TCJ_0715, TEJ_0620, LC_0610 = (
    "S2_T31TCJ_20240601",
    "S2_T31TCJ_20240715",
    "S2_T31TEJ_20240620",
    "LC09_199029_20240610",
)
_HTTP = build_opener(ProxyHandler({}))


def _port_open(url: str) -> bool:
    host, port = url.split("://", 1)[1].split("/", 1)[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _local_pixels(demo: TinyStacDemo, item_id: str) -> np.ndarray:
    with rasterio.open(demo.root / demo.items[item_id].href) as src:
        return src.read(1)


# --- href rewriting (pure) -------------------------------------------------------------------------------------


def test_rewrite_hrefs_makes_relative_hrefs_absolute():
    item = {
        "type": "Feature",
        "id": "a",
        "assets": {"B04": {"href": "cogs/s2/a/B04.tif"}, "ext": {"href": "https://example.com/x.tif"}},
        "links": [{"rel": "self", "href": "../a.json"}, {"rel": "license", "href": "LICENSE.txt"}],
    }
    out = absolutize_hrefs(item, "http://127.0.0.1:8000/")
    assert out["assets"]["B04"]["href"] == "http://127.0.0.1:8000/cogs/s2/a/B04.tif"
    assert out["assets"]["ext"]["href"] == "https://example.com/x.tif"
    assert out["links"] == [{"rel": "license", "href": "http://127.0.0.1:8000/LICENSE.txt"}]
    assert item["assets"]["B04"]["href"] == "cogs/s2/a/B04.tif"  # input untouched
    assert absolutize_hrefs(item, "s3://bucket/prefix")["assets"]["B04"]["href"] == "s3://bucket/prefix/cogs/s2/a/B04.tif"


def test_rewrite_hrefs_collection_relative_to_its_folder_and_item_collections():
    coll = {"type": "Collection", "id": "s2", "assets": {"thumb": {"href": "../../cogs/s2/thumb.png"}}, "links": []}
    out = absolutize_hrefs(coll, "s3://b", relative_to="stac/s2")
    assert out["assets"]["thumb"]["href"] == "s3://b/cogs/s2/thumb.png"
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "assets": {"a": {"href": "./x y.tif"}}}]}
    assert absolutize_hrefs(fc, "http://h:1")["features"][0]["assets"]["a"]["href"] == "http://h:1/x%20y.tif"
    with pytest.raises(InputError, match="outside the served root"):
        absolutize_hrefs({"type": "Feature", "assets": {"a": {"href": "../../etc/passwd"}}}, "http://h:1")


def test_write_served_stac_writes_copies_and_leaves_the_demo_alone(tiny_stac_demo, tmp_path):
    before = {p: p.read_bytes() for p in tiny_stac_demo.root.rglob("*.json")}
    files = write_served_stac(tiny_stac_demo.root, tmp_path, "s3://bkt")
    assert {p.relative_to(tmp_path).as_posix() for p in files} == {
        f"{kind}/{c}.json" for kind in ("collections", "item-collections") for c in (S2, LANDSAT)
    }
    features = json.loads((tmp_path / "item-collections" / f"{S2}.json").read_text())["features"]
    assert {f["assets"]["B04"]["href"] for f in features} == {
        f"s3://bkt/{tiny_stac_demo.items[f['id']].href}" for f in features
    }
    assert {p: p.read_bytes() for p in tiny_stac_demo.root.rglob("*.json")} == before


# --- STAC API searches --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tiny_served_demo: ServedDemo) -> Client:
    return Client.open(tiny_served_demo.stac_url)


def _ids(client: Client, **kwargs) -> set[str]:
    return {item.id for item in client.search(**kwargs).items()}


def test_search_by_collections(client, tiny_stac_demo):
    assert {c.id for c in client.get_collections()} == {S2, LANDSAT}
    assert _ids(client, collections=[S2]) == tiny_stac_demo.ids(S2) == {TCJ_0601, TCJ_0715, TEJ_0620}
    assert _ids(client, collections=[LANDSAT]) == {LC_0610}
    assert _ids(client) == set(tiny_stac_demo.items)


def test_search_by_bbox_and_datetime(client, tiny_stac_demo):
    tcj = tiny_stac_demo.items[TCJ_0601].bbox
    assert _ids(client, bbox=tcj, collections=[S2]) == {TCJ_0601, TCJ_0715}
    assert _ids(client, bbox=tcj) == {TCJ_0601, TCJ_0715, LC_0610}
    assert _ids(client, bbox=tiny_stac_demo.items[TEJ_0620].bbox) == {TEJ_0620}
    june = "2024-06-01/2024-06-30"
    assert _ids(client, datetime=june, collections=[S2]) == {TCJ_0601, TEJ_0620}
    assert _ids(client, bbox=tcj, datetime=june, collections=[S2, LANDSAT]) == {TCJ_0601, LC_0610}


def test_search_with_cloud_cover_limit(client):
    kwargs = cloud_cover_search_kwargs(client, 20)
    assert kwargs == {}  # rustac's memory backend has neither Query nor Filter: filter client-side
    items = filter_items(client.search(collections=[S2], **kwargs).items(), max_cloud=20)
    assert {i.id for i in items} == {TCJ_0601, TEJ_0620}
    june = client.search(collections=[S2, LANDSAT], datetime="2024-06", **cloud_cover_search_kwargs(client, 30))
    assert {i.id for i in filter_items(june.items(), max_cloud=30)} == {TCJ_0601, TEJ_0620, LC_0610}


def test_search_pages_through_all_items(client, tiny_stac_demo):
    search = client.search(limit=1)
    assert sorted(i.id for i in search.items()) == sorted(tiny_stac_demo.items)
    assert len(list(search.pages())) == len(tiny_stac_demo.items)


def test_rustac_memory_backend_lacks_query_and_filter(client):
    """Documents the pitfall the cloud-cover helpers avoid; fails (good news) once rustac implements them."""
    assert not client.conforms_to("QUERY") and not client.conforms_to("FILTER")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _ids(client, collections=[S2], query={"eo:cloud_cover": {"lt": 20}}) == set()


@pytest.mark.parametrize(
    ("conformance", "expected"),
    [
        ("https://api.stacspec.org/v1.0.0/item-search#query", {"query": {"eo:cloud_cover": {"lte": 20.0}}}),
        (
            "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
            {"filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]}, "filter_lang": "cql2-json"},
        ),
    ],
)
def test_cloud_cover_kwargs_for_apis_with_extensions(conformance, expected):
    landing = {"type": "Catalog", "id": "x", "description": "d", "stac_version": "1.1.0", "links": []}
    api = Client.from_dict({**landing, "conformsTo": ["https://api.stacspec.org/v1.0.0/item-search", conformance]})
    assert cloud_cover_search_kwargs(api, 20) == expected
    with pytest.raises(InputError, match="percentage"):
        cloud_cover_search_kwargs(api, 120)


def test_served_items_point_at_the_http_server(client, tiny_served_demo, tiny_stac_demo):
    item = next(client.search(ids=[TCJ_0601], collections=[S2]).items())
    assert item.assets["B04"].href == tiny_served_demo.http_href(tiny_stac_demo.items[TCJ_0601].href)
    assert item.properties["proj:code"] == "EPSG:32631" and item.properties["eo:cloud_cover"] == 5.0
    with rasterio.open(item.assets["B04"].href) as src:  # a plain http:// href also goes through /vsicurl/
        np.testing.assert_array_equal(src.read(1), _local_pixels(tiny_stac_demo, TCJ_0601))


# --- HTTP server --------------------------------------------------------------------------------------------------


def test_gdal_reads_cog_through_vsicurl(tiny_served_demo, tiny_stac_demo):
    href = tiny_stac_demo.items[LC_0610].href
    with rasterio.open(f"/vsicurl/{tiny_served_demo.http_href(href)}") as src:
        assert src.crs.to_epsg() == 32631
        window = rasterio.windows.Window(0, 0, 32, 32)
        np.testing.assert_array_equal(src.read(1, window=window), _local_pixels(tiny_stac_demo, LC_0610)[:32, :32])


def test_range_requests(tiny_served_demo, tiny_stac_demo):
    href = tiny_stac_demo.items[TCJ_0601].href
    url = tiny_served_demo.http_href(href)
    data = (tiny_stac_demo.root / href).read_bytes()
    for header, body, status in [
        ("bytes=0-99", data[:100], 206),
        ("bytes=0-0", data[:1], 206),
        ("bytes=100-", data[100:], 206),
        (None, data, 200),
    ]:
        request = Request(url, headers={"Range": header} if header else {})
        with _HTTP.open(request, timeout=5) as resp:
            assert resp.status == status
            assert resp.read() == body
            assert resp.headers["Accept-Ranges"] == "bytes"
            if status == 206:
                assert resp.headers["Content-Range"].endswith(f"/{len(data)}")


# --- S3 server ----------------------------------------------------------------------------------------------------


def test_bucket_holds_a_copy_of_the_demo(tiny_served_demo, tiny_stac_demo):
    client = s3_client(tiny_served_demo.s3_endpoint)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=tiny_served_demo.bucket)["Contents"]}
    files = {p.relative_to(tiny_stac_demo.root).as_posix() for p in tiny_stac_demo.root.rglob("*") if p.is_file()}
    assert keys >= files


def test_gdal_reads_cog_through_vsis3(tiny_served_demo, tiny_stac_demo):
    href = tiny_stac_demo.items[TEJ_0620].href
    with tiny_served_demo.gdal_env():
        with rasterio.open(f"/vsis3/{tiny_served_demo.bucket}/{href}") as src:
            pixels = src.read(1)
        with rasterio.open(tiny_served_demo.s3_href(href)) as src:  # s3:// URLs map to /vsis3/
            assert src.shape == pixels.shape
    np.testing.assert_array_equal(pixels, _local_pixels(tiny_stac_demo, TEJ_0620))


def test_gdal_s3_env_restores_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_PROFILE", "someone")
    monkeypatch.delenv("AWS_S3_ENDPOINT", raising=False)
    with gdal_s3_env("http://127.0.0.1:9") as env:
        assert os.environ["AWS_S3_ENDPOINT"] == env["AWS_S3_ENDPOINT"] == "127.0.0.1:9"
        assert os.environ["AWS_HTTPS"] == "NO" and os.environ["AWS_VIRTUAL_HOSTING"] == "FALSE"
        assert "AWS_PROFILE" not in os.environ
    assert os.environ["AWS_REGION"] == "eu-west-3" and os.environ["AWS_PROFILE"] == "someone"
    assert "AWS_S3_ENDPOINT" not in os.environ
    with pytest.raises(InputError, match="host:port"):
        with gdal_s3_env("127.0.0.1"):
            pass


def test_zarr_round_trip_on_s3(tiny_served_demo):
    ds = xr.Dataset(
        {"elevation": (("y", "x"), np.arange(12, dtype="float32").reshape(3, 4), {"units": "m"})},
        coords={"y": [2.5, 1.5, 0.5], "x": [0.5, 1.5, 2.5, 3.5]},
    )
    url = f"s3://{tiny_served_demo.bucket}/tests/round-trip.zarr"
    ds.to_zarr(url, mode="w", storage_options=tiny_served_demo.storage_options, consolidated=False)
    back = xr.open_zarr(url, storage_options=tiny_served_demo.storage_options, consolidated=False)
    xr.testing.assert_identical(back.load(), ds)


# --- fixtures, life cycle, failures, CLI --------------------------------------------------------------------------


def test_fixtures_expose_the_parts_of_served_demo(served_demo, stac_api, http_server, s3_server):
    assert stac_api.url == served_demo.stac_url and stac_api.running
    assert http_server.url == served_demo.http_url and http_server.running
    assert s3_server.endpoint_url == served_demo.s3_endpoint and s3_server.running
    assert s3_server.storage_options == served_demo.storage_options
    assert all(_port_open(u) for u in (served_demo.stac_url, served_demo.http_url, served_demo.s3_endpoint))


def test_services_stop_cleanly(tiny_stac_demo):
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    with serve_demo(tiny_stac_demo.root, bucket="geosdm-life", upload=False) as served:
        pids = {served.stac.pid, served.http.pid, served.s3.pid}
        urls = (served.stac_url, served.http_url, served.s3_endpoint)
        assert pids <= {p.pid for p in me.children(recursive=True)}
        assert all(_port_open(u) for u in urls)
        work = served.stac_dir.parent
        served.check_alive()
        psutil.Process(served.s3.pid).kill()  # a service dying under us is reported, with its log
        psutil.Process(served.s3.pid).wait(5)
        with pytest.raises(ServiceError, match=r"(?s)stopped unexpectedly: \['S3Server'\].*s3\.log"):
            served.check_alive()
    assert not any(_port_open(u) for u in urls)
    assert not any(psutil.pid_exists(pid) for pid in pids)  # terminated and reaped (no zombies)
    assert {p.pid for p in me.children(recursive=True)} <= before
    assert not work.exists()  # temporary run folder removed
    with pytest.raises(ServiceError, match="not running"):
        served.stac.url


def test_start_failures_raise_with_the_fix(tmp_path, tiny_stac_demo):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ServiceError, match=r"(?s)rustac serve.*exited.*rustac validate.*log"):
        StacApiServer([bad]).start()
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    with pytest.raises(DataSourceError, match="no such file"):
        StacApiServer([tmp_path / "missing.json"]).start()
    with pytest.raises(DataSourceError, match="not a folder"):
        HttpServer(tmp_path / "missing").start()
    with pytest.raises(DataSourceError, match="no ItemCollections"):
        with serve_demo(tmp_path):
            pass
    with pytest.raises(ServiceError, match="not running"):
        S3Server().endpoint_url


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """Queue fed with the stdout lines of ``proc`` by a daemon thread ("" at EOF)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str], pattern: str, *, timeout: float) -> str:
    """Lines up to the first one containing ``pattern``, waiting at most ``timeout`` seconds."""
    deadline, seen = time.monotonic() + timeout, []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if not line or pattern in line:
            break
    out = "".join(seen)
    assert pattern in out, f"no line with {pattern!r} within {timeout} s; got:\n{out}"
    return out


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # orphans are reaped by PID 1, maybe later
    except psutil.NoSuchProcess:
        return True


def test_children_die_with_a_killed_parent(tiny_stac_demo):
    script = textwrap.dedent(
        f"""
        import time
        from geosdm.services import HttpServer
        server = HttpServer({str(tiny_stac_demo.root)!r}).start()
        print("READY", server.log_path.parent, server.pid, server.port, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        run_dir, child_pid, port = _read_until(_lines(parent), "READY", timeout=30).split()[-3:]
        assert not _gone(int(child_pid))
    finally:
        parent.kill()  # no clean-up code runs in the parent
        parent.wait()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 5  # an exiting process looks like a zombie before all its threads are gone
    while not (_gone(int(child_pid)) and not _port_open(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(int(child_pid))
    assert not _port_open(url)
    assert not Path(run_dir).exists()  # the orphaned child removed its temporary folder


def test_cli_serve_stops_children_on_ctrl_c(tiny_stac_demo):
    cmd = [sys.executable, "-c", "from geosdm.cli import app; app()", "serve", str(tiny_stac_demo.root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _lines(proc)
        out = _read_until(lines, "Ctrl-C", timeout=60)
        stac_url = re.search(r"STAC API\s*│\s*(http://127\.0\.0\.1:\d+)", out)
        assert stac_url, out
        with _HTTP.open(f"{stac_url.group(1)}/collections", timeout=5) as resp:
            assert {c["id"] for c in json.load(resp)["collections"]} == {S2, LANDSAT}
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3
        proc.send_signal(signal.SIGINT)
        _read_until(lines, "Stopped all services", timeout=20)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert not _port_open(stac_url.group(1))


def test_serve_demo_with_s3_asset_hrefs(tiny_stac_demo, tmp_path):
    with serve_demo(tiny_stac_demo.root, bucket="geosdm-s3hrefs", asset_hrefs="s3", workdir=tmp_path) as served:
        item = next(Client.open(served.stac_url).search(collections=[LANDSAT]).items())
        assert item.assets["red"].href == f"s3://geosdm-s3hrefs/{tiny_stac_demo.items[LC_0610].href}"
        with served.gdal_env(), rasterio.open(item.assets["red"].href) as src:
            np.testing.assert_array_equal(src.read(1), _local_pixels(tiny_stac_demo, LC_0610))
    assert (tmp_path / "rustac.log").exists() and (tmp_path / "stac-s3" / "item-collections").is_dir()
