"""Channel rules of the ops that move, cut, join or reduce axes.

- ``Concat(axis a)``: input ``k`` couples to the output with an *offset mapping* (its index ``i``
  is the output's ``offset_k + i``); other axes are identities.
- ``Split(axis a)`` / ``Slice`` on ``a`` (step 1, constant bounds): output index ``j`` is the
  input's ``offset + j``; the Split sizes and the Slice starts/ends are rewritten after pruning.
- ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``: see :mod:`passes.prune._rules_reshape`.
- ``Transpose``: ``X[perm[k]] ~ Y[k]``.
- ``Resize``/``Upsample`` (channel scale 1, or constant sizes, rewritten), ``Pad`` (no padding on
  the axis): ``X[k] ~ Y[k]``.
- ``Softmax``-like and ``Reduce*``: the normalized or reduced axes are frozen, the others
  couple. ``Shape``/``Size`` only read dims, which follow the pruned sizes at run time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from passes.prune._context import GraphContext
from passes.prune._rule_helpers import couple_identity, freeze_node, input_space
from passes.prune._rules_reshape import RESHAPE_RULES
from passes.prune._spaces import IndexMap, RuleResult, ShapeEdit

__all__ = ["SHAPE_RULES"]


# ----------------------------------------------------------------------------- Concat / Split / Slice


def _concat(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    y = node.output[0]
    rank = ctx.rank(y)
    if rank is None or any(ctx.rank(n) != rank for n in node.input if n):
        return freeze_node(ctx, i, "shape unknown")
    axis = int(ctx.attr(node, "axis", 0)) % rank
    sizes = [ctx.dim(n, axis) for n in node.input]
    y_axis = ctx.act(y, axis)
    if y_axis is None or None in sizes or sum(sizes) != y_axis.size:
        return freeze_node(ctx, i, "shape unknown")
    r = RuleResult()
    offset = 0
    for slot, size in enumerate(sizes):
        for k in range(rank):
            if k == axis:
                part = input_space(ctx, r, i, slot, k)
                if part is not None and size > 0:
                    r.couple(part, y_axis, IndexMap(offset=offset))
            else:
                couple_identity(ctx, r, i, slot, k, y, k)
        offset += size
    return r


def _split(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x = node.input[0]
    rank = ctx.rank(x)
    if rank is None:
        return freeze_node(ctx, i, "shape unknown")
    axis = int(ctx.attr(node, "axis", 0)) % rank
    try:
        sizes = ctx.ints_input_or_attr(node, 1, "split")
    except LookupError:
        return freeze_node(ctx, i, "Split sizes computed in the graph")
    outputs = list(node.output)
    x_axis = ctx.act(x, axis)
    if x_axis is None:
        return freeze_node(ctx, i, "shape unknown")
    if sizes is None:
        if x_axis.size % len(outputs):
            return freeze_node(ctx, i, "uneven Split without sizes")
        sizes = [x_axis.size // len(outputs)] * len(outputs)
    r = RuleResult()
    slot, attribute = (1, "") if ctx.opset >= 13 else (-1, "split")
    offset = 0
    for k, (out, size) in enumerate(zip(outputs, sizes)):
        part = ctx.act(out, axis) if out else None
        if part is not None and part.size == size:
            r.couple(part, x_axis, IndexMap(offset=offset))
            r.edits.append(ShapeEdit(i, slot, attribute, k, "kept", part, size))
        elif out:
            return freeze_node(ctx, i, "shape unknown")
        for other in range(rank):
            if other != axis and out:
                couple_identity(ctx, r, i, 0, other, out, other)
        offset += size
    return r


def _slice_bounds(ctx: GraphContext, node: onnx.NodeProto, rank: int) -> list[tuple[int, int, int, int, int]] | None:
    """``(axis, start, end, step, position)`` per sliced axis, or ``None`` when not constant."""
    try:
        if ctx.opset >= 10:
            starts = ctx.ints_input_or_attr(node, 1, "")
            ends = ctx.ints_input_or_attr(node, 2, "")
            axes = ctx.ints_input_or_attr(node, 3, "")
            steps = ctx.ints_input_or_attr(node, 4, "")
        else:
            starts, ends = ctx.attr(node, "starts"), ctx.attr(node, "ends")
            axes, steps = ctx.attr(node, "axes"), None
    except LookupError:
        return None
    if starts is None or ends is None:
        return None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    return [(int(a) % rank, int(s), int(e), int(t), k) for k, (a, s, e, t) in enumerate(zip(axes, starts, ends, steps))]


def _slice(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    bounds = _slice_bounds(ctx, node, rank) if rank is not None else None
    if bounds is None:
        return freeze_node(ctx, i, "Slice bounds computed in the graph" if rank else "shape unknown")
    sliced = {axis: (start, end, step, pos) for axis, start, end, step, pos in bounds}
    r = RuleResult()
    by_slot = (1, 2) if ctx.opset >= 10 else (-1, -1)
    for axis in range(rank):
        if axis not in sliced:
            couple_identity(ctx, r, i, 0, axis, y, axis)
            continue
        start, end, step, pos = sliced[axis]
        x_axis, y_axis = ctx.act(x, axis), ctx.act(y, axis)
        if x_axis is None or y_axis is None or step != 1:
            reason = "Slice with a step" if step != 1 else "shape unknown"
            r.freeze(x, axis, reason, f"'{ctx.node_label(i)}'")
            r.freeze(y, axis, reason, f"'{ctx.node_label(i)}'")
            continue
        size = x_axis.size
        start = min(max(start + size if start < 0 else start, 0), size)
        end = min(max(end + size if end < 0 else end, 0), size)
        if y_axis.size != max(0, end - start):
            r.freeze(x, axis, "sizes differ", f"'{ctx.node_label(i)}'")
            continue
        r.couple(y_axis, x_axis, IndexMap(offset=start))
        r.edits.append(ShapeEdit(i, by_slot[0], "starts", pos, "count_below", x_axis, start))
        r.edits.append(ShapeEdit(i, by_slot[1], "ends", pos, "count_below", x_axis, end))
    return r


def _transpose(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    if rank is None:
        return freeze_node(ctx, i, "shape unknown")
    perm = [int(p) for p in ctx.attr(node, "perm", list(range(rank))[::-1])]
    r = RuleResult()
    for k, p in enumerate(perm):
        couple_identity(ctx, r, i, 0, p, y, k)
    return r


# ----------------------------------------------------------------------------- Resize / Pad


def _resize(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    if rank is None or rank < 2:
        return freeze_node(ctx, i, "shape unknown")
    if node.op_type == "Upsample" or ctx.opset < 11:
        scale_slot, sizes_slot = 1, -1
    else:
        scale_slot, sizes_slot = 2, 3
    r = RuleResult()
    label = f"'{ctx.node_label(i)}'"
    scales = ctx.attr(node, "scales") if scale_slot >= len(node.input) else None
    if scales is None and scale_slot < len(node.input) and node.input[scale_slot]:
        scales = ctx.const(node.input[scale_slot])
        if scales is None:
            return freeze_node(ctx, i, "Resize scales computed in the graph")
    sizes = None
    if 0 <= sizes_slot < len(node.input) and node.input[sizes_slot]:
        sizes = ctx.const(node.input[sizes_slot])
        if sizes is None:
            return freeze_node(ctx, i, "Resize sizes computed in the graph")
    for axis in (0, 1):
        if scales is not None and np.asarray(scales).size == rank and float(np.asarray(scales).reshape(-1)[axis]) != 1.0:
            r.freeze(x, axis, "Resize scales this axis", label)
            r.freeze(y, axis, "Resize scales this axis", label)
            continue
        a, b = ctx.act(x, axis), ctx.act(y, axis)
        if a is None or b is None or a.size != b.size:
            if axis == 1:
                return freeze_node(ctx, i, "shape unknown")
            continue
        r.couple(a, b)
        if sizes is not None and int(np.asarray(sizes).reshape(-1)[axis]) == b.size:
            r.edits.append(ShapeEdit(i, sizes_slot, "", axis, "kept", b, b.size))
    return r


def _pad(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    if rank is None or (len(node.input) > 3 and node.input[3]):
        return freeze_node(ctx, i, "shape unknown" if rank is None else "Pad with axes")
    try:
        pads = ctx.ints_input_or_attr(node, 1, "pads") if ctx.opset >= 11 else ctx.attr(node, "pads")
    except LookupError:
        return freeze_node(ctx, i, "Pad amounts computed in the graph")
    pads = list(pads or [0] * 2 * rank)
    r = RuleResult()
    for axis in range(rank):
        if pads[axis] or pads[axis + rank]:
            r.freeze(x, axis, "padded axis", f"'{ctx.node_label(i)}'")
            r.freeze(y, axis, "padded axis", f"'{ctx.node_label(i)}'")
        else:
            couple_identity(ctx, r, i, 0, axis, y, axis)
    return r


# ----------------------------------------------------------------------------- across-axis ops


def _couple_except(ctx: GraphContext, i: int, x: str, y: str, across: set[int], keepdims: bool, category: str) -> RuleResult:
    """Freeze ``x`` on the axes in ``across``; couple the others to ``y`` (shifted when not kept)."""
    r = RuleResult()
    rank = ctx.rank(x)
    shift = 0
    for axis in range(rank or 0):
        if axis in across:
            r.freeze(x, axis, category, f"'{ctx.node_label(i)}'")
            if keepdims:
                r.freeze(y, axis, category, f"'{ctx.node_label(i)}'")
            else:
                shift += 1
            continue
        couple_identity(ctx, r, i, 0, axis, y, axis - shift)
    return r


def _softmax(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    if rank is None:
        return freeze_node(ctx, i, "shape unknown")
    default = -1 if ctx.opset >= 13 else 1
    axis = int(ctx.attr(node, "axis", default)) % rank
    across = {axis} if ctx.opset >= 13 else set(range(axis, rank))
    return _couple_except(ctx, i, x, y, across, True, f"normalized across by {node.op_type}")


def _reduce(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    if rank is None:
        return freeze_node(ctx, i, "shape unknown")
    try:
        axes = ctx.ints_input_or_attr(node, 1, "axes")
    except LookupError:
        return freeze_node(ctx, i, "reduced axes computed in the graph")
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [int(ctx.attr(node, "axis", 0))]
    if not axes:
        if ctx.attr(node, "noop_with_empty_axes", 0):
            return _couple_except(ctx, i, x, y, set(), True, "")
        axes = list(range(rank))
    keepdims = bool(ctx.attr(node, "keepdims", 1))
    return _couple_except(ctx, i, x, y, {a % rank for a in axes}, keepdims, f"reduced by {node.op_type}")


def _reads_dims_only(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    """``Shape``/``Size``: the output is data computed from dims, which follow the pruned sizes."""
    return RuleResult()


_REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")

#: op type -> rule for the shape-moving ops (merged into ``CHANNEL_RULES``).
SHAPE_RULES: dict[str, Callable[[GraphContext, int, onnx.NodeProto], RuleResult]] = {
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    **RESHAPE_RULES,
    "Transpose": _transpose,
    "Resize": _resize,
    "Upsample": _resize,
    "Pad": _pad,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Hardmax": _softmax,
    "Shape": _reads_dims_only,
    "Size": _reads_dims_only,
    **{op: _reduce for op in _REDUCE_OPS},
}
