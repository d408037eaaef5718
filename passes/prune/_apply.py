"""Apply a removal plan: slice parameters, rewrite shape constants, drop stale value_info.

Given the channels to remove per group, every space of the group loses the indices of those
channels. Then, in place on the given model:

1. each parameter use is ``np.take``-n along every pruned axis; an initializer read by several
   uses that now need different slices gets one new initializer per distinct slice (names from
   :class:`~passes._graph.NameAllocator`), so nothing shared is sliced for someone else;
2. each :class:`~passes.prune._spaces.ShapeEdit` is recomputed from the kept indices (Reshape
   targets, Split sizes, Slice starts/ends, Resize sizes, a depthwise Conv's ``group``) and
   written back (to a new initializer when the old one is shared), Split sizes being added when
   the node had none;
3. ``value_info`` entries of tensors whose shape changed are dropped and re-inferred.

Activations need nothing else: their sizes follow from the sliced parameters.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from passes._graph import GraphIndex, NameAllocator
from passes.prune._groups import GroupSet
from passes.prune._spaces import ChannelSpace, ShapeEdit

__all__ = ["Applied", "kept_indices", "apply_removal"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Applied:
    """What the apply step did.

    Attributes:
        kept: every space that lost indices -> the indices it keeps (sorted).
        renamed: ``(node index, slot)`` -> the new initializer name given to that use.
        edits: number of shape constants rewritten.
    """

    kept: Mapping[ChannelSpace, np.ndarray]
    renamed: Mapping[tuple[int, int], str]
    edits: int


def kept_indices(groups: GroupSet, removal: Mapping[int, np.ndarray]) -> dict[ChannelSpace, np.ndarray]:
    """Space -> kept indices, for every space that loses at least one index."""
    removed: dict[ChannelSpace, list[np.ndarray]] = defaultdict(list)
    by_id = {g.id: g for g in groups.groups}
    for gid, units in removal.items():
        if len(units) == 0:
            continue
        for space, idx in by_id[gid].indices.items():
            removed[space].append(idx[units].reshape(-1))
    return {s: np.setdiff1d(np.arange(s.size), np.concatenate(parts)) for s, parts in removed.items()}


def _slice_params(model: onnx.ModelProto, kept: Mapping[ChannelSpace, np.ndarray]) -> dict[tuple[int, int], str]:
    graph = model.graph
    index = GraphIndex.build(graph)
    node_pos = {id(n): k for k, n in enumerate(graph.node)}
    per_use: dict[str, dict[tuple[int, int], list[tuple[int, np.ndarray]]]] = defaultdict(lambda: defaultdict(list))
    for space, keep in kept.items():
        if space.is_param:
            per_use[space.tensor][(space.user, space.slot)].append((space.axis, keep))
    names = NameAllocator(graph)
    renamed: dict[tuple[int, int], str] = {}
    for name, uses in per_use.items():
        original = numpy_helper.to_array(index.initializers[name])
        all_uses = [(node_pos[id(n)], slot) for n, slot in index.consumers.get(name, [])]
        results: dict[bytes, tuple[np.ndarray, list[tuple[int, int]]]] = {}
        for use in all_uses:
            ops = sorted(uses.get(use, []), key=lambda t: t[0])
            key = b"|".join(f"{a}:".encode() + k.tobytes() for a, k in ops)
            if key not in results:
                value = original
                for axis, keep in ops:
                    value = np.take(value, keep, axis=axis)
                results[key] = (value, [])
            results[key][1].append(use)
        owner = b"" if b"" in results else next(iter(results))
        for key, (value, users) in results.items():
            if key == owner:
                index.initializers[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
                continue
            fresh = names.fresh(f"{name}_pruned")
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), fresh))
            for node_k, slot in users:
                graph.node[node_k].input[slot] = fresh
                renamed[(node_k, slot)] = fresh
    return renamed


def _new_value(edit: ShapeEdit, kept: Mapping[ChannelSpace, np.ndarray]) -> int:
    keep = kept.get(edit.space)
    if keep is None:
        return edit.old
    if edit.kind == "kept":
        return int(len(keep))
    if edit.kind == "count_below":
        return int(np.sum(keep < edit.old))
    return int(len(keep) * (edit.old // edit.space.size))  # "scale"


def _write_ints(model: onnx.ModelProto, node_k: int, slot: int, attribute: str, values: list[int], names: NameAllocator) -> None:
    node = model.graph.node[node_k]
    if slot < 0:
        for attr in node.attribute:
            if attr.name == attribute:
                if attr.type == onnx.AttributeProto.INT:
                    attr.i = values[0]
                else:
                    del attr.ints[:]
                    attr.ints.extend(values)
                return
        node.attribute.append(helper.make_attribute(attribute, values))
        return
    index = GraphIndex.build(model.graph)
    name = node.input[slot] if slot < len(node.input) else ""
    dtype = numpy_helper.to_array(index.initializers[name]).dtype if name in index.initializers else np.int64
    array = np.asarray(values, dtype=dtype)
    if name and name in index.initializers and index.use_count(name) == 1:
        index.initializers[name].CopyFrom(numpy_helper.from_array(array, name))
        return
    fresh = names.fresh(f"{name or node.name or node.op_type}_pruned")
    model.graph.initializer.append(numpy_helper.from_array(array, fresh))
    while len(node.input) <= slot:
        node.input.append("")
    node.input[slot] = fresh
    for k in [k for k, a in enumerate(node.attribute) if a.name == "num_outputs"][::-1]:
        del node.attribute[k]


def _current_ints(model: onnx.ModelProto, node_k: int, slot: int, attribute: str) -> list[int] | None:
    node = model.graph.node[node_k]
    if slot < 0:
        for attr in node.attribute:
            if attr.name == attribute:
                return [int(attr.i)] if attr.type == onnx.AttributeProto.INT else [int(v) for v in attr.ints]
        return None
    name = node.input[slot] if slot < len(node.input) else ""
    init = next((t for t in model.graph.initializer if t.name == name), None) if name else None
    return None if init is None else [int(v) for v in numpy_helper.to_array(init).reshape(-1)]


def _rewrite_constants(model: onnx.ModelProto, groups: GroupSet, kept: Mapping[ChannelSpace, np.ndarray]) -> int:
    by_target: dict[tuple[int, int, str], list[ShapeEdit]] = defaultdict(list)
    for edit in groups.edits:
        by_target[(edit.node, edit.slot, edit.attribute)].append(edit)
    names = NameAllocator(model.graph)
    written = 0
    for (node_k, slot, attribute), edits in by_target.items():
        if not any(e.space in kept for e in edits):
            continue
        values = _current_ints(model, node_k, slot, attribute)
        if values is None:  # Split without sizes: write them all
            values = [e.old for e in sorted(edits, key=lambda e: e.position)]
        new = list(values)
        for edit in edits:
            new[max(edit.position, 0)] = _new_value(edit, kept)
        if new != values:
            _write_ints(model, node_k, slot, attribute, new, names)
            written += 1
    return written


def _refresh_value_info(model: onnx.ModelProto, kept: Mapping[ChannelSpace, np.ndarray]) -> None:
    changed = {s.tensor for s in kept}
    stale = [v.name for v in model.graph.value_info if v.name in changed]
    if not stale:
        return
    kept_info = [v for v in model.graph.value_info if v.name not in changed]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_info)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as err:  # value_info is optional; leave it out when inference fails
        log.debug("shape inference after pruning failed: %s", err)
        return
    fresh = {v.name: v for v in inferred.graph.value_info if v.name in set(stale)}
    model.graph.value_info.extend(fresh[n] for n in stale if n in fresh)


def apply_removal(model: onnx.ModelProto, groups: GroupSet, removal: Mapping[int, np.ndarray]) -> Applied:
    """Remove the planned channels from ``model`` in place (see the module docstring)."""
    kept = kept_indices(groups, removal)
    renamed = _slice_params(model, kept)
    edits = _rewrite_constants(model, groups, kept)
    _refresh_value_info(model, kept)
    return Applied(kept, renamed, edits)
