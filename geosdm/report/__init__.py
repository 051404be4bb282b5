"""A self-contained HTML report: maps, plots and tables of a run, in one file that opens offline.

Typical use::

    from geosdm.report import Section, layer_map, write_report
    fig = layer_map(open_predictions("probability.zarr").probability.sel(species="plant_01"))
    write_report("report.html", "Demo run", [Section("Predictions", figures=[fig])])

Figures are matplotlib ``Figure`` objects (embedded as PNG), tables pandas DataFrames. Each stage's plots
(:mod:`geosdm.evaluate`, :mod:`geosdm.explain`, :mod:`geosdm.interactions`) return figures that go in here.
"""

from __future__ import annotations

from geosdm.report.html import Section, render_html, write_report
from geosdm.report.maps import binary_map, layer_map, layer_maps
from geosdm.report.odmap import odmap_table, write_odmap
from geosdm.report.sections import binary_section, binary_thresholds, mess_section, odmap_section

__all__ = ["Section", "binary_map", "binary_section", "binary_thresholds", "layer_map", "layer_maps", "mess_section",
           "odmap_section", "odmap_table", "render_html", "write_odmap", "write_report"]
