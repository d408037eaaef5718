"""Graph helpers over a raw ``onnx.GraphProto``: index, names, constants, order, removal.

The index is rebuilt at the start of every pass and never trusted after the pass mutates the
graph. Subgraphs (If/Loop/Scan bodies) are visited for *names* and for *uses* of outer values,
so that a rewrite of the main graph never renames or removes something a subgraph reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import onnx
from onnx import numpy_helper

from passes._errors import UnknownNameError

__all__ = [
    "GraphIndex",
    "NameAllocator",
    "is_onnx_domain",
    "iter_subgraphs",
    "subgraph_outer_inputs",
    "constant_value",
    "topological_sort",
    "remove_nodes",
    "replace_uses",
    "opset_version",
    "all_nodes",
    "check_names",
]

_ONNX_DOMAINS = ("", "ai.onnx")


def is_onnx_domain(node: onnx.NodeProto) -> bool:
    """Whether ``node`` belongs to the default ONNX operator set."""
    return node.domain in _ONNX_DOMAINS


def opset_version(model: onnx.ModelProto, domain: str = "") -> int | None:
    """The imported opset version of ``domain`` (``""`` means the default ONNX domain)."""
    aliases = _ONNX_DOMAINS if domain in _ONNX_DOMAINS else (domain,)
    for entry in model.opset_import:
        if entry.domain in aliases:
            return entry.version
    return None


def iter_subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """Yield every graph attribute of ``node`` (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and, recursively, of its subgraphs (If branches, Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for sub in iter_subgraphs(node):
            yield from all_nodes(sub)


def check_names(
    model: onnx.ModelProto,
    *,
    nodes: Mapping[str, Sequence[str]] = MappingProxyType({}),
    ops: Mapping[str, Sequence[str]] = MappingProxyType({}),
) -> None:
    """Check that every node name (``nodes``: flag → names given with it) is a node of ``model``
    and every op type (``ops``: flag → op types) occurs in it, subgraphs included.

    Raises:
        UnknownNameError: naming the flag, the name and up to three of the closest names.
    """
    found = list(all_nodes(model.graph))
    for kind, given, known in (("a node", nodes, {n.name for n in found if n.name}),
                               ("an op type", ops, {n.op_type for n in found})):
        for flag, names in given.items():
            for name in names:
                if name not in known:
                    near = difflib.get_close_matches(name, sorted(known), n=3)
                    hint = f" (closest: {', '.join(repr(n) for n in near)})" if near else ""
                    raise UnknownNameError(f"{flag} {name!r} is not {kind} of the model{hint}")


def _graph_defined_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in graph.input}
    names.update(t.name for t in graph.initializer)
    names.update(t.name for t in graph.sparse_initializer if t.values.name)
    for node in graph.node:
        names.update(o for o in node.output if o)
    return names


def subgraph_outer_inputs(graph: onnx.GraphProto) -> set[str]:
    """Names ``graph`` (and its nested subgraphs) read from enclosing scopes."""
    defined = _graph_defined_names(graph)
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for sub in iter_subgraphs(node):
            used.update(subgraph_outer_inputs(sub))
    used.update(o.name for o in graph.output)
    return used - defined


def _all_names(graph: onnx.GraphProto) -> Iterator[str]:
    yield from (v.name for v in graph.input)
    yield from (v.name for v in graph.output)
    yield from (v.name for v in graph.value_info)
    yield from (t.name for t in graph.initializer)
    for node in graph.node:
        if node.name:
            yield node.name
        yield from node.input
        yield from node.output
        for sub in iter_subgraphs(node):
            yield from _all_names(sub)


@dataclasses.dataclass
class GraphIndex:
    """Producer/consumer maps of one graph, built once per pass.

    Attributes:
        graph: the indexed graph.
        producer: value name -> the node that outputs it.
        consumers: value name -> list of ``(node, input slot)`` in this graph.
        subgraph_users: value name -> nodes whose subgraphs read it from this scope.
        initializers: initializer name -> TensorProto.
        graph_inputs: names of the graph's inputs (excluding initializers).
        graph_outputs: names of the graph's outputs.
        overridable: initializers also listed as graph inputs — defaults the caller may
            replace at run time, so they are not constants.
    """

    graph: onnx.GraphProto
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
    subgraph_users: dict[str, list[onnx.NodeProto]]
    initializers: dict[str, onnx.TensorProto]
    graph_inputs: set[str]
    graph_outputs: set[str]
    overridable: set[str]

    @classmethod
    def build(cls, graph: onnx.GraphProto) -> GraphIndex:
        """Index ``graph``; O(nodes + edges)."""
        producer: dict[str, onnx.NodeProto] = {}
        consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        subgraph_users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                if out:
                    producer[out] = node
            for slot, name in enumerate(node.input):
                if name:
                    consumers[name].append((node, slot))
            for sub in iter_subgraphs(node):
                for name in subgraph_outer_inputs(sub):
                    subgraph_users[name].append(node)
        initializers = {t.name: t for t in graph.initializer}
        listed_inputs = {v.name for v in graph.input}
        return cls(
            graph=graph,
            producer=producer,
            consumers=dict(consumers),
            subgraph_users=dict(subgraph_users),
            initializers=initializers,
            graph_inputs=listed_inputs - set(initializers),
            graph_outputs={v.name for v in graph.output},
            overridable=listed_inputs & set(initializers),
        )

    def users(self, name: str) -> list[onnx.NodeProto]:
        """Every node reading ``name``: direct consumers and nodes whose subgraphs read it."""
        direct = [node for node, _ in self.consumers.get(name, [])]
        return direct + self.subgraph_users.get(name, [])

    def use_count(self, name: str) -> int:
        """Number of reads of ``name``, counting a graph output as one read."""
        return len(self.users(name)) + (1 if name in self.graph_outputs else 0)

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant: an initializer that is not also a graph
        input (those are overridable defaults), or a Constant node's output."""
        if not name or name in self.overridable:
            return None
        return constant_value(name, initializers=self.initializers, producer=self.producer)


def constant_value(
    name: str,
    *,
    initializers: dict[str, onnx.TensorProto],
    producer: dict[str, onnx.NodeProto],
) -> np.ndarray | None:
    """Return ``name``'s value when it is an initializer or the output of a Constant node."""
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producer.get(name)
    if node is None or node.op_type != "Constant" or not is_onnx_domain(node):
        return None
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if attr.name == "value_floats":
        return np.array(list(attr.floats), dtype=np.float32)
    if attr.name == "value_int":
        return np.array(attr.i, dtype=np.int64)
    if attr.name == "value_ints":
        return np.array(list(attr.ints), dtype=np.int64)
    return None  # sparse_value and string forms are not needed by any pass


class NameAllocator:
    """Hands out names that are unique across a model's main graph and all its subgraphs."""

    _SANITIZE = re.compile(r"[^A-Za-z0-9_.:/-]+")

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._taken: set[str] = set(_all_names(graph))

    def reserve(self, name: str) -> None:
        """Mark ``name`` as used (e.g. a name chosen elsewhere)."""
        self._taken.add(name)

    def fresh(self, hint: str) -> str:
        """Return a new unique name derived from ``hint`` and reserve it."""
        base = self._SANITIZE.sub("_", hint) or "v"
        name, k = base, 1
        while name in self._taken:
            name = f"{base}__{k}"
            k += 1
        self._taken.add(name)
        return name


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (stable).

    Values read by a node's subgraphs count as that node's inputs.

    Raises:
        ValueError: the graph has a cycle or reads a value nothing defines.
    """
    nodes = list(graph.node)
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    available.add("")
    producer_of: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer_of[out] = i
    waiting_on: dict[int, set[int]] = {}
    dependents: dict[int, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        reads = set(node.input)
        for sub in iter_subgraphs(node):
            reads |= subgraph_outer_inputs(sub)
        deps = {producer_of[r] for r in reads if r not in available and r in producer_of}
        missing = [r for r in reads if r not in available and r not in producer_of]
        if missing:
            raise ValueError(f"node '{node.name or node.op_type}' reads undefined '{missing[0]}'")
        waiting_on[i] = deps
        for d in deps:
            dependents[d].append(i)
    ready = [i for i in range(len(nodes)) if not waiting_on[i]]  # a heap: lowest index first
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependents[i]:
            waiting_on[j].discard(i)
            if not waiting_on[j]:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle")
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def remove_nodes(graph: onnx.GraphProto, doomed: Iterable[onnx.NodeProto]) -> int:
    """Remove the given nodes (by identity) in one rebuild of the node list; returns the count."""
    ids = {id(n) for n in doomed}
    if not ids:
        return 0
    kept = [n for n in graph.node if id(n) not in ids]
    removed = len(graph.node) - len(kept)
    kept_copies = [onnx.NodeProto() for _ in kept]
    for dst, src in zip(kept_copies, kept):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(kept_copies)
    return removed


def _rename_in_subgraph(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old in _graph_defined_names(graph):
        return  # shadowed inside this scope
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name == old:
                node.input[slot] = new
        for sub in iter_subgraphs(node):
            _rename_in_subgraph(sub, old, new)
    for out in graph.output:
        if out.name == old:
            out.name = new


def replace_uses(graph: onnx.GraphProto, old: str, new: str) -> int:
    """Make every reader of ``old`` in ``graph`` (and its subgraphs) read ``new`` instead.

    Graph outputs are not renamed (the model's interface is kept); returns the number of
    direct input slots rewritten.
    """
    count = 0
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name == old:
                node.input[slot] = new
                count += 1
        for sub in iter_subgraphs(node):
            _rename_in_subgraph(sub, old, new)
    return count
