"""Structure of an interaction network: nodes per trophic level, links, connectance, degree distributions.

Definitions (S species, L directed links resource -> consumer):

- **trophic level** (prey-averaged): 1 for species without resources, else 1 + the mean level of its resources;
- **connectance** ``L / S**2`` (directed, Martinez 1991); per pair of roles ``L_ab / (S_a S_b)`` (e.g. the
  plant -> pest block), and **multipartite connectance** ``L / sum(S_a S_b)`` over the role pairs that have
  links (the usual figure for tri-trophic webs such as host plant -> herbivore -> parasitoid);
- **link density** ``L / S``; **generality** the mean number of resources of consumers, **vulnerability** the
  mean number of consumers of resources;
- **degree distributions**: for each role, how many species have k resources (in-degree), k consumers
  (out-degree) and k partners in all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# trophic_levels lives in network.py (roles are inferred from it there); re-exported here as part of the structure API
from geosdm.interactions.network import ROLES, Network, trophic_levels

__all__ = ["NetworkStructure", "network_structure", "trophic_levels"]


def _hist(values: Iterable[int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in sorted(Counter(int(x) for x in values).items())}


@dataclass(frozen=True)
class NetworkStructure:
    """Structure metrics of a network (see the module docstring for definitions)."""

    name: str
    n_species: int
    n_links: int
    nodes_per_role: dict[str, int]
    nodes_per_trophic_level: dict[int, int]  # rounded prey-averaged trophic level -> species
    links_per_interaction: dict[str, int]
    links_between_roles: dict[str, int]  # "plant->pest" -> links
    connectance: float  # L / S^2
    connectance_between_roles: dict[str, float]  # "plant->pest" -> L_ab / (S_a S_b)
    connectance_multipartite: float  # L / sum of S_a S_b over linked role pairs
    link_density: float  # L / S
    generality: float  # mean number of resources per consumer
    vulnerability: float  # mean number of consumers per resource
    n_basal: int  # no resources
    n_intermediate: int  # resources and consumers
    n_top: int  # resources, no consumers
    n_isolated: int  # no links
    degree: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)  # role -> in/out/total -> k -> n
    max_degree: dict[str, int] = field(default_factory=dict)  # role -> largest total degree

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (degree keys as strings)."""
        d = asdict(self)
        d["nodes_per_trophic_level"] = {str(k): v for k, v in self.nodes_per_trophic_level.items()}
        d["degree"] = {r: {w: {str(k): v for k, v in h.items()} for w, h in dd.items()}
                       for r, dd in self.degree.items()}
        return d

    def degree_table(self) -> pd.DataFrame:
        """Degree distributions as a long table: role, direction (in/out/total), degree k, species with k."""
        rows = [(r, w, k, v) for r, dd in self.degree.items() for w, h in dd.items() for k, v in h.items()]
        return pd.DataFrame(rows, columns=["role", "direction", "degree", "species"])


def network_structure(network: Network) -> NetworkStructure:
    """Nodes per trophic level, links, connectance and degree distributions of ``network``.

    Parameters
    ----------
    network
        A network from :func:`geosdm.interactions.read_network` (or a matched sub-network).

    Returns
    -------
    NetworkStructure

    Example
    -------
    >>> from geosdm.interactions import network_from_frames
    >>> net = network_from_frames(pd.DataFrame({"source": ["wheat", "wheat"], "target": ["aphid", "thrips"]}))
    >>> network_structure(net).connectance_between_roles
    {'plant->pest': 1.0}
    """
    species = network.species
    roles = network.roles
    e = network.edges
    s, l_ = len(species), len(e)
    indeg = Counter(str(t) for t in e["target"])
    outdeg = Counter(str(x) for x in e["source"])
    per_role = {r: sum(1 for v in roles.values() if v == r) for r in ROLES}
    per_role = {r: n for r, n in per_role.items() if n}
    tl = trophic_levels(species, e)
    pairs = Counter(f"{roles[str(a)]}->{roles[str(b)]}" for a, b in zip(e["source"], e["target"]))
    order = {f"{a}->{b}": (ROLES.index(a), ROLES.index(b)) for a in ROLES for b in ROLES}
    pairs_sorted = dict(sorted(pairs.items(), key=lambda kv: order[kv[0]]))
    conn_roles = {k: round(v / (per_role[k.split("->")[0]] * per_role[k.split("->")[1]]), 6)
                  for k, v in pairs_sorted.items()}
    possible = sum(per_role[k.split("->")[0]] * per_role[k.split("->")[1]] for k in pairs_sorted)
    consumers = [x for x in species if indeg[x] > 0]
    resources = [x for x in species if outdeg[x] > 0]
    degree: dict[str, dict[str, dict[int, int]]] = {}
    max_degree: dict[str, int] = {}
    for r in per_role:
        members = [x for x in species if roles[x] == r]
        degree[r] = {"in": _hist(indeg[x] for x in members), "out": _hist(outdeg[x] for x in members),
                     "total": _hist(indeg[x] + outdeg[x] for x in members)}
        max_degree[r] = max(indeg[x] + outdeg[x] for x in members)
    return NetworkStructure(
        name=network.name, n_species=s, n_links=l_,
        nodes_per_role=per_role,
        nodes_per_trophic_level=_hist(int(np.floor(v + 0.5)) for v in tl.values()),
        links_per_interaction={str(k): int(v) for k, v in e["interaction"].value_counts().sort_index().items()},
        links_between_roles=pairs_sorted,
        connectance=round(l_ / s**2, 6) if s else 0.0,
        connectance_between_roles=conn_roles,
        connectance_multipartite=round(l_ / possible, 6) if possible else 0.0,
        link_density=round(l_ / s, 6) if s else 0.0,
        generality=round(float(np.mean([indeg[x] for x in consumers])), 6) if consumers else 0.0,
        vulnerability=round(float(np.mean([outdeg[x] for x in resources])), 6) if resources else 0.0,
        n_basal=sum(1 for x in species if indeg[x] == 0 and outdeg[x] > 0),
        n_intermediate=sum(1 for x in species if indeg[x] > 0 and outdeg[x] > 0),
        n_top=sum(1 for x in species if indeg[x] > 0 and outdeg[x] == 0),
        n_isolated=sum(1 for x in species if indeg[x] == 0 and outdeg[x] == 0),
        degree=degree, max_degree=max_degree,
    )
