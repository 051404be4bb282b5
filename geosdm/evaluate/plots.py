"""Figures of an evaluation: reliability diagrams, per-species metric plots and metric tables (matplotlib, Agg).

Every function returns a ``matplotlib.figure.Figure`` (nothing is shown), ready for
:func:`save_figures` (PNG files + one HTML page with the tables) or for ``geosdm.report``'s sections.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import InputError

__all__ = ["metric_table_figure", "reliability_diagram", "save_figures", "species_metric_plot"]


def _figure(**kwargs: Any) -> Any:
    """A figure outside pyplot's global state (rendered by the Agg canvas when saved)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def reliability_diagram(curves: Mapping[str, pd.DataFrame] | pd.DataFrame, *, title: str = "Reliability",
                        xlabel: str = "mean predicted probability", ylabel: str = "observed frequency",
                        counts: bool = True) -> Any:
    """Reliability diagram: mean outcome against mean predicted probability per bin, with the diagonal, and the
    share of predictions per bin underneath.

    Parameters
    ----------
    curves
        One :func:`~geosdm.evaluate.reliability.reliability_curve` table, or ``{label: table}``.
    counts
        Add the histogram of predictions per bin.

    Example
    -------
    >>> fig = reliability_diagram({"raw": raw_curve, "calibrated": cal_curve})  # doctest: +SKIP
    >>> fig.savefig("reliability.png")  # doctest: +SKIP
    """
    items = {"": curves} if isinstance(curves, pd.DataFrame) else dict(curves)
    if not items:
        raise InputError("reliability_diagram needs at least one curve")
    fig = _figure(figsize=(5.0, 5.6 if counts else 4.6), layout="constrained")
    if counts:
        ax, hx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        ax, hx = fig.subplots(), None
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    for i, (label, c) in enumerate(items.items()):
        color = f"C{i}"
        ax.plot(c["mean_predicted"], c["mean_observed"], marker="o", ms=4, color=color, label=label or None)
        if hx is not None:
            width = (c["upper"] - c["lower"]).to_numpy()
            share = c["count"] / c["count"].sum()
            hx.bar(c["lower"], share, width=width, align="edge", alpha=0.45, color=color, edgecolor=color)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=ylabel, title=title)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    if hx is not None:
        hx.set(xlabel=xlabel, ylabel="share", xlim=(0, 1))
    else:
        ax.set_xlabel(xlabel)
    return fig


def species_metric_plot(table: pd.DataFrame, metric: str, *, by: str | None = "probability",
                        title: str | None = None) -> Any:
    """One dot per species (sorted) of ``metric`` from a :func:`~geosdm.evaluate.tables.species_metrics` table
    (``fold == "all"``), one series per value of ``by`` (e.g. raw vs calibrated).

    Example
    -------
    >>> species_metric_plot(evaluation.species, "roc_auc")  # doctest: +SKIP
    """
    if metric not in table.columns:
        raise InputError(f"table has no column {metric!r}; it has {list(table.columns)}")
    t = table[table["species"].ne("macro") & table["species"].ne("micro")]
    if "fold" in t.columns:
        t = t[t["fold"] == "all"]
    groups = list(t.groupby(by, sort=False)) if by and by in t.columns else [("", t)]
    order = groups[0][1].sort_values(metric)["species"].tolist()
    fig = _figure(figsize=(max(5.0, 0.16 * len(order) + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(order))
    for i, (label, g) in enumerate(groups):
        v = g.set_index("species").reindex(order)[metric]
        ax.plot(x, v.to_numpy(), "o", ms=4, color=f"C{i}", label=str(label) or None)
    ax.set_xticks(x, order, rotation=90, fontsize=6)
    ax.set(ylabel=metric, title=title or f"{metric} per species")
    if len(groups) > 1:
        ax.legend(fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def metric_table_figure(table: pd.DataFrame, *, title: str | None = None, float_format: str = "{:.3f}",
                        max_rows: int = 40) -> Any:
    """A metric table drawn as a figure (for PNG reports; HTML pages get the table itself).

    Example
    -------
    >>> metric_table_figure(summary(species_metrics(obs, prob)))  # doctest: +SKIP
    """
    t = table.head(max_rows)
    cells = [[float_format.format(v) if isinstance(v, (float, np.floating)) and np.isfinite(v) else
              ("–" if isinstance(v, (float, np.floating)) else str(v)) for v in row] for row in t.to_numpy()]
    rows = [str(i) for i in t.index]
    fig = _figure(figsize=(min(1.1 * (len(t.columns) + 1) + 1, 16), 0.28 * (len(t) + 2) + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    tab = ax.table(cellText=cells, rowLabels=rows, colLabels=[str(c) for c in t.columns], loc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def save_figures(out_dir: str | PathLike[str], figures: Mapping[str, Any],
                 tables: Mapping[str, pd.DataFrame] | None = None, *, title: str = "geosdm evaluation",
                 text: Sequence[str] = (), dpi: int = 110) -> dict[str, Path]:
    """Save figures as ``<name>.png``, tables as ``<name>.csv``, and ``index.html`` showing all of them.

    Returns ``{name: path}`` of every file written (``"index"`` for the page). Figures are closed.

    Example
    -------
    >>> save_figures("evaluation/", {"reliability": fig}, {"metrics": table})  # doctest: +SKIP
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px}"
             "table{border-collapse:collapse;font-size:.8rem}td,th{border:1px solid #ccc;padding:.2rem .4rem;"
             "text-align:right}img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(t)}</p>" for t in text]
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        written[name] = path
        parts.append(f"<h2>{html.escape(name)}</h2><img src='{html.escape(path.name)}' alt='{html.escape(name)}'>")
    for name, table in (tables or {}).items():
        path = out / f"{name}.csv"
        table.to_csv(path, index=not isinstance(table.index, pd.RangeIndex))
        written[name] = path
        parts.append(f"<h2>{html.escape(name)}</h2>" + table.to_html(
            float_format=lambda v: f"{v:.4f}", border=0, na_rep="–"))
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    written["index"] = page
    return written
