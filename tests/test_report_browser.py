"""The report in a real browser: Debian's headless ``chromium`` renders the report of a tiny run, every map decodes
and is drawn (not blank, not broken), and the screenshot of the page is not empty.

``.ci/run`` installs chromium where it is missing and apt works; elsewhere this module skips, saying why.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it "
                             "where apt works)")


def _chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-dev-shm-usage", "--no-first-run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _tiny_run(root: Path) -> object:
    """A tiny run's outputs (probability map with a rare species and a no-data hole, records, MESS, cube) and
    its pipeline configuration with a report step asking for binary maps."""
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    from geosdm.pipeline import PipelineConfig

    gb = GeoBox.from_bbox((466000, 6579000, 469000, 6582000), crs="EPSG:2154", resolution=60)
    coords = xr_coords(gb, crs_coord_name="spatial_ref")
    yy, xx = np.meshgrid(np.linspace(0, 1, gb.shape[0]), np.linspace(0, 1, gb.shape[1]), indexing="ij")
    common = np.clip(0.2 + 0.6 * xx * yy, 0, 1)
    rare = 0.02 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.05)  # never above 0.02: empty on a 0-1 scale
    prob = np.stack([common, rare]).astype("float32")
    prob[:, 10:14, 20:26] = np.nan  # a cloud gap
    xr.Dataset({"probability": (("species", "y", "x"), prob, {"long_name": "presence probability over 3600 m2",
                                                              "units": "1", "grid_mapping": "spatial_ref"})},
               coords={"species": ["common_sp", "rare_sp"], **coords}).to_zarr(root / "probability.zarr", mode="w")
    bio = 10 + 4 * xx
    lc = np.where(yy > 0.5, 0.0, yy)
    xr.Dataset({"bio01": (("y", "x"), bio.astype("float32"), {"units": "degC", "grid_mapping": "spatial_ref"}),
                **{f"lc_{k}": (("y", "x"), frac.astype("float32"), {"units": "1", "categorical": "fraction",
                                                                    "source": "lc", "grid_mapping": "spatial_ref"})
                   for k, frac in ((1, lc), (2, 1 - lc))}},
               coords=coords).to_zarr(root / "cube.zarr", mode="w")
    # bio01 outside its training range at the east and west edges; the class fractions at their floor (0) pin
    # the plain MESS to <= 0 everywhere, which the report leaves out to keep the map readable
    sim = np.stack([100 * (1.2 - 2 * np.abs(xx - 0.5)) - 20, np.zeros_like(xx), np.zeros_like(xx)]).astype("float32")
    xr.Dataset({"mess": (("y", "x"), sim.min(axis=0), {"grid_mapping": "spatial_ref"}),
                "similarity": (("variable", "y", "x"), sim, {"grid_mapping": "spatial_ref"})},
               coords={"variable": ["bio01", "lc_1", "lc_2"], **coords}).to_zarr(root / "explain" / "mess.zarr", mode="w")
    rng = np.random.default_rng(0)
    rows = []
    xs, ys = np.asarray(coords["x"].values), np.asarray(coords["y"].values)
    for sp, layer in (("common_sp", common), ("rare_sp", rare)):
        for _ in range(120):
            i, j = rng.integers(0, gb.shape[0]), rng.integers(0, gb.shape[1])
            seen = float(rng.random() < layer[i, j] / layer.max())
            rows.append({"species": sp, "x": xs[j], "y": ys[i], "crs": "EPSG:2154", "kind": "presence_absence",
                         "value": seen})
    for _ in range(200):
        i, j = rng.integers(0, gb.shape[0]), rng.integers(0, gb.shape[1])
        rows.append({"species": None, "x": xs[j], "y": ys[i], "crs": "EPSG:2154", "kind": "background", "value": 0.0})
    pd.DataFrame(rows).to_parquet(root / "training.parquet")
    return PipelineConfig.model_validate({
        "name": "tiny",
        "records": {"inputs": [], "output": str(root / "training.parquet")},
        "predict": {"model": str(root / "model"), "cube": str(root / "cube.zarr"), "output": str(root)},
        "explain": {"model": str(root / "model"), "cube": str(root / "cube.zarr"),
                    "table": str(root / "training.parquet"), "output": str(root / "explain")},
        "report": {"output": str(root / "report" / "report.html"), "title": "tiny run", "n_maps": 2,
                   "binary": {"rule": "max_tss"}},
    })


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geosdm.pipeline import _run_report

    root = tmp_path_factory.mktemp("tiny-run")
    config = _tiny_run(root)
    return Path(_run_report(config, ["[tiny] a log line"], lambda *a: None))  # type: ignore[arg-type]


def _image(png: bytes) -> np.ndarray:
    import io

    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(png), format="png")


def test_every_map_decodes_and_is_drawn(report: Path) -> None:
    text = report.read_text()
    images = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    # 2 probability maps, 2 binary maps, the MESS map
    assert len(images) >= 5
    for alt, data in images:
        img = _image(base64.b64decode(data))
        assert img.ndim == 3 and min(img.shape[:2]) > 100, alt
        grey = img[..., :3].mean(axis=2)
        assert float(grey.std()) > 0.05, f"figure {alt!r} is blank"
        h, w = grey.shape
        inside = grey[int(0.25 * h): int(0.65 * h), int(0.2 * w): int(0.55 * w)]  # the map's interior
        assert float(inside.std()) > 0.03, f"map {alt!r} is drawn in one flat colour"
    for needed in ("Binary presence maps", "max TSS", "Where the model extrapolates", "no data", "ODMAP protocol",
                   "scale bar", "colour bar", "Class fractions (2 layers) are left out"):
        assert needed in text, needed
    odmap = pd.read_csv(report.parent / "odmap.csv")
    assert list(odmap.columns) == ["section", "subsection", "element", "value"]
    assert {"Overview", "Data", "Model", "Assessment", "Prediction"} == set(odmap["section"])
    assert odmap["value"].str.startswith("not filled by the run").any()
    assert "max TSS" in odmap.set_index("element").loc["Threshold selection", "value"]


def test_chromium_draws_every_image_and_the_page(report: Path, tmp_path: Path) -> None:
    # the report plus a probe that writes, once loaded, how many images the browser could not draw
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>{const i=[...document.images];"
                   "const bad=i.filter(x=>!x.complete||x.naturalWidth===0).length;"
                   "const p=document.createElement('pre');p.id='probe';"
                   "p.textContent='images='+i.length+' broken='+bad;document.body.appendChild(p);});</script></body>"))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r"images=(\d+) broken=(\d+)", dom.stdout)
    assert found, (dom.returncode, dom.stderr[-2000:])
    assert int(found.group(1)) >= 5 and int(found.group(2)) == 0, found.group(0)

    shot = tmp_path / "report.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri())
    assert shot.is_file(), (run.returncode, run.stderr[-2000:])
    page = _image(shot.read_bytes())[..., :3].mean(axis=2)
    assert page.shape[0] >= 4000 * 0.9 and page.shape[1] >= 1000
    assert float(page.std()) > 0.05, "the screenshot is one flat colour: the page did not render"
    top = page[:1500]
    assert float((top < 0.95).mean()) > 0.05, "the first screen of the report is empty"


@pytest.mark.parametrize("rule,value", [("max_tss", None), ("sens_eq_spec", None), ("p10_training_presence", None),
                                        ("fixed_cumulative", 10.0), ("fixed", 0.3)])
def test_every_threshold_rule_names_itself_and_its_value(rule: str, value: float | None, tmp_path: Path) -> None:
    from geosdm.report.sections import RULES, binary_thresholds

    _tiny_run(tmp_path)
    prob = xr.open_zarr(tmp_path / "probability.zarr")["probability"]
    th = binary_thresholds(prob, tmp_path / "training.parquet", ["common_sp", "rare_sp"], rule=rule,  # type: ignore[arg-type]
                           value=value)
    assert (th["rule"] == RULES[rule]).all() and np.isfinite(th.loc["common_sp", "threshold"])
    if rule == "sens_eq_spec":
        assert abs(th.loc["common_sp", "sensitivity"] - th.loc["common_sp", "specificity"]) < 0.15
    if rule == "fixed":
        assert (th["threshold"] == 0.3).all()
