"""Channel groups: run every rule, union the coupled indices, and split the result into groups.

How groups are made (pure: the model is only read):

1. Each node's rule (:data:`~passes.prune._rules.CHANNEL_RULES`; an op without a rule freezes
   everything it touches) returns couplings, freezes, parameter roles, consumers and shape edits.
2. Every index of every space is an element; each coupling joins index ``i`` of ``a`` with
   ``mapping(i)`` of ``b``. Connected components (a vectorized union-find) are *channel units*:
   the smallest sets of indices that can be removed together.
3. Units touching the same set of spaces form a *group* (the ``C`` output channels of a Conv, its
   BN, the next Conv's input channels, ...). A Concat output is split between the groups of its
   inputs; a Split input between the groups of its outputs.
4. A group is frozen, with reasons, when one of its spaces is frozen (graph input/output, op
   without a rule, user exclusion, unknown shape, ...), when no layer produces its channels
   (no ``out`` weight), or when it has a single channel. Index sets that touch no layer parameter
   (spatial axes, shape vectors, constant operands only) are not channel groups and are only
   counted.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from passes.prune._context import GraphContext
from passes.prune._rules import freeze_node, rule_for
from passes.prune._spaces import SOURCE_ROLES, ChannelSpace, Consumer, Freeze, ParamSlice, RuleResult, ShapeEdit

__all__ = ["Group", "GroupSet", "build_groups", "components"]

log = logging.getLogger(__name__)

#: Freeze categories listed first when a group has several reasons.
_FIRST_REASONS = ("graph input", "graph output", "excluded by the user")


@dataclasses.dataclass(frozen=True)
class Group:
    """Channels that must be pruned together.

    Attributes:
        id: position in the listing.
        size: number of channels (units).
        spaces: every space the group touches.
        params: the parameter slices (with their roles) among ``spaces``.
        indices: space -> ``int64[size, k]``: the ``k`` indices of each channel in that space.
        consumers: layers that read these channels through weights (reconstruction targets).
        frozen: the first reason it may not be pruned, or ``None``.
        reasons: every reason.
        category: the first reason without names (for counters), or ``None``.
    """

    id: int
    size: int
    spaces: tuple[ChannelSpace, ...]
    params: tuple[ParamSlice, ...]
    indices: Mapping[ChannelSpace, np.ndarray]
    consumers: tuple[Consumer, ...]
    frozen: str | None
    reasons: tuple[str, ...]
    category: str | None

    @property
    def prunable(self) -> bool:
        """Whether the group may lose channels."""
        return self.frozen is None

    def nodes(self, *roles: str) -> list[str]:
        """Names of the nodes whose parameters have one of ``roles`` in this group (in order)."""
        return list(dict.fromkeys(p.node_name for p in self.params if p.role in roles))


@dataclasses.dataclass(frozen=True)
class GroupSet:
    """The result of the analysis: groups plus what the apply step needs."""

    groups: tuple[Group, ...]
    edits: tuple[ShapeEdit, ...]
    ignored: int


def components(count: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of ``count`` elements joined by the edges ``u[k] — v[k]``.

    Returns each element's root (the smallest element of its component). Roots are hooked to
    the smaller root of each edge and paths are halved until no edge joins two roots.
    """
    parent = np.arange(count, dtype=np.int64)
    while len(u):
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ru[differ], rv[differ]), np.minimum(ru[differ], rv[differ]))
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
    return parent


# ----------------------------------------------------------------------------- rules


def _run_rules(ctx: GraphContext) -> list[RuleResult]:
    results = []
    for i, node in enumerate(ctx.nodes):
        rule = rule_for(node)
        if rule is None:
            results.append(freeze_node(ctx, i, f"no rule for {node.op_type}", f"node '{ctx.node_label(i)}'"))
            continue
        try:
            results.append(rule(ctx, i, node))
        except Exception as err:  # a rule bug must never break a model: freeze instead
            log.debug("rule for %s failed on %s: %s", node.op_type, ctx.node_label(i), err, exc_info=True)
            results.append(freeze_node(ctx, i, f"rule for {node.op_type} failed", f"{type(err).__name__}: {err}"))
    return results


def _boundary_freezes(ctx: GraphContext, exclude: Sequence[str]) -> list[Freeze]:
    freezes = [Freeze(n, None, "graph input", f"'{n}'") for n in ctx.index.graph_inputs | ctx.index.overridable]
    freezes += [Freeze(n, None, "graph output", f"'{n}'") for n in ctx.index.graph_outputs]
    freezes += [Freeze(n, None, "read by a subgraph", f"'{n}'") for n in ctx.index.subgraph_users]
    wanted = set(exclude)
    for i, node in enumerate(ctx.nodes):
        if node.name in wanted:
            freezes += [Freeze(n, None, "excluded by the user", f"node '{node.name}'") for n in [*node.input, *node.output] if n]
    return freezes


# ----------------------------------------------------------------------------- elements


class _Elements:
    """Spaces numbered, each index an element id ``base[space] + index``."""

    def __init__(self, spaces: Iterable[ChannelSpace]) -> None:
        self.spaces = list(dict.fromkeys(spaces))
        self.id = {s: k for k, s in enumerate(self.spaces)}
        sizes = np.array([s.size for s in self.spaces], dtype=np.int64)
        self.base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.count = int(self.base[-1])
        self.space_of = np.repeat(np.arange(len(self.spaces)), sizes)
        self.index_of = np.arange(self.count) - self.base[self.space_of]


def _edges(elements: _Elements, results: list[RuleResult], bad: list[Freeze]) -> tuple[np.ndarray, np.ndarray]:
    us, vs = [], []
    for result in results:
        for c in result.couplings:
            m = c.mapping
            source = np.arange(c.a.size, dtype=np.int64)
            targets = m.offset + source[:, None] * m.stride + np.arange(m.block)[None, :]
            if c.a.size and (targets.min() < 0 or targets.max() >= c.b.size):
                detail = f"{c.a.label()} ({c.a.size}) onto {c.b.label()} ({c.b.size})"
                bad += [Freeze(c.a.tensor, c.a.axis, "index mapping out of range", detail),
                        Freeze(c.b.tensor, c.b.axis, "index mapping out of range", detail)]
                continue
            us.append(elements.base[elements.id[c.a]] + np.repeat(source, m.block))
            vs.append(elements.base[elements.id[c.b]] + targets.ravel())
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(us), np.concatenate(vs)


def _unit_signatures(elements: _Elements, roots: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray]:
    """Unit roots, the tuple of space ids each touches, and elements sorted by (root, space, index)."""
    order = np.lexsort((elements.index_of, elements.space_of, roots))
    pairs = np.unique(roots * len(elements.spaces) + elements.space_of)
    unit_of_pair, space_of_pair = pairs // len(elements.spaces), pairs % len(elements.spaces)
    units, starts = np.unique(unit_of_pair, return_index=True)
    signatures = [tuple(part.tolist()) for part in np.split(space_of_pair, starts[1:])]
    return units, signatures, order


# ----------------------------------------------------------------------------- groups


def _group_indices(
    elements: _Elements, roots: np.ndarray, order: np.ndarray, sorted_roots: np.ndarray, unit_roots: list[int],
    signature: tuple[int, ...],
) -> dict[ChannelSpace, np.ndarray] | None:
    """Space -> ``[units, k]`` indices of a group, or ``None`` when units touch a space unevenly."""
    starts = np.searchsorted(sorted_roots, unit_roots)
    ends = np.searchsorted(sorted_roots, unit_roots, "right")
    picked = np.concatenate([order[a:b] for a, b in zip(starts, ends)])
    rank = {r: k for k, r in enumerate(unit_roots)}
    unit_rank = np.array([rank[r] for r in roots[picked].tolist()], dtype=np.int64)
    out: dict[ChannelSpace, np.ndarray] = {}
    for sid in signature:
        mask = elements.space_of[picked] == sid
        ranks, idx = unit_rank[mask], elements.index_of[picked][mask]
        arranged = idx[np.lexsort((idx, ranks))]
        if len(arranged) % len(unit_roots):
            return None
        out[elements.spaces[sid]] = arranged.reshape(len(unit_roots), -1)
    return out


def _freeze_table(elements: _Elements, freezes: Iterable[Freeze]) -> dict[int, list[Freeze]]:
    by_tensor: dict[str, list[int]] = defaultdict(list)
    for sid, space in enumerate(elements.spaces):
        by_tensor[space.tensor].append(sid)
    frozen: dict[int, list[Freeze]] = defaultdict(list)
    for f in freezes:
        for sid in by_tensor.get(f.tensor, ()):
            if f.axis is None or elements.spaces[sid].axis == f.axis:
                frozen[sid].append(f)
    return frozen


def _priority(freeze: Freeze) -> int:
    return _FIRST_REASONS.index(freeze.category) if freeze.category in _FIRST_REASONS else len(_FIRST_REASONS)


def _reasons(freezes: list[Freeze], params: Sequence[ParamSlice], size: int) -> tuple[list[str], list[str]]:
    """All reasons (interface and user first) and their categories, in the same order."""
    ordered = sorted(freezes, key=_priority)
    reasons = list(dict.fromkeys(f.reason for f in ordered))
    categories = list(dict.fromkeys(f.category for f in ordered))
    if not any(p.role in SOURCE_ROLES for p in params):
        reasons.append("no layer produces these channels")
        categories.append("no layer produces these channels")
    if size <= 1:
        reasons.append("a single channel")
        categories.append("a single channel")
    return reasons, categories


def build_groups(model: onnx.ModelProto, ctx: GraphContext, *, exclude: Sequence[str] = ()) -> GroupSet:
    """Run the rules over ``model``'s main graph and return its channel groups."""
    results = _run_rules(ctx)
    params = {p.space: p for r in results for p in r.params}
    spaces = [s for r in results for c in r.couplings for s in (c.a, c.b)] + list(params)
    elements = _Elements(spaces)
    freezes = [f for r in results for f in r.freezes] + _boundary_freezes(ctx, exclude)
    u, v = _edges(elements, results, freezes)
    roots = components(elements.count, u, v)
    unit_roots, signatures, order = _unit_signatures(elements, roots)
    by_signature: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for root, signature in zip(unit_roots.tolist(), signatures):
        by_signature[signature].append(root)
    frozen = _freeze_table(elements, freezes)
    consumers = [c for r in results for c in r.consumers]
    sorted_roots = roots[order]
    groups: list[Group] = []
    ignored = 0
    for signature, roots_of_group in by_signature.items():
        group_params = [params[elements.spaces[s]] for s in signature if elements.spaces[s] in params]
        if all(p.role == "operand" for p in group_params):  # no layer: spatial axes, shape vectors
            ignored += 1
            continue
        indices = _group_indices(elements, roots, order, sorted_roots, roots_of_group, signature)
        group_freezes = [f for s in signature for f in frozen.get(s, [])]
        if indices is None:
            group_freezes.append(Freeze("", None, "irregular index mapping"))
            indices = {}
        reasons, categories = _reasons(group_freezes, group_params, len(roots_of_group))
        members = {elements.spaces[s] for s in signature}
        groups.append(Group(
            id=0, size=len(roots_of_group), spaces=tuple(elements.spaces[s] for s in signature),
            params=tuple(group_params), indices=indices,
            consumers=tuple(c for c in consumers if c.data in members and c.weight in members),
            frozen=reasons[0] if reasons else None, reasons=tuple(reasons),
            category=categories[0] if categories else None,
        ))
    groups.sort(key=lambda g: (min(p.space.user for p in g.params), g.spaces[0].tensor, g.spaces[0].axis))
    groups = [dataclasses.replace(g, id=k) for k, g in enumerate(groups)]
    edits = tuple(e for r in results for e in r.edits)
    return GroupSet(tuple(groups), edits, ignored)
