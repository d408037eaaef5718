"""Clean-up rewrites of simplify: pass-through removal, initializer dedup, dead-value removal.

- **Identity / inference Dropout removal**: readers of ``y = Identity(x)`` read ``x``. When
  ``y`` is a graph output, ``x``'s producer is renamed to output ``y`` instead, so output names
  are kept; from a graph input or initializer straight to a graph output, the node stays.
  Dropout is an identity when it cannot be in training mode (opset < 7: ``is_test=1``;
  opset ≥ 12: ``training_mode`` absent or a constant false) and its mask is unread.
- **Initializer deduplication**: initializers of equal element type, shape and bytes (hashed,
  then compared in full) are merged into the first; those that are graph inputs (overridable)
  or graph outputs are left alone.
- **Cleanup**: unread initializers and unread ``Constant`` nodes are removed, stale
  ``value_info`` entries dropped, and the nodes topologically sorted.

Renames of read values follow into subgraphs (If/Loop/Scan) unless a subgraph defines the name
itself; graph outputs keep their names.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from passes._graph import (
    GraphIndex,
    is_onnx_domain,
    iter_subgraphs,
    remove_nodes,
    replace_uses,
    topological_sort,
)
from passes.simplify._common import skip

__all__ = ["remove_passthroughs", "dedup_initializers", "remove_dead", "sort_graph"]

logger = logging.getLogger(__name__)


def _rename_reads(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Make readers of each ``old`` name (in ``graph`` and its subgraphs) read ``mapping[old]``.

    Graph outputs of ``graph`` are not renamed; chains (a→b, b→c) are resolved.
    """
    resolved = {old: _resolve(mapping, old) for old in mapping}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in resolved:
                node.input[slot] = resolved[name]
        for sub in iter_subgraphs(node):
            _rename_in_scope(sub, resolved)


def _resolve(mapping: Mapping[str, str], name: str) -> str:
    seen = {name}
    while name in mapping:
        name = mapping[name]
        if name in seen:
            raise ValueError(f"rename cycle through '{name}'")
        seen.add(name)
    return name


def _rename_in_scope(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined.update(o for node in graph.node for o in node.output)
    visible = {old: new for old, new in mapping.items() if old not in defined}
    if not visible:
        return
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in visible:
                node.input[slot] = visible[name]
        for sub in iter_subgraphs(node):
            _rename_in_scope(sub, visible)
    for out in graph.output:
        if out.name in visible:
            out.name = visible[out.name]


def _passthrough_problem(node: onnx.NodeProto, index: GraphIndex, opset: int) -> str | None:
    """Why ``node`` (Identity or Dropout) is not a removable pass-through, or ``None``."""
    if not node.input or not node.input[0] or not node.output or not node.output[0]:
        return "malformed identity or dropout"
    if node.op_type == "Identity":
        return None
    attrs = {a.name: a for a in node.attribute}
    if opset < 7 and ("is_test" not in attrs or attrs["is_test"].i != 1):
        return "dropout not in test mode"
    if opset >= 12 and len(node.input) > 2 and node.input[2]:
        mode = index.constant(node.input[2])
        if mode is None:
            return "dropout training_mode not constant"
        if bool(np.any(mode)):
            return "dropout training_mode is true"
    if len(node.output) > 1 and node.output[1] and index.use_count(node.output[1]) > 0:
        return "dropout mask is used"
    return None


def _passthroughs(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [n for n in graph.node if n.op_type in ("Identity", "Dropout") and is_onnx_domain(n)]


def remove_passthroughs(
    graph: onnx.GraphProto, opset: int, skips: collections.Counter[str]
) -> tuple[int, int]:
    """Remove Identity and inference Dropout nodes; returns (identities, dropouts) removed."""
    index = GraphIndex.build(graph)
    removed: collections.Counter[str] = collections.Counter()
    doomed, mapping = [], {}
    for node in _passthroughs(graph):
        problem = _passthrough_problem(node, index, opset)
        if problem is not None:
            skip(skips, problem, node)
        elif node.output[0] not in index.graph_outputs:
            mapping[node.output[0]] = node.input[0]
            doomed.append(node)
            removed[node.op_type] += 1
    if doomed:
        _rename_reads(graph, mapping)
        remove_nodes(graph, doomed)
        logger.debug("removed %d pass-through nodes", len(doomed))
    removed.update(_remove_output_passthroughs(graph, opset, skips))
    return removed["Identity"], removed["Dropout"]


def _remove_output_passthroughs(
    graph: onnx.GraphProto, opset: int, skips: collections.Counter[str]
) -> collections.Counter[str]:
    """Remove pass-throughs writing graph outputs by renaming their input's producer's output.

    One at a time, with a fresh index each time: renames can make a later candidate ineligible
    (two outputs copied from one value keep the second Identity).
    """
    removed: collections.Counter[str] = collections.Counter()
    judged: set[str] = set()
    while True:
        index = GraphIndex.build(graph)
        todo = [
            n for n in _passthroughs(graph)
            if n.output and n.output[0] in index.graph_outputs and n.output[0] not in judged
        ]
        if not todo:
            return removed
        node = todo[0]
        judged.add(node.output[0])
        if _passthrough_problem(node, index, opset) is not None:
            continue  # already counted by the first sweep
        source, target, op_type = node.input[0], node.output[0], node.op_type
        if source not in index.producer:
            skip(skips, "identity from a graph input or initializer to a graph output", node)
            continue
        if source in index.graph_outputs:
            skip(skips, "identity between two graph outputs", node)
            continue
        remove_nodes(graph, [node])
        for producer in graph.node:  # remove_nodes copied the nodes: find the producer again
            for slot, name in enumerate(producer.output):
                if name == source:
                    producer.output[slot] = target
        replace_uses(graph, source, target)
        removed[op_type] += 1
        logger.debug("removed %s writing graph output '%s'", op_type, target)


def _tensor_bytes(tensor: onnx.TensorProto) -> bytes:
    if tensor.data_type == onnx.TensorProto.STRING:
        return b"\0".join(len(s).to_bytes(8, "little") + s for s in tensor.string_data)
    return np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes()


def dedup_initializers(graph: onnx.GraphProto, skips: collections.Counter[str]) -> int:
    """Merge initializers with equal type, shape and bytes into the first; returns merged count."""
    pinned = {v.name for v in graph.input} | {v.name for v in graph.output}
    groups: dict[tuple, list[onnx.TensorProto]] = collections.defaultdict(list)
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            skips["initializer with external data not deduplicated"] += 1
            continue
        digest = hashlib.sha256(_tensor_bytes(tensor)).digest()
        groups[(tensor.data_type, tuple(tensor.dims), digest)].append(tensor)
    mapping: dict[str, str] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        canon: list[tuple[onnx.TensorProto, bytes]] = []
        for tensor in group:
            if tensor.name in pinned:
                skips["duplicate initializer is a graph input or output"] += 1
                logger.debug("not deduplicating '%s': graph input or output", tensor.name)
                continue
            data = _tensor_bytes(tensor)
            same = next((c for c, c_data in canon if c_data == data), None)
            if same is None:
                canon.append((tensor, data))
            else:
                mapping[tensor.name] = same.name
                logger.debug("initializer '%s' duplicates '%s'", tensor.name, same.name)
    if mapping:
        _rename_reads(graph, mapping)
        kept = [t for t in graph.initializer if t.name not in mapping]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return len(mapping)


def remove_dead(graph: onnx.GraphProto) -> dict[str, int]:
    """Remove unread Constant nodes and initializers and stale value_info entries."""
    index = GraphIndex.build(graph)
    dead_constants = [
        n for n in graph.node
        if n.op_type == "Constant" and is_onnx_domain(n)
        and all(index.use_count(o) == 0 for o in n.output if o)
    ]
    constants_removed = remove_nodes(graph, dead_constants)
    index = GraphIndex.build(graph) if constants_removed else index
    inputs = {v.name for v in graph.input}
    kept = [t for t in graph.initializer if t.name in inputs or index.use_count(t.name) > 0]
    initializers_removed = len(graph.initializer) - len(kept)
    if initializers_removed:
        del graph.initializer[:]
        graph.initializer.extend(kept)
    defined = inputs | {t.name for t in graph.initializer}
    defined.update(o for n in graph.node for o in n.output)
    stale = [v for v in graph.value_info if v.name not in defined]
    for value in stale:
        graph.value_info.remove(value)
    return {
        "constant_nodes_removed": constants_removed,
        "initializers_removed": initializers_removed,
        "value_info_removed": len(stale),
    }


def sort_graph(graph: onnx.GraphProto) -> bool:
    """Topologically sort ``graph``; returns whether the order changed."""
    before = [tuple(n.output) for n in graph.node]
    topological_sort(graph)
    return before != [tuple(n.output) for n in graph.node]
