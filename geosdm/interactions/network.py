"""Interaction networks: read edge lists (CSV/Parquet), name roles, and match node names to a model's species.

A :class:`Network` holds two tables:

- ``nodes``: ``species`` (name), ``role`` (``plant``, ``pest``, ``enemy`` or ``other``) and any extra columns
  (``guild`` such as ``crop``/``wild``, a source ``code``, a taxonomic ``group``...);
- ``edges``: ``source``, ``target``, ``interaction`` (``herbivory``, ``parasitism``, ``predation``,
  ``inquilinism``, ...) and ``weight`` (float, 1 when the file gives none).

Direction convention: an edge points from the **resource** to its **consumer** (host plant -> pest, pest ->
natural enemy), i.e. from the species that is eaten / parasitised to the one that needs it. The
co-occurrence-aware layers (:mod:`geosdm.interactions.layers`) rely on it: a consumer's resources are the
sources of its incoming edges.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geosdm.errors import DataSourceError, InputError, MissingVariableError

__all__ = ["Network", "NetworkMatch", "ROLES", "read_network", "network_from_frames", "match_species", "edge_label",
           "trophic_levels"]

log = logging.getLogger(__name__)

#: Node roles along the plant -> pest -> natural enemy chain ("other" for anything else).
ROLES = ("plant", "pest", "enemy", "other")
#: Role synonyms accepted in node files (lower case).
_ROLE_ALIASES = {
    "plant": "plant", "host plant": "plant", "host_plant": "plant", "crop": "plant", "producer": "plant",
    "basal": "plant", "willow": "plant",
    "pest": "pest", "herbivore": "pest", "galler": "pest", "phytophage": "pest", "host": "pest",
    "enemy": "enemy", "natural enemy": "enemy", "natural_enemy": "enemy", "parasitoid": "enemy",
    "predator": "enemy", "inquiline": "enemy", "hyperparasitoid": "enemy",
    "other": "other",
}
#: Column names accepted for each field (lower case, first match wins).
_EDGE_COLUMNS = {
    "source": ("source", "from", "resource", "prey", "host", "lower", "species_from"),
    "target": ("target", "to", "consumer", "predator", "enemy", "upper", "species_to"),
    "interaction": ("interaction", "interaction_type", "type", "kind", "relation"),
    "weight": ("weight", "strength", "frequency", "n", "count"),
}
_NODE_COLUMNS = {
    "species": ("species", "name", "node", "taxon", "scientific_name", "scientificname", "id"),
    "role": ("role", "trophic_role"),
}


def edge_label(source: str, target: str) -> str:
    """Label of an edge, ``"<source>-><target>"`` (the ``edge`` coordinate of interaction cubes)."""
    return f"{source}->{target}"


@dataclass(frozen=True)
class Network:
    """A directed interaction network (resource -> consumer) with node roles.

    Build it with :func:`read_network` or :func:`network_from_frames`; both validate the tables.
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    name: str = ""
    merged_edges: int = 0  # duplicate rows of the edge table merged into one edge each (weights summed)

    @property
    def species(self) -> list[str]:
        """Node names, in the order of ``nodes``."""
        return [str(s) for s in self.nodes["species"]]

    @property
    def roles(self) -> dict[str, str]:
        """Node name -> role."""
        return dict(zip(self.nodes["species"].astype(str), self.nodes["role"].astype(str)))

    def with_role(self, role: str) -> list[str]:
        """Node names with ``role`` (``plant``, ``pest``, ``enemy``, ``other``)."""
        return [s for s, r in self.roles.items() if r == role]

    @property
    def edge_labels(self) -> list[str]:
        """``"<source>-><target>"`` per edge, in the order of ``edges``."""
        return [edge_label(s, t) for s, t in zip(self.edges["source"].astype(str), self.edges["target"].astype(str))]

    def resources(self, consumer: str) -> list[str]:
        """Sources of the edges into ``consumer`` (its host plants, prey or hosts)."""
        e = self.edges
        return [str(s) for s in e.loc[e["target"] == consumer, "source"]]

    def consumers(self, resource: str) -> list[str]:
        """Targets of the edges out of ``resource`` (its pests or natural enemies)."""
        e = self.edges
        return [str(t) for t in e.loc[e["source"] == resource, "target"]]

    def crops(self) -> list[str]:
        """Plants whose ``guild`` is ``crop``; every plant when the nodes have no ``guild`` column."""
        plants = self.with_role("plant")
        if "guild" not in self.nodes.columns:
            return plants
        guild = dict(zip(self.nodes["species"].astype(str), self.nodes["guild"].astype(str).str.lower()))
        return [p for p in plants if guild.get(p) == "crop"]

    def subset(self, species: Iterable[str]) -> Network:
        """The network restricted to ``species`` (edges with both ends kept)."""
        keep = set(species)
        nodes = self.nodes[self.nodes["species"].isin(keep)].reset_index(drop=True)
        edges = self.edges[self.edges["source"].isin(keep) & self.edges["target"].isin(keep)].reset_index(drop=True)
        return Network(nodes, edges, self.name, self.merged_edges)

    def rename(self, mapping: Mapping[str, str]) -> Network:
        """The network with node names replaced by ``mapping`` (names not in it are kept)."""
        nodes = self.nodes.copy()
        nodes["species"] = nodes["species"].map(lambda s: mapping.get(s, s))
        edges = self.edges.copy()
        for c in ("source", "target"):
            edges[c] = edges[c].map(lambda s: mapping.get(s, s))
        return Network(nodes, edges, self.name, self.merged_edges)


@dataclass(frozen=True)
class NetworkMatch:
    """A network matched to a model's species (see :func:`match_species`)."""

    network: Network  # nodes renamed to the model's names; only matched nodes and their edges
    mapping: dict[str, str]  # network name -> model species
    how: dict[str, str]  # network name -> rule that matched it ("exact", "alias", "normalised", "binomial")
    unmatched_nodes: tuple[str, ...]  # network nodes with no model species
    unmatched_species: tuple[str, ...]  # model species that are not in the network
    dropped_edges: pd.DataFrame = field(repr=False)  # edges with an unmatched end

    def summary(self) -> dict[str, Any]:
        """Counts and names, for reports and the CLI."""
        roles = pd.Series(self.network.roles).value_counts().to_dict() if len(self.network.nodes) else {}
        return {
            "matched_nodes": len(self.mapping), "matched_by": pd.Series(self.how).value_counts().to_dict(),
            "matched_roles": {str(k): int(v) for k, v in roles.items()},
            "edges_kept": int(len(self.network.edges)), "edges_dropped": int(len(self.dropped_edges)),
            "edges_merged": int(self.network.merged_edges),
            "unmatched_nodes": list(self.unmatched_nodes), "unmatched_species": list(self.unmatched_species),
        }


def _read_table(path: str | PathLike[str], what: str, sep: str | None) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataSourceError(f"{what} file {str(p)!r} does not exist or is not a file; check the path")
    suffix = p.suffix.lower()
    if suffix in {".parquet", ".pq", ".geoparquet"}:
        return pd.read_parquet(p)
    if suffix in {".csv", ".tsv", ".txt"}:
        if sep is None:
            first = p.open(encoding="utf-8-sig").readline()
            sep = max([",", ";", "\t", "|"], key=first.count)
        return pd.read_csv(p, sep=sep, encoding="utf-8-sig")
    raise InputError(f"cannot tell the format of {what} file {p.name!r}; use .csv/.tsv/.txt or .parquet")


def _pick(columns: Sequence[str], wanted: str | None, aliases: Sequence[str], what: str, field_: str,
          required: bool) -> str | None:
    lower = {str(c).strip().lower(): str(c) for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise MissingVariableError(f"{what} has no column {wanted!r} for {field_}; it has {list(columns)}")
    for a in aliases:
        if a in lower:
            return lower[a]
    if required:
        raise MissingVariableError(
            f"{what} has no {field_} column (looked for {list(aliases)}); it has {list(columns)}. "
            f"Pass {field_}='<column>'")
    return None


def _clean_names(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def trophic_levels(species: Iterable[str], edges: pd.DataFrame) -> dict[str, float]:
    """Prey-averaged trophic level of each species: 1 without resources, else 1 + mean level of its resources.

    ``edges`` has ``source`` (resource) and ``target`` (consumer) columns. Solved as one linear system, so
    loops (mutual predation) are handled; a loop with no path to a basal species gets a least-squares level.

    Example
    -------
    >>> trophic_levels(["a", "b", "c"], pd.DataFrame({"source": ["a", "b"], "target": ["b", "c"]}))
    {'a': 1.0, 'b': 2.0, 'c': 3.0}
    """
    names = list(dict.fromkeys(species))
    index = {s: i for i, s in enumerate(names)}
    n = len(names)
    m = np.zeros((n, n))
    for s, t in zip(edges["source"], edges["target"]):
        if s in index and t in index:
            m[index[t], index[s]] = 1.0
    k = m.sum(axis=1, keepdims=True)
    m = np.divide(m, k, out=np.zeros_like(m), where=k > 0)
    a = np.eye(n) - m
    try:
        tl = np.linalg.solve(a, np.ones(n))
    except np.linalg.LinAlgError:
        tl = np.linalg.lstsq(a, np.ones(n), rcond=None)[0]
    return {s: round(float(v), 6) for s, v in zip(names, tl)}


def _infer_roles(species: list[str], edges: pd.DataFrame) -> dict[str, str]:
    """Roles from positions in the chain: no resources -> plant, resources all plants -> pest, else enemy."""
    levels = trophic_levels(species, edges)
    return {s: "plant" if lv < 1.5 else "pest" if lv < 2.5 else "enemy" for s, lv in levels.items()}


def network_from_frames(
    edges: pd.DataFrame,
    nodes: pd.DataFrame | None = None,
    *,
    source: str | None = None,
    target: str | None = None,
    interaction: str | None = None,
    weight: str | None = None,
    species: str | None = None,
    role: str | None = None,
    default_interaction: str = "interaction",
    name: str = "",
    what: str = "edges",
) -> Network:
    """Build a validated :class:`Network` from an edge table and an optional node table.

    Parameters
    ----------
    edges
        One row per interaction, resource first (``source`` -> ``target``: host plant -> pest, pest -> enemy).
        Column names are found case-insensitively among common synonyms (``from``/``to``,
        ``resource``/``consumer``, ``type``, ``strength``...) unless given.
    nodes
        One row per species with its role (``plant``/``pest``/``enemy``/``other`` or synonyms such as
        ``herbivore``, ``parasitoid``, ``predator``); extra columns (e.g. ``guild``) are kept. Without it, roles
        are inferred from trophic position (no resources: plant; level 2: pest; higher: enemy).
    source, target, interaction, weight, species, role
        Column names, when they differ from the usual ones.
    default_interaction
        Interaction type of edges without one.
    name
        A label for reports.

    Returns
    -------
    Network
        Duplicate edges merged (weights summed), interaction types in lower case.

    Raises
    ------
    MissingVariableError
        A required column is missing.
    InputError
        Self-loops, empty names, edges naming species absent from ``nodes``, or unknown roles.

    Example
    -------
    >>> net = network_from_frames(pd.DataFrame({"source": ["wheat"], "target": ["aphid"]}))
    >>> net.roles
    {'wheat': 'plant', 'aphid': 'pest'}
    """
    cols = [str(c) for c in edges.columns]
    cs = _pick(cols, source, _EDGE_COLUMNS["source"], what, "source", True)
    ct = _pick(cols, target, _EDGE_COLUMNS["target"], what, "target", True)
    ci = _pick(cols, interaction, _EDGE_COLUMNS["interaction"], what, "interaction", False)
    cw = _pick(cols, weight, _EDGE_COLUMNS["weight"], what, "weight", False)
    e = pd.DataFrame({"source": _clean_names(edges[cs]), "target": _clean_names(edges[ct])})
    e["interaction"] = (_clean_names(edges[ci]).str.lower().fillna(default_interaction) if ci
                        else default_interaction)
    e["weight"] = pd.to_numeric(edges[cw], errors="coerce").fillna(1.0).astype("float64") if cw else 1.0
    empty = e["source"].isna() | e["target"].isna() | (e["source"] == "") | (e["target"] == "")
    if empty.any():
        raise InputError(f"{what}: {int(empty.sum())} edge(s) have an empty source or target (rows "
                         f"{list(np.flatnonzero(empty.to_numpy())[:5])}); fill or drop them")
    loops = e["source"] == e["target"]
    if loops.any():
        raise InputError(f"{what}: self-loops are not interactions between species: "
                         f"{sorted(set(e.loc[loops, 'source']))[:5]}; drop them")
    n0 = len(e)
    e = (e.groupby(["source", "target", "interaction"], sort=False, as_index=False)["weight"].sum())
    if e.duplicated(["source", "target"]).any():
        both = e.loc[e.duplicated(["source", "target"], keep=False)]
        dup = {f"{s}->{t}": sorted(g["interaction"]) for (s, t), g in both.groupby(["source", "target"], sort=False)}
        raise InputError(f"{what}: pairs with several interaction types {dict(list(dup.items())[:3])}; keep one type "
                         "per pair")
    if len(e) < n0:
        log.warning("%s: %d duplicate edge rows merged into %d edges (weights summed); reported as edges_merged",
                    what, n0 - len(e), len(e))
    e = e.astype({"source": str, "target": str, "interaction": str})
    in_edges = list(dict.fromkeys([*e["source"], *e["target"]]))
    if nodes is None:
        roles = _infer_roles(in_edges, e)
        n = pd.DataFrame({"species": in_edges, "role": [roles[s] for s in in_edges]})
    else:
        ncols = [str(c) for c in nodes.columns]
        csp = _pick(ncols, species, _NODE_COLUMNS["species"], "nodes", "species", True)
        cr = _pick(ncols, role, _NODE_COLUMNS["role"], "nodes", "role", False)
        n = nodes.rename(columns={csp: "species", **({cr: "role"} if cr else {})}).copy()
        n["species"] = _clean_names(n["species"]).astype(str)
        if n["species"].duplicated().any():
            dup = sorted(set(n.loc[n["species"].duplicated(), "species"]))[:5]
            raise InputError(f"nodes: duplicated species {dup}; keep one row per species")
        if cr is None:
            roles = _infer_roles(list(n["species"]), e)
            n["role"] = n["species"].map(roles).fillna("other")
        else:
            raw = _clean_names(n["role"]).str.lower()
            mapped = raw.map(_ROLE_ALIASES)
            bad = sorted(set(raw[mapped.isna() & raw.notna()]))
            if bad:
                raise InputError(f"nodes: unknown role(s) {bad}; use one of {list(ROLES)} "
                                 f"(or synonyms {sorted(_ROLE_ALIASES)})")
            n["role"] = mapped.fillna("other").astype(str)
        missing = [s for s in in_edges if s not in set(n["species"])]
        if missing:
            raise InputError(f"{what}: {len(missing)} species in edges are not in the nodes table: {missing[:8]}; "
                             "add them to the nodes file (with their role) or drop their edges")
        n = n[["species", "role", *[c for c in n.columns if c not in ("species", "role")]]].reset_index(drop=True)
        _check_direction(n, e, what)
    return Network(n, e.reset_index(drop=True), name, n0 - len(e))


_RANK = {"plant": 0, "pest": 1, "enemy": 2}


def _check_direction(nodes: pd.DataFrame, edges: pd.DataFrame, what: str) -> None:
    """Refuse edge lists written consumer -> resource (enemy -> pest, pest -> plant) for most of their edges."""
    rank = {s: _RANK.get(r) for s, r in zip(nodes["species"], nodes["role"])}
    pairs = [(rank.get(s), rank.get(t)) for s, t in zip(edges["source"], edges["target"])]
    ranked = [(a, b) for a, b in pairs if a is not None and b is not None and a != b]
    backward = sum(1 for a, b in ranked if a > b)
    if ranked and backward > len(ranked) / 2:
        raise InputError(f"{what}: {backward} of {len(ranked)} edges point from consumer to resource (e.g. enemy -> "
                         "pest); edges go resource -> consumer (host plant -> pest -> enemy). Swap the columns: "
                         "source=<resource column>, target=<consumer column>")
    if backward:
        log.warning("%s: %d edge(s) point from a higher to a lower trophic role (e.g. enemy -> pest); they are "
                    "read as resource -> consumer", what, backward)


def read_network(
    edges: str | PathLike[str],
    nodes: str | PathLike[str] | None = None,
    *,
    sep: str | None = None,
    source: str | None = None,
    target: str | None = None,
    interaction: str | None = None,
    weight: str | None = None,
    species: str | None = None,
    role: str | None = None,
    default_interaction: str = "interaction",
) -> Network:
    """Read an interaction network from an edge list (and optional node list), CSV or Parquet.

    Parameters
    ----------
    edges
        Edge list file (``.csv``/``.tsv``/``.txt``, separator sniffed, or ``.parquet``): source, target,
        interaction type (herbivory, parasitism, predation, ...), optional weight.
    nodes
        Node list file: species and role (plant / pest / enemy), optional guild (``crop``/``wild``).
    sep
        Field separator of text files (default: sniffed from the header).
    source, target, interaction, weight, species, role, default_interaction
        As in :func:`network_from_frames`.

    Returns
    -------
    Network

    Raises
    ------
    DataSourceError
        A file is missing.
    MissingVariableError, InputError
        See :func:`network_from_frames`.

    Example
    -------
    >>> net = read_network("demo-output/network/edges.csv", "demo-output/network/nodes.csv")  # doctest: +SKIP
    """
    e = _read_table(edges, "edges", sep)
    n = _read_table(nodes, "nodes", sep) if nodes is not None else None
    return network_from_frames(e, n, source=source, target=target, interaction=interaction, weight=weight,
                               species=species, role=role, default_interaction=default_interaction,
                               name=Path(edges).stem, what=f"edges file {str(edges)!r}")


def _normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", name.lower()).strip()


def _binomial(name: str) -> str:
    """First two words of a normalised name (genus species), dropping authors and infraspecific parts."""
    words = re.sub(r"\([^)]*\)", " ", name).split()
    return _normalise(" ".join(words[:2]))


def match_species(
    network: Network,
    species: Iterable[str],
    *,
    aliases: Mapping[str, str] | None = None,
    fuzzy: bool = True,
) -> NetworkMatch:
    """Match the network's node names to a model's species and report what did not match.

    Rules, in order: exact name; ``aliases`` (network name -> model species); with ``fuzzy``, names equal once
    lower-cased with punctuation, ``_`` and spaces collapsed (``"Salix_alba"`` = ``"salix alba"``); then the
    binomial (first two words, authors in parentheses dropped: ``"Eurytoma aciculata (Ratzeburg 1848)"`` =
    ``"Eurytoma aciculata"``) when it is unambiguous on both sides.

    Parameters
    ----------
    network
        The network.
    species
        The model's species (``model.species_``, or the ``species`` coordinate of a probability cube).
    aliases
        Network name -> model species, for names no rule can match (synonyms, codes).
    fuzzy
        Allow the normalised and binomial rules.

    Returns
    -------
    NetworkMatch
        The matched sub-network renamed to the model's names, the mapping, the unmatched nodes and species and
        the edges dropped because one end is unmatched.

    Raises
    ------
    InputError
        Two network nodes match the same model species, or an alias names a species the model lacks.

    Example
    -------
    >>> m = match_species(net, model.species_)  # doctest: +SKIP
    >>> m.unmatched_nodes  # doctest: +SKIP
    """
    model = [str(s) for s in species]
    model_set = set(model)
    aliases = dict(aliases or {})
    bad = {k: v for k, v in aliases.items() if v not in model_set}
    if bad:
        raise InputError(f"aliases {bad} name species the model does not have; model species: {model[:10]}...")
    by_norm: dict[str, list[str]] = {}
    by_bin: dict[str, list[str]] = {}
    for s in model:
        by_norm.setdefault(_normalise(s), []).append(s)
        by_bin.setdefault(_binomial(s), []).append(s)
    net_bin: dict[str, int] = {}
    for n in network.species:
        net_bin[_binomial(n)] = net_bin.get(_binomial(n), 0) + 1
    mapping: dict[str, str] = {}
    how: dict[str, str] = {}
    for n in network.species:
        if n in model_set:
            mapping[n], how[n] = n, "exact"
        elif n in aliases:
            mapping[n], how[n] = aliases[n], "alias"
        elif fuzzy and len(by_norm.get(_normalise(n), [])) == 1:
            mapping[n], how[n] = by_norm[_normalise(n)][0], "normalised"
        elif fuzzy and len(by_bin.get(_binomial(n), [])) == 1 and net_bin[_binomial(n)] == 1 and " " in _binomial(n):
            mapping[n], how[n] = by_bin[_binomial(n)][0], "binomial"
    taken: dict[str, list[str]] = {}
    for n, s in mapping.items():
        taken.setdefault(s, []).append(n)
    clash = {s: ns for s, ns in taken.items() if len(ns) > 1}
    if clash:
        raise InputError(f"several network nodes match the same model species {clash}; "
                         "pass aliases= for the right one or merge the nodes")
    sub = network.subset(mapping).rename(mapping)
    e = network.edges
    dropped = e[~(e["source"].isin(mapping) & e["target"].isin(mapping))].reset_index(drop=True)
    unmatched = tuple(n for n in network.species if n not in mapping)
    extra = tuple(s for s in model if s not in taken)
    if unmatched:
        log.info("%d network node(s) have no model species: %s", len(unmatched), list(unmatched[:10]))
    return NetworkMatch(sub, mapping, how, unmatched, extra, dropped)
