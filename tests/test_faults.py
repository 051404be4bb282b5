"""Faults on real loopback services: hosts that accept a connection and never answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from geosdm.errors import DataSourceError, InputError
from geosdm.sources import parse_source


@pytest.fixture()
def silent_host() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except (TimeoutError, OSError):
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def _api_source(url: str) -> Any:
    return parse_source({
        "name": "s2-silent", "collection": "sentinel-2-l2a", "url": url,
        "assets": {"B04": {"long_name": "red", "role": "reflectance", "dtype": "uint16", "nodata": 0}},
    })


def test_a_stac_api_that_never_answers_fails_the_search_with_a_message(silent_host: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from geosdm.stac import search

    monkeypatch.setenv("GEOSDM_HTTP_TIMEOUT", "1.5")
    t0 = time.perf_counter()
    with pytest.raises(DataSourceError, match="GEOSDM_HTTP_TIMEOUT") as err:
        search(_api_source(silent_host), bbox=(2, 43, 3, 44))
    assert time.perf_counter() - t0 < 30, "the search hung instead of timing out"
    assert silent_host in str(err.value)


def test_gdal_reads_get_the_same_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    from odc.loader._rio import _CFG  # where odc-stac keeps this process's GDAL options

    from geosdm.cube.build import configure_gdal
    from geosdm.stac import http_timeouts

    monkeypatch.setenv("GEOSDM_HTTP_TIMEOUT", "7")
    assert http_timeouts() == (7.0, 7.0)
    configure_gdal()
    opts = _CFG._gdal_opts
    assert opts["GDAL_HTTP_TIMEOUT"] == "7" and opts["GDAL_HTTP_CONNECTTIMEOUT"] == "7"
    assert opts["GDAL_HTTP_MAX_RETRY"] == "3"
    monkeypatch.setenv("GEOSDM_HTTP_TIMEOUT", "soon")
    with pytest.raises(InputError, match="GEOSDM_HTTP_TIMEOUT"):
        http_timeouts()
    monkeypatch.delenv("GEOSDM_HTTP_TIMEOUT")
    configure_gdal()
    assert _CFG._gdal_opts["GDAL_HTTP_TIMEOUT"] == "120"


def test_redact_keeps_names_and_drops_secrets() -> None:
    from geosdm._secrets import redact

    cfg = {"sources": [{"url": "https://user:hunter2@api.example.org/stac?token=abc123&collections=x"}],
           "note": "see https://h.example.org/a.tif?sv=2024&sig=XYZ%2F and more", "n": 3}
    out = redact(cfg)
    text = str(out)
    assert "hunter2" not in text and "abc123" not in text and "XYZ" not in text
    assert "https://user:REDACTED@api.example.org/stac?token=REDACTED&collections=REDACTED" in text
    assert out["n"] == 3 and out["note"].endswith(" and more")


def test_a_token_in_a_source_url_is_not_written_into_the_cube(demo_small, demo_small_served, tmp_path) -> None:
    """The run uses the real URL (the token reaches the API); the store keeps a redacted copy."""
    from geosdm.cube import CubeConfig, build_cube

    secret = "geosdm-fake-token-5b8e"
    region = demo_small.region()["target_grid"]
    cfg = CubeConfig.model_validate({
        "grid": {"crs": "EPSG:2154", "resolution": region["resolution"], "bbox": region["bbox"]},
        "datetime": "2024-06-01/2024-08-31",
        "sources": [{"source": "demo-sentinel-2-l2a", "url": f"{demo_small_served.stac_url}?token={secret}",
                     "working_resolution": 20}],
        "output": {"path": str(tmp_path / "cube.zarr"), "tile_shape": [64, 64]},
    })
    report = build_cube(cfg)
    assert report.n_tiles == 4 and not report.failures
    written = [p for p in (tmp_path).rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    assert "token=REDACTED" in (tmp_path / "cube.zarr" / "zarr.json").read_text()


@pytest.mark.slow  # end to end (> 10 s); make test-all and CI run it
def test_cube_build_rides_out_transient_http_faults_and_reports_what_stays_broken(demo_small, fault_server,
                                                                                 tmp_path) -> None:
    """503s and a truncated body on the demo's COGs are retried; an asset that always fails is reported."""
    import numpy as np

    from geosdm.cube import build_cube
    from geosdm.io import open_cube
    from geosdm.stac import rewrite_hrefs
    from tests.test_cube import JJA, _config, _plans_with, _s2_only

    lost = "S2B_31TBN_20240703_0_L2A"
    ref_cfg = _config(demo_small, str(tmp_path / "ref.zarr"), sources=_s2_only(demo_small), datetime=JJA)
    build_cube(ref_cfg, plans=_plans_with(demo_small, ref_cfg, lambda items: [i for i in items if i.id != lost]))
    broken = f"{lost}/B11.tif"
    server = fault_server(demo_small.root, {"B04.tif": ["503", "503"], "B08.tif": ["truncate"],
                                            "B03.tif": ["short_length"], broken: ["always_500"]})
    root = str(demo_small.root).rstrip("/") + "/"

    def over_http(items):  # type: ignore[no-untyped-def]
        return rewrite_hrefs(items, {root: server.url + "/"})

    cfg = _config(demo_small, str(tmp_path / "http.zarr"), sources=_s2_only(demo_small), datetime=JJA, retries=2)
    report = build_cube(cfg, plans=_plans_with(demo_small, cfg, over_http))
    kinds = {line.split()[0] for line in server.injected()}
    assert {"503", "truncate", "short_length", "always_500"} <= kinds, kinds
    failed = {f["item_id"] for f in report.failures.get("demo-sentinel-2-l2a", [])}
    assert failed == {lost}, report.failures  # only the Item whose asset never answers, left out whole
    got, ref = open_cube(str(tmp_path / "http.zarr")).load(), open_cube(str(tmp_path / "ref.zarr")).load()
    assert sorted(got.data_vars) == sorted(ref.data_vars)
    for v in got.data_vars:  # retried reads give the values read from disk; nothing half-written
        np.testing.assert_array_equal(got[v].values, ref[v].values, err_msg=v)
    assert report.n_tiles == len(list((tmp_path / "http.zarr.progress").glob("tile_*.json")))
