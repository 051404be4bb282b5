"""`geosdm interactions run PREDICTIONS EDGES OUTPUT` and `geosdm interactions network PATH`.

Registered as ``app.add_typer(_interactions.app, name="interactions")``; each command parses arguments, calls
one library function (:func:`geosdm.interactions.run_interactions`, :func:`geosdm.interactions.network_structure`)
and prints a summary.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from geosdm.cli._options import Dtype, json_option, print_outputs, validated

__all__ = ["app"]

app = typer.Typer(help="Interaction-likelihood maps from an ecological network and species probability cubes.",
                  no_args_is_help=True)


class Method(str, Enum):
    dependence = "dependence"
    plackett = "plackett"


def _sets(values: list[str] | None) -> dict[str, tuple[str, ...]] | None:
    if not values:
        return None
    out: dict[str, tuple[str, ...]] = {}
    for v in values:
        name, sep, labels = v.partition("=")
        if not sep or not name.strip() or not labels.strip():
            raise typer.BadParameter(f"--set {v!r}: use NAME=source->target,source->target")
        out[name.strip()] = tuple(s.strip() for s in labels.split(",") if s.strip())
    return out


def _detection(text: str) -> Any:
    if text in ("estimate", "perfect"):
        return text
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter("--detection: 'estimate', 'perfect' or a probability") from None


@app.command("run")
def run(
    predictions: str = typer.Argument(..., help="Prediction store (probability.zarr) from `geosdm predict run`."),
    edges: Path = typer.Argument(..., help="Edge list CSV/Parquet: source (resource), target (consumer), interaction."),
    output: str = typer.Argument(..., help="Output folder or s3:// prefix (interactions.zarr, cogs/, stac/)."),
    nodes: Path = typer.Option(None, "--nodes", help="Node list CSV/Parquet: species, role (plant/pest/enemy), guild."),
    surveys: list[str] = typer.Option(None, "--surveys", help="Presence/absence survey records (repeatable)."),
    method: Method = typer.Option(Method.dependence, "--method", help="Co-occurrence-aware model."),
    detection: str = typer.Option("estimate", "--detection", help="estimate | perfect | per-visit probability."),
    leakage: float = typer.Option(None, "--leakage", min=0.0, max=1.0,
                                  help="Fixed leakage for every consumer (skips fitting; 0 = strict dependence)."),
    aliases: str = typer.Option(None, "--aliases", help="JSON object: network name -> model species."),
    crops: str = typer.Option(None, "--crops", help="Comma-separated crop plants for pest pressure."),
    sets: list[str] = typer.Option(None, "--set", help="NAME=source->target,source->target (repeatable)."),
    independent: bool = typer.Option(True, "--independent/--no-independent", help="Also write *_independent."),
    weighted: bool = typer.Option(False, "--weighted", help="Expected numbers weighted by edge weights."),
    dtype: Dtype = typer.Option(Dtype.uint8, "--dtype", help="Storage of probability layers."),
    tile: int = typer.Option(0, "--tile", help="Tile (= shard) side in cells (default: the predictions' tiles)."),
    cogs: bool = typer.Option(True, "--cogs/--no-cogs", help="Export COGs."),
    per_layer: bool = typer.Option(True, "--per-layer/--no-per-layer", help="One COG per edge/pest/crop/set."),
    stac: bool = typer.Option(True, "--stac/--no-stac", help="Write STAC Items and a Collection."),
    collection: str = typer.Option("geosdm-interactions", "--collection", help="STAC Collection id."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://...) to run tiles on."),
    workers: int = typer.Option(0, "--workers", help="Start a LocalCluster with this many worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite the store instead of resuming it."),
    storage_options: str = typer.Option(None, "--storage-options", help="JSON fsspec options for the output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Fit co-occurrence from surveys, write the interaction layers (Zarr), COGs and STAC; prints a summary."""
    from rich.console import Console

    from geosdm.cli._cluster import dask_client
    from geosdm.interactions import InteractionsConfig, run_interactions

    cfg = validated(InteractionsConfig, dict(
        predictions=predictions, edges=str(edges), nodes=str(nodes) if nodes else None, output=output,
        surveys=tuple(surveys or ()), method=method.value, detection=_detection(detection), leakage=leakage,
        aliases=json_option(aliases, "--aliases"),
        crops=tuple(c.strip() for c in crops.split(",") if c.strip()) if crops else None, sets=_sets(sets),
        independent=independent, weighted=weighted, dtype=dtype.value, tile_shape=(tile, tile) if tile else None,
        cogs=cogs, per_layer=per_layer, stac=stac, collection_id=collection,
        storage_options=json_option(storage_options, "--storage-options"),
    ), "interactions options")
    with dask_client(scheduler, workers) as client:
        report = run_interactions(cfg, client=client, progress=progress, overwrite=overwrite)
    console = Console()
    w, m = report.write, report.match
    console.print(f"[bold]interactions[/bold] {w.path}: {m['edges_kept']} interactions ({m['edges_dropped']} dropped, "
                  f"{m['edges_merged']} duplicate rows merged), "
                  f"{w.n_tiles} tiles ({w.n_resumed} resumed), variables {', '.join(report.variables)}")
    if m["unmatched_nodes"]:
        console.print(f"[yellow]unmatched network nodes ({len(m['unmatched_nodes'])}):[/yellow] "
                      f"{', '.join(m['unmatched_nodes'][:15])}{' ...' if len(m['unmatched_nodes']) > 15 else ''}")
    cons = report.associations.consumers
    if len(cons) and "leakage" in cons:
        est = cons[cons["estimated"]] if "estimated" in cons else cons
        console.print(f"co-occurrence: {report.associations.source}; leakage estimated for {len(est)} consumers "
                      f"(median {float(est['leakage'].median()) if len(est) else float('nan'):.3f})")
    print_outputs(console, report, output)


@app.command("network")
def network(
    path: Path = typer.Argument(..., help="Edge list (CSV/Parquet), or the folder of the Kopelke et al. (2017) "
                                          "willow-sawfly-parasitoid data (df_interact.csv ...)."),
    nodes: Path = typer.Option(None, "--nodes", help="Node list for an edge list."),
    species: str = typer.Option(None, "--species", help="Prediction store or comma-separated names to match against."),
    aliases: str = typer.Option(None, "--aliases", help="JSON object: network name -> model species."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
) -> None:
    """Report a network's structure (nodes per trophic level, links, connectance, degrees) and name matching."""
    from rich.console import Console

    from geosdm.interactions import match_species, network_structure, read_network, read_salix_network

    net = read_salix_network(path) if path.is_dir() else read_network(path, nodes)
    st = network_structure(net)
    out: dict[str, Any] = {"structure": st.to_dict()}
    if species:
        if "," in species or not Path(species).exists():
            names = [s.strip() for s in species.split(",") if s.strip()]
        else:
            from geosdm.interactions import open_probability

            names = [str(s) for s in open_probability(species)["species"].values]
        out["match"] = match_species(net, names, aliases=json_option(aliases, "--aliases")).summary()
    if as_json:
        typer.echo(json.dumps(out, default=str))
        return
    c = Console()
    c.print(f"[bold]{st.name or path}[/bold]: {st.n_species} species, {st.n_links} links")
    c.print(f"nodes per role: {st.nodes_per_role}; per trophic level: {st.nodes_per_trophic_level}")
    c.print(f"links: {st.links_between_roles} by type {st.links_per_interaction}")
    c.print(f"connectance L/S^2 {st.connectance:.4f}; multipartite {st.connectance_multipartite:.4f}; "
            f"per block {st.connectance_between_roles}; link density {st.link_density:.2f}")
    c.print(f"generality {st.generality:.2f}, vulnerability {st.vulnerability:.2f}; basal {st.n_basal}, "
            f"intermediate {st.n_intermediate}, top {st.n_top}, isolated {st.n_isolated}")
    for role, d in st.degree.items():
        c.print(f"degree ({role}): in {d['in']} out {d['out']}")
    if "match" in out:
        m = out["match"]
        c.print(f"matched {m['matched_nodes']} nodes {m['matched_by']}; {m['edges_kept']} interactions kept, "
                f"{m['edges_dropped']} dropped, {m['edges_merged']} duplicate rows merged; unmatched nodes {len(m['unmatched_nodes'])}: "
                f"{m['unmatched_nodes'][:10]}")
