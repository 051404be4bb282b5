"""Lazy interaction cubes from species probability cubes and a network: one Dask task per tile, all layers at once.

Inputs are the marginal presence probabilities ``p`` of the species, a ``(species, y, x)`` cube
(:func:`geosdm.predict.predict`, :func:`geosdm.predict.open_predictions`; packed uint8 is decoded), and a
network whose node names match the cube's species (:func:`geosdm.interactions.match_species`). Every layer
comes in two versions: under **independence** (suffix ``_independent``) and under a **co-occurrence-aware**
model (no suffix), either the dependence-with-leakage model (default) or a Plackett odds-ratio model, with
parameters fitted from surveys by :func:`geosdm.interactions.fit_associations` (see that module for the models).

Layers (probabilities in [0, 1] unless stated):

``joint`` (edge, y, x)
    P(resource and consumer both present): the interaction is possible there. Independent: ``p_s p_t``;
    dependence: ``p_s q_t`` with ``q_t = p_t / (eps_t + (1 - eps_t) A_t)``; Plackett: the joint with odds
    ratio ``psi``.
``enemy_any``, ``enemy_expected`` (pest, y, x)
    Regulation potential: P(at least one natural enemy present | the pest present) and the expected number of
    enemies present there (a count; edge weights when ``weighted``). Enemies are taken as conditionally
    independent given the pest. Multiply by the pest's ``p`` for the unconditional probability.
``pest_any``, ``pest_expected`` (crop, y, x)
    Pest pressure on a crop: P(at least one of its pests present | the crop present) and the expected number of
    its pests (count).
``set_all``, ``set_any`` (interaction_set, y, x)
    For each named set of interactions: P(all are possible), P(at least one is possible). Computed exactly by
    enumerating the joint states of the set's species (and of their resources, when the total stays within
    :data:`MAX_SET_SPECIES`) under the dependence model's chain (resources before consumers).

Nothing is computed here: the result is a Dask-backed Dataset chunked like the input tiles, ready for
:func:`geosdm.io.write_layers`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import xarray as xr

from geosdm.errors import GridError, InputError, MissingVariableError
from geosdm.interactions._math import (
    any_present,
    dependence_conditional,
    dependence_joint,
    plackett_conditional,
    plackett_joint,
)
from geosdm.interactions.cooccurrence import Associations
from geosdm.interactions.network import Network, NetworkMatch, match_species
from geosdm.interactions.structure import trophic_levels

__all__ = ["interaction_layers", "open_probability", "layer_dtypes", "MAX_SET_SPECIES", "Method"]

log = logging.getLogger(__name__)

Method = Literal["dependence", "plackett"]
#: Species enumerated jointly for one set of interactions (2**n states per pixel).
MAX_SET_SPECIES = 10


def open_probability(probability: xr.Dataset | xr.DataArray | str | PathLike[str], *, variable: str = "probability",
                     storage_options: dict[str, Any] | None = None) -> xr.DataArray:
    """The ``(species, y, x)`` probability DataArray of a prediction Dataset, DataArray or store path.

    Raises
    ------
    MissingVariableError
        The Dataset has no ``variable``.
    InputError
        The array is not ``(species, y, x)``.
    """
    if isinstance(probability, (str, PathLike)):
        from geosdm.io.layers import open_layers

        probability = open_layers(probability, storage_options=storage_options)
    if isinstance(probability, xr.Dataset):
        if variable not in probability.data_vars:
            raise MissingVariableError(f"the prediction Dataset has no variable {variable!r}; it has "
                                       f"{sorted(map(str, probability.data_vars))}. Pass variable=")
        da_ = probability[variable].assign_attrs({**probability.attrs, **probability[variable].attrs})
    else:
        da_ = probability
    if set(da_.dims) != {"species", "y", "x"}:
        raise InputError(f"probabilities must have dims (species, y, x); got {da_.dims}")
    return da_.transpose("species", "y", "x")


@dataclass(frozen=True)
class _SetPlan:
    order: tuple[int, ...]  # species indices (input stack) enumerated, resources before consumers
    parents: tuple[tuple[int, ...], ...]  # per position: positions (in order) of its resources in the set
    outside: tuple[tuple[int, ...], ...]  # per position: species indices of its resources outside the set
    has_resources: tuple[bool, ...]
    eps: tuple[float, ...]
    members: tuple[int, ...]  # positions of the species of the set's interactions
    pairs: tuple[tuple[int, int], ...]  # positions of each interaction's (source, target)


@dataclass(frozen=True)
class _Plan:
    """Everything a tile task needs (small, picklable)."""

    method: str
    independent: bool
    edges: tuple[tuple[int, int, float], ...]  # (source idx, target idx, psi)
    consumers: tuple[tuple[int, tuple[int, ...], float], ...]  # (target idx, resource idx, eps)
    pests: tuple[tuple[tuple[int, float], ...], ...]  # per pest: (edge index, weight) to its enemies
    crops: tuple[tuple[tuple[int, float], ...], ...]  # per crop: (edge index, weight) to its pests
    sets: tuple[_SetPlan, ...]
    want_edges: bool

    def variables(self) -> list[tuple[str, str, int]]:
        """(name, lead dim, size) in the order of the tile's output stack."""
        out: list[tuple[str, str, int]] = []
        versions = ["", "_independent"] if self.independent else [""]
        for v in versions:
            if self.want_edges:
                out.append((f"joint{v}", "edge", len(self.edges)))
            if self.pests:
                out += [(f"enemy_any{v}", "pest", len(self.pests)), (f"enemy_expected{v}", "pest", len(self.pests))]
            if self.crops:
                out += [(f"pest_any{v}", "crop", len(self.crops)), (f"pest_expected{v}", "crop", len(self.crops))]
            if self.sets:
                out += [(f"set_all{v}", "interaction_set", len(self.sets)),
                        (f"set_any{v}", "interaction_set", len(self.sets))]
        return out


def _enumerate(p: np.ndarray, q: Mapping[int, np.ndarray], plan: _SetPlan,
               independent: bool) -> tuple[np.ndarray, np.ndarray]:
    """P(all interactions of a set possible), P(at least one possible), by enumerating the species' states."""
    n = len(plan.order)
    shape = p.shape[1:]
    p_all = np.zeros(shape)
    p_any = np.zeros(shape)
    a_out = [any_present([p[j] for j in plan.outside[k]]) if plan.outside[k] else np.zeros(shape) for k in range(n)]
    members = set(plan.members)

    def cond(k: int, state: list[bool]) -> np.ndarray:
        i = plan.order[k]
        if independent or not plan.has_resources[k]:
            return p[i]
        if any(state[j] for j in plan.parents[k]):
            h: np.ndarray | float = 1.0
        else:
            h = a_out[k]
        return q[i] * (plan.eps[k] + (1.0 - plan.eps[k]) * h)

    def rec(k: int, state: list[bool], w: np.ndarray) -> None:
        nonlocal p_all, p_any
        if k == n:
            if all(state[m] for m in members):
                p_all = p_all + w
            if any(state[a] and state[b] for a, b in plan.pairs):
                p_any = p_any + w
            return
        c = cond(k, state)
        rec(k + 1, [*state, True], w * c)
        rec(k + 1, [*state, False], w * (1.0 - c))

    rec(0, [], np.ones(shape))
    nan = np.isnan(p[list(plan.order)]).any(axis=0)
    p_all[nan] = np.nan
    p_any[nan] = np.nan
    return p_all, p_any


def _tile(block: np.ndarray, *, plan: _Plan) -> np.ndarray:
    """All interaction layers of one tile: ``(species, by, bx)`` probabilities -> ``(layers, by, bx)`` float32."""
    if block.dtype == np.uint8:  # packed storage: round(250 p), 255 = nodata
        p = np.where(block == 255, np.nan, block.astype(np.float64) / 250.0)
    else:
        p = np.clip(block.astype(np.float64), 0.0, 1.0)
    shape = p.shape[1:]
    q: dict[int, np.ndarray] = {}
    a: dict[int, np.ndarray] = {}
    eps_of: dict[int, float] = {}
    for i_t, res, eps in plan.consumers:
        a[i_t] = any_present([p[r] for r in res])
        q[i_t] = dependence_conditional(p[i_t], a[i_t], eps)
        eps_of[i_t] = eps
    out: list[np.ndarray] = []
    versions = [False, True] if plan.independent else [False]
    for indep in versions:
        joints, conds = [], []
        for i_s, i_t, psi in plan.edges:
            ps, pt = p[i_s], p[i_t]
            if indep:
                joints.append(ps * pt)
                conds.append(pt)
            elif plan.method == "plackett":
                joints.append(plackett_joint(ps, pt, psi))
                conds.append(plackett_conditional(ps, pt, psi))
            else:
                joints.append(dependence_joint(ps, pt, a[i_t], eps_of[i_t]))
                conds.append(q[i_t])
        if plan.want_edges:
            out += joints
        for groups in (plan.pests, plan.crops):
            if not groups:
                continue
            anys, exps = [], []
            for members in groups:
                none = np.ones(shape)
                exp = np.zeros(shape)
                for e, w in members:
                    none = none * (1.0 - conds[e])
                    exp = exp + w * conds[e]
                focal = p[plan.edges[members[0][0]][0]]
                nan = np.isnan(focal)
                anys.append(np.where(nan, np.nan, 1.0 - none))
                exps.append(np.where(nan, np.nan, exp))
            out += anys + exps
        if plan.sets:
            alls, any_ = [], []
            for sp in plan.sets:
                x_all, x_any = _enumerate(p, q, sp, indep)
                alls.append(x_all)
                any_.append(x_any)
            out += alls + any_
    return np.stack(out).astype(np.float32) if out else np.empty((0, *shape), np.float32)


def _set_plan(name: str, labels: Sequence[str], net: Network, index: Mapping[str, int], eps: Mapping[str, float],
              levels: Mapping[str, float]) -> _SetPlan:
    by_label = dict(zip(net.edge_labels, zip(net.edges["source"].astype(str), net.edges["target"].astype(str))))
    unknown = [lbl for lbl in labels if lbl not in by_label]
    if unknown or not labels:
        raise InputError(f"interaction set {name!r} names unknown interactions {unknown}; use labels "
                         f"'<source>-><target>' of the matched network, e.g. {net.edge_labels[:3]}")
    pairs = [by_label[lbl] for lbl in labels]
    core = list(dict.fromkeys(s for pair in pairs for s in pair))
    if len(core) > MAX_SET_SPECIES:
        raise InputError(f"interaction set {name!r} involves {len(core)} species; at most {MAX_SET_SPECIES} can be "
                         "enumerated jointly: split it into smaller sets")
    closure = list(core)
    frontier = list(core)
    while frontier:
        nxt = [r for s in frontier for r in net.resources(s) if r not in closure]
        frontier = list(dict.fromkeys(nxt))
        closure += frontier
    chosen = closure if len(closure) <= MAX_SET_SPECIES else core
    if len(closure) > MAX_SET_SPECIES:
        log.info("set %r: %d species with their resources; enumerating the %d of the set only (resources outside "
                 "it taken as independent)", name, len(closure), len(core))
    order = sorted(chosen, key=lambda s: (levels.get(s, 1.0), s))
    pos = {s: k for k, s in enumerate(order)}
    parents, outside, has_res, eps_l = [], [], [], []
    for s in order:
        res = net.resources(s)
        parents.append(tuple(pos[r] for r in res if r in pos))
        outside.append(tuple(index[r] for r in res if r not in pos))
        has_res.append(bool(res))
        eps_l.append(float(eps.get(s, 0.0)))
    return _SetPlan(tuple(index[s] for s in order), tuple(parents), tuple(outside), tuple(has_res), tuple(eps_l),
                    tuple(pos[s] for s in core), tuple((pos[a], pos[b]) for a, b in pairs))


def layer_dtypes(ds: xr.Dataset, probability: Literal["uint8", "float16", "float32"] = "uint8") -> dict[str, str]:
    """Storage dtype per variable for :func:`geosdm.io.write_layers`: ``probability`` for probability layers,
    float32 for expected counts (they exceed 1 and uint8 stores [0, 1] only)."""
    return {str(n): probability if v.attrs.get("geosdm:kind") == "probability" else "float32"
            for n, v in ds.data_vars.items()}


_LONG_NAMES = {
    "joint": "probability that both partners are present (interaction possible)",
    "enemy_any": "probability that at least one natural enemy is present where the pest is present",
    "enemy_expected": "expected number of natural enemies present where the pest is present",
    "pest_any": "probability that at least one pest of the crop is present where the crop is present",
    "pest_expected": "expected number of pests of the crop present where the crop is present",
    "set_all": "probability that all interactions of the set are possible",
    "set_any": "probability that at least one interaction of the set is possible",
}


@dataclass(frozen=True)
class _Prepared:
    """What :func:`interaction_layers` (and :func:`geosdm.interactions.interaction_uncertainty`) build before the
    tiles: the probabilities, the plan, the species stacked and the output coordinates/attributes."""

    prob: xr.DataArray
    plan: _Plan
    used: list[str]
    variables: list[tuple[str, str, int]]
    coords: dict[str, Any]
    attrs: dict[str, Any]
    method_label: str


def _prepare(probability: Any, network: Network | NetworkMatch, *, associations: Associations | None, method: str,
             independent: bool, edges: bool, regulation: bool, pest_pressure: bool, crops: Sequence[str] | None,
             sets: Mapping[str, Sequence[str]] | None, weighted: bool, aliases: Mapping[str, str] | None,
             variable: str, storage_options: dict[str, Any] | None) -> _Prepared:
    if method not in ("dependence", "plackett"):
        raise InputError(f"method={method!r} is not 'dependence' or 'plackett'")
    prob = open_probability(probability, variable=variable, storage_options=storage_options)
    if prob.odc.geobox is None or prob.odc.geobox.crs is None:
        raise GridError("the probabilities have no georeferencing (spatial_ref / CRS); keep the prediction's "
                        "spatial_ref coordinate")
    cube_species = [str(s) for s in prob["species"].values]
    match = network if isinstance(network, NetworkMatch) else match_species(network, cube_species, aliases=aliases)
    net = match.network
    missing = [s for s in net.species if s not in cube_species]
    if missing:
        raise InputError(f"network species {missing[:8]} are not in the probability cube; match the network to "
                         "the cube's species first (match_species(network, cube.species.values))")
    if net.edges.empty:
        raise InputError(f"no interaction has both partners in the probability cube (unmatched network nodes: "
                         f"{list(match.unmatched_nodes)[:8]}); pass aliases= to match names")
    if sets and method == "plackett":
        raise InputError("interaction sets need a joint model of several species: use method='dependence'")
    assoc = associations or Associations.fixed(net)
    used = list(dict.fromkeys([*net.edges["source"].astype(str), *net.edges["target"].astype(str)]))
    index = {s: k for k, s in enumerate(used)}
    e = net.edges.reset_index(drop=True)
    labels = net.edge_labels
    eps = {t: float(assoc.leakage.get(t, 0.0)) for t in dict.fromkeys(e["target"].astype(str))}
    edge_plan = tuple((index[str(s)], index[str(t)], float(assoc.odds_ratio.get(lbl, 1.0)))
                      for s, t, lbl in zip(e["source"], e["target"], labels))
    consumers = tuple((index[t], tuple(index[r] for r in net.resources(t)), eps[t]) for t in eps)
    roles = net.roles
    weights = e["weight"].to_numpy(dtype=float) if weighted else np.ones(len(e))

    def groups(focals: Sequence[str], partner_role: str) -> tuple[list[str], tuple[tuple[tuple[int, float], ...], ...]]:
        names, out = [], []
        for f in focals:
            members = tuple((k, float(weights[k])) for k in range(len(e))
                            if str(e.at[k, "source"]) == f and roles.get(str(e.at[k, "target"])) == partner_role)
            if members:
                names.append(f)
                out.append(members)
        return names, tuple(out)

    pest_names, pest_groups = groups(net.with_role("pest"), "enemy") if regulation else ([], ())
    if crops is not None:
        unknown = [c for c in crops if c not in roles]
        if unknown:
            raise InputError(f"crops {unknown} are not matched network nodes; choose among {net.with_role('plant')}")
    crop_list = list(crops) if crops is not None else net.crops()
    crop_names, crop_groups = groups(crop_list, "pest") if pest_pressure else ([], ())
    levels = trophic_levels(net.species, net.edges)
    set_names = list(sets or {})
    set_plans = tuple(_set_plan(n, list(sets[n]), net, index, eps, levels) for n in set_names) if sets else ()
    plan = _Plan(method, bool(independent), edge_plan, consumers, pest_groups, crop_groups, set_plans, bool(edges))
    variables = plan.variables()
    if not variables:
        raise InputError("nothing to compute: enable edges, regulation, pest_pressure or give sets")
    coords: dict[str, Any] = {"y": prob["y"], "x": prob["x"]}
    if "spatial_ref" in prob.coords:
        coords["spatial_ref"] = prob["spatial_ref"]
    dims_used = {d for _, d, _ in variables}
    if "edge" in dims_used:
        coords |= {"edge": ("edge", labels), "edge_source": ("edge", e["source"].astype(str).tolist()),
                   "edge_target": ("edge", e["target"].astype(str).tolist()),
                   "edge_interaction": ("edge", e["interaction"].astype(str).tolist()),
                   "edge_weight": ("edge", e["weight"].to_numpy(dtype=float))}
    if "pest" in dims_used:
        coords["pest"] = ("pest", pest_names)
    if "crop" in dims_used:
        coords["crop"] = ("crop", crop_names)
    if "interaction_set" in dims_used:
        coords["interaction_set"] = ("interaction_set", set_names)
    method_label = {"dependence": "dependence with leakage", "plackett": "Plackett odds ratio"}[method]
    attrs = {
        "title": "geosdm interaction-likelihood layers",
        "geosdm:method": method, "geosdm:associations": assoc.source,
        "geosdm:network": net.name, "geosdm:model_hash": str(prob.attrs.get("geosdm:model_hash", "")),
        "geosdm:leakage": {k: float(v) for k, v in eps.items()},
        "geosdm:unmatched_nodes": list(match.unmatched_nodes),
    }
    return _Prepared(prob, plan, used, variables, coords, attrs, method_label)



def interaction_layers(
    probability: xr.Dataset | xr.DataArray | str | PathLike[str],
    network: Network | NetworkMatch,
    *,
    associations: Associations | None = None,
    method: Method = "dependence",
    independent: bool = True,
    edges: bool = True,
    regulation: bool = True,
    pest_pressure: bool = True,
    crops: Sequence[str] | None = None,
    sets: Mapping[str, Sequence[str]] | None = None,
    weighted: bool = False,
    aliases: Mapping[str, str] | None = None,
    variable: str = "probability",
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Lazy interaction-likelihood layers (see the module docstring) from species probabilities and a network.

    Parameters
    ----------
    probability
        ``(species, y, x)`` presence probabilities: a prediction Dataset, its ``probability`` DataArray or the
        path of a prediction store. Chunked by tile on ``y``/``x``; all species of a tile form one chunk.
    network
        A network (matched to the cube's species here with :func:`match_species`, ``aliases`` passed on) or
        an existing :class:`NetworkMatch`.
    associations
        Fitted co-occurrence parameters (:func:`fit_associations`). None: strict dependence (``eps = 0``,
        the network taken as complete) and ``psi = 1``.
    method
        Co-occurrence-aware model: ``"dependence"`` (leakage per consumer) or ``"plackett"`` (odds ratio per edge).
    independent
        Also return the ``*_independent`` versions.
    edges, regulation, pest_pressure
        Include ``joint``, ``enemy_*`` (pests with natural enemies), ``pest_*`` (crops with pests).
    crops
        Plants for ``pest_*`` (default: nodes whose ``guild`` is ``crop``, or every plant without a guild).
    sets
        Named sets of interactions (edge labels ``"<source>-><target>"``) for ``set_all`` / ``set_any``
        (dependence model only).
    weighted
        Expected numbers weighted by the edge weights (interaction strength) instead of counts.
    variable, storage_options
        Probability variable and fsspec options when ``probability`` is a Dataset or a path.

    Returns
    -------
    xarray.Dataset
        float32 layers on ``(edge | pest | crop | interaction_set, y, x)``, one Dask chunk per tile with the
        leading dim whole, the input's ``spatial_ref``; coordinates ``edge`` (labels), ``edge_source``,
        ``edge_target``, ``edge_interaction``, ``edge_weight``, ``pest``, ``crop``, ``interaction_set``;
        attrs ``geosdm:kind`` (``probability`` or ``expectation``) per variable.

    Raises
    ------
    InputError
        No interaction left after matching, unknown crops or set labels, sets with ``method="plackett"``.
    GridError
        The probabilities have no CRS.

    Example
    -------
    >>> net = read_network("edges.csv", "nodes.csv")  # doctest: +SKIP
    >>> layers = interaction_layers(open_predictions("p.zarr"), net)  # doctest: +SKIP
    >>> layers.joint.sel(edge="plant_01->pest_01")  # doctest: +SKIP
    """
    prep = _prepare(probability, network, associations=associations, method=method, independent=independent,
                    edges=edges, regulation=regulation, pest_pressure=pest_pressure, crops=crops, sets=sets,
                    weighted=weighted, aliases=aliases, variable=variable, storage_options=storage_options)
    prob, plan, used, variables, method_label = prep.prob, prep.plan, prep.used, prep.variables, prep.method_label
    stack = prob.sel(species=used).data
    if not isinstance(stack, da.Array):
        stack = da.from_array(stack, chunks=(-1, *(min(512, n) for n in stack.shape[1:])))
    stack = stack.rechunk({0: -1})
    n_layers = sum(n for _, _, n in variables)
    token = dask.base.tokenize(stack.name, plan)
    tiles = da.map_blocks(_tile, stack, plan=plan, chunks=((n_layers,), *stack.chunks[1:]), dtype=np.float32,
                          meta=np.empty((0, 0, 0), dtype=np.float32), name=f"geosdm-interactions-{token}")
    out = xr.Dataset(coords=prep.coords, attrs=prep.attrs)
    start = 0
    for name, dim, n in variables:
        base = name.removesuffix("_independent")
        kind = "expectation" if base.endswith("_expected") else "probability"
        what = _LONG_NAMES[base] + (", independence" if name.endswith("_independent") else f", {method_label}")
        attrs = {"long_name": what, "units": ("weight" if weighted else "count") if kind == "expectation" else "1",
                 "geosdm:kind": kind}
        if "spatial_ref" in out.coords:
            attrs["grid_mapping"] = "spatial_ref"
        out[name] = xr.DataArray(tiles[start:start + n], dims=(dim, "y", "x"), attrs=attrs)
        start += n
    return out
