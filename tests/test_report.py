"""The HTML report: sections with figures (Figures and PNG files), tables, and quick-look maps of lazy layers."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geosdm.errors import InputError
from geosdm.report import Section, layer_map, layer_maps, render_html, write_report


def _layers() -> xr.DataArray:
    data = da.from_array(np.linspace(0, 1, 3 * 900 * 1200, dtype=np.float32).reshape(3, 900, 1200), chunks=(3, 300, 300))
    return xr.DataArray(data, dims=("species", "y", "x"), name="probability",
                        coords={"species": ["a", "b", "c"], "y": np.arange(900)[::-1] * 10.0, "x": np.arange(1200) * 10.0})


def test_layer_map_coarsens_lazily_and_plots() -> None:
    layers = _layers()
    fig = layer_map(layers.sel(species="b"), max_pixels=200)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (150, 200)  # 900 x 1200 block-averaged by 6
    np.testing.assert_allclose(float(image.mean()), float(layers.sel(species="b").mean()), rtol=1e-3)
    assert [f.axes[0].get_title() for f in layer_maps(layers, ["a", "c"])] == ["a", "c"]
    with pytest.raises(InputError, match="Select one layer"):
        layer_map(layers)


def test_report_embeds_figures_files_and_tables(tmp_path: Path) -> None:
    png = tmp_path / "curve.png"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(png)
    table = pd.DataFrame({"auc": [0.81234, 0.7]}, index=["plant_01", "pest_01"])
    sections = [Section("Maps", text=["<b>escaped</b>"], figures=[layer_map(_layers().sel(species="a")), png],
                        captions=["map", "file"], tables=[table], table_titles=["metrics"])]
    out = write_report(tmp_path / "r" / "report.html", "Run <1>", sections)
    text = out.read_text()
    assert "Run &lt;1&gt;" in text and "&lt;b&gt;escaped&lt;/b&gt;" in text and "0.812" in text
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 2 and base64.b64decode(images[1]) == png.read_bytes()
    assert not [p for p in out.parent.iterdir() if p.name != "report.html"]  # no temporary left behind
    assert render_html("x", []).count("<h2>") == 0
    with pytest.raises(InputError, match="at least one Section"):
        write_report(tmp_path / "empty.html", "x", [])


def test_layer_map_colours_span_the_map_and_mark_no_data() -> None:
    rare = (_layers().sel(species="a") * 0.02).where(lambda v: v.x > 50)  # a rare species with a no-data strip
    fig = layer_map(rare, max_pixels=200)
    im = fig.axes[0].images[0]
    assert 0.0 == im.norm.vmin and 0.006 < im.norm.vmax < 0.0067  # its own range (max 0.02 / 3), not an empty 0-1 map
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["no data"]
    assert fig.axes[0].get_xlabel().startswith("x (km)") and any("km" in t.get_text() or " m" in t.get_text()
                                                                 for t in fig.axes[0].texts)  # scale bar
    fixed = layer_map(rare, vmin=0, vmax=1).axes[0].images[0].norm
    assert (fixed.vmin, fixed.vmax) == (0, 1)
