"""Channel rules of the layers: Conv, ConvTranspose, Gemm, MatMul, normalizations, element-wise ops.

Every rule takes ``(ctx, index, node)`` and returns a :class:`RuleResult`. The whole table,
including the shape-moving ops of :mod:`passes.prune._rules_shape`, is :data:`CHANNEL_RULES`;
an op that is not in it freezes every tensor it touches (:func:`freeze_node`). Rules:

- ``Conv`` (``group == 1``): producer ``W[0] ~ B[0] ~ Y[1]``; consumer ``X[1] ~ W[1]``.
  Depthwise (``group == C_in``, ``W[1] == 1``, multiplier ``m = C_out / C_in``):
  ``X[1] ~ W[0] ~ B[0] ~ Y[1]`` as one group, input channel ``c`` owning outputs ``c·m … c·m+m−1``;
  the ``group`` attribute is rewritten to the new channel count. Grouped ``1 < group < C_in``:
  frozen (v1 keeps whole grouped convs).
- ``ConvTranspose`` (``W`` is ``[C_in, C_out/group, k…]``): consumer ``X[1] ~ W[0]``; producer
  ``W[1] ~ B[0] ~ Y[1]``; depthwise all one group; grouped frozen.
- ``Gemm``: consumer ``A[k] ~ B[k]``, producer ``B[n] ~ C[last] ~ Y[1]`` (``transA``/``transB``
  respected), batch ``A[m] ~ Y[0]``; ``B`` must be a constant.
- ``MatMul`` with a constant 2-D ``B``: consumer ``A[-1] ~ B[0]``, producer ``B[1] ~ Y[-1]``,
  leading axes identity. Activation × activation is frozen.
- ``BatchNormalization``: ``X[1] ~ Y[1] ~ scale ~ B ~ mean ~ var``; ``InstanceNormalization``
  likewise; ``LayerNormalization`` freezes the normalized axes.
- Element-wise ops (unary and n-ary with numpy broadcasting): each input axis couples to the
  output axis it aligns with (from the right) when both have the same size; a size-1 axis is a
  broadcast and couples nothing; different or unknown sizes freeze both.
- Pooling (``MaxPool`` without indices, ``AveragePool``, ``Global*Pool``, ``LpPool``):
  ``X[0] ~ Y[0]``, ``X[1] ~ Y[1]``.

Concat/Split/Slice/Transpose/Resize/Pad/Softmax/Reduce are in :mod:`passes.prune._rules_shape`,
Reshape/Flatten/Squeeze/Unsqueeze in :mod:`passes.prune._rules_reshape`.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from passes.prune._context import GraphContext
from passes.prune._rule_helpers import freeze_node, param_space
from passes.prune._rules_shape import SHAPE_RULES
from passes.prune._spaces import ChannelSpace, Consumer, IndexMap, RuleResult, ShapeEdit

__all__ = ["Rule", "CHANNEL_RULES", "ELEMENTWISE_OPS", "freeze_node", "rule_for"]

Rule = Callable[[GraphContext, int, onnx.NodeProto], RuleResult]

#: Element-wise ops (any number of inputs, numpy broadcasting).
ELEMENTWISE_OPS = (
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "ThresholdedRelu", "Clip", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log",
    "Neg", "Abs", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity",
    "Cast", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal",
    "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "Mod",
)


def _has(node: onnx.NodeProto, slot: int) -> bool:
    return slot < len(node.input) and bool(node.input[slot])


def _constant_inputs(ctx: GraphContext, index: int, slots: tuple[int, ...], what: str) -> RuleResult | None:
    """A frozen result when one of ``slots`` is present but not a constant initializer."""
    node = ctx.nodes[index]
    for slot in slots:
        if _has(node, slot) and not ctx.is_param(node.input[slot]):
            return freeze_node(ctx, index, f"{node.op_type} {what} is not a constant", f"'{node.input[slot]}'")
    return None


def _couple_batch(ctx: GraphContext, r: RuleResult, x: str, y: str) -> None:
    a, b = ctx.act(x, 0), ctx.act(y, 0)
    if a is not None and b is not None and a.size == b.size:
        r.couple(a, b)


# ----------------------------------------------------------------------------- Conv family


def _conv(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    frozen = _constant_inputs(ctx, i, (1, 2), "weight or bias")
    if frozen is not None:
        return frozen
    x, y = node.input[0], node.output[0]
    w_shape = ctx.dims[node.input[1]]
    group = int(ctx.attr(node, "group", 1))
    c_out, c_in = w_shape[0], w_shape[1] * group
    r = RuleResult()
    _couple_batch(ctx, r, x, y)
    y1 = ctx.need(r, y, 1)
    if group == 1:
        r.couple(param_space(ctx, r, i, 1, 0, "out"), y1)
        if _has(node, 2):
            r.couple(param_space(ctx, r, i, 2, 0, "bias"), y1)
        x1, w1 = ctx.need(r, x, 1), param_space(ctx, r, i, 1, 1, "in")
        r.couple(x1, w1)
        if x1 is not None and w1 is not None:
            r.consumers.append(Consumer(i, "Conv", x1, w1))
        return r
    if w_shape[1] == 1 and c_out % group == 0:
        return _depthwise(ctx, r, i, node, x1=ctx.need(r, x, 1), y1=y1, multiplier=c_out // group)
    r.couple(param_space(ctx, r, i, 1, 0, "out"), y1)  # listed under its producer, then frozen
    if _has(node, 2):
        r.couple(param_space(ctx, r, i, 2, 0, "bias"), y1)
    for name, axis in ((x, 1), (y, 1), (node.input[1], None)):
        r.freeze(name, axis, "grouped Conv", f"'{ctx.node_label(i)}' group={group} of {c_in} channels")
    return r


def _depthwise(
    ctx: GraphContext, r: RuleResult, i: int, node: onnx.NodeProto, *, x1: ChannelSpace | None,
    y1: ChannelSpace | None, multiplier: int, weight_axis: int = 0,
) -> RuleResult:
    """``X[1] ~ W[axis] ~ B[0] ~ Y[1]``; input channel ``c`` owns ``multiplier`` outputs."""
    r.couple(x1, y1, IndexMap(0, multiplier, multiplier))
    w_dw = param_space(ctx, r, i, 1, weight_axis, "dw")
    r.couple(w_dw, y1)
    if node.op_type == "Conv" and multiplier == 1 and x1 is not None and w_dw is not None:
        r.consumers.append(Consumer(i, "Depthwise", x1, w_dw))  # re-fitted per channel
    if _has(node, 2):
        r.couple(param_space(ctx, r, i, 2, 0, "bias"), y1)
    if x1 is not None:
        group = int(ctx.attr(node, "group", 1))
        r.edits.append(ShapeEdit(i, -1, "group", -1, "kept", x1, group))
    return r


def _conv_transpose(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    frozen = _constant_inputs(ctx, i, (1, 2), "weight or bias")
    if frozen is not None:
        return frozen
    x, y = node.input[0], node.output[0]
    w_shape = ctx.dims[node.input[1]]
    group = int(ctx.attr(node, "group", 1))
    r = RuleResult()
    _couple_batch(ctx, r, x, y)
    y1, x1 = ctx.need(r, y, 1), ctx.need(r, x, 1)
    if group == 1:
        w0 = param_space(ctx, r, i, 1, 0, "in")
        r.couple(x1, w0)
        if x1 is not None and w0 is not None:
            r.consumers.append(Consumer(i, "ConvTranspose", x1, w0))
        r.couple(param_space(ctx, r, i, 1, 1, "out"), y1)
        if _has(node, 2):
            r.couple(param_space(ctx, r, i, 2, 0, "bias"), y1)
        return r
    if w_shape[1] == 1 and w_shape[0] == group:
        return _depthwise(ctx, r, i, node, x1=x1, y1=y1, multiplier=1)
    for name in (x, y, node.input[1], node.input[2] if _has(node, 2) else ""):
        if name:
            r.freeze(name, None if name == node.input[1] else 1, "grouped ConvTranspose",
                     f"'{ctx.node_label(i)}' group={group}")
    return r


# ----------------------------------------------------------------------------- Gemm / MatMul


def _gemm(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    if not ctx.is_param(node.input[1]):
        return freeze_node(ctx, i, "Gemm weight is not a constant", f"'{node.input[1]}'")
    frozen = _constant_inputs(ctx, i, (2,), "bias")
    if frozen is not None:
        return frozen
    a, y = node.input[0], node.output[0]
    trans_a, trans_b = int(ctx.attr(node, "transA", 0)), int(ctx.attr(node, "transB", 0))
    r = RuleResult()
    k_axis_a, n_axis_b, k_axis_b = (0 if trans_a else 1), (0 if trans_b else 1), (1 if trans_b else 0)
    a_m, y0 = ctx.act(a, 1 - k_axis_a), ctx.act(y, 0)
    if a_m is not None and y0 is not None and a_m.size == y0.size:
        r.couple(a_m, y0)
    y1 = ctx.need(r, y, 1)
    r.couple(param_space(ctx, r, i, 1, n_axis_b, "out"), y1)
    if _has(node, 2):
        c_dims = ctx.dims[node.input[2]]
        if c_dims and c_dims[-1] not in (1, None):
            r.couple(param_space(ctx, r, i, 2, len(c_dims) - 1, "bias"), y1)
    a_k, w_k = ctx.need(r, a, k_axis_a), param_space(ctx, r, i, 1, k_axis_b, "in")
    r.couple(a_k, w_k)
    if a_k is not None and w_k is not None and not trans_a:
        r.consumers.append(Consumer(i, "Gemm", a_k, w_k))
    return r


def _matmul(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    a, b, y = node.input[0], node.input[1], node.output[0]
    if not ctx.is_param(b) or ctx.is_param(a):
        return freeze_node(ctx, i, "MatMul without one constant 2-D weight (B)", f"'{ctx.node_label(i)}'")
    rank_a, rank_y = ctx.rank(a), ctx.rank(y)
    if len(ctx.dims[b]) != 2 or rank_a is None or rank_y is None or rank_a < 2 or rank_a != rank_y:
        return freeze_node(ctx, i, "MatMul without one constant 2-D weight (B)", f"'{ctx.node_label(i)}'")
    r = RuleResult()
    for axis in range(rank_a - 1):
        ax, ay = ctx.act(a, axis), ctx.act(y, axis)
        if ax is not None and ay is not None and ax.size == ay.size:
            r.couple(ax, ay)
    r.couple(param_space(ctx, r, i, 1, 1, "out"), ctx.need(r, y, rank_y - 1))
    a_k, w_k = ctx.need(r, a, rank_a - 1), param_space(ctx, r, i, 1, 0, "in")
    r.couple(a_k, w_k)
    if a_k is not None and w_k is not None:
        r.consumers.append(Consumer(i, "MatMul", a_k, w_k))
    return r


# ----------------------------------------------------------------------------- normalization


def _channel_norm(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    """BatchNormalization / InstanceNormalization: per-channel parameters on axis 1."""
    if len([o for o in node.output if o]) > 1:
        return freeze_node(ctx, i, f"{node.op_type} in training mode")
    param_slots = tuple(range(1, len(node.input)))
    frozen = _constant_inputs(ctx, i, param_slots, "parameter")
    if frozen is not None:
        return frozen
    x, y = node.input[0], node.output[0]
    r = RuleResult()
    _couple_batch(ctx, r, x, y)
    y1 = ctx.need(r, y, 1)
    r.couple(ctx.need(r, x, 1), y1)
    roles = ("norm_scale", "norm_shift", "norm_stat", "norm_stat")
    for slot, role in zip(param_slots, roles):
        r.couple(param_space(ctx, r, i, slot, 0, role), y1)
    return r


def _layer_norm(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    rank = ctx.rank(x)
    if rank is None:
        return freeze_node(ctx, i, "shape unknown", f"'{x}'")
    axis = int(ctx.attr(node, "axis", -1)) % rank
    r = RuleResult()
    for k in range(rank):
        if k >= axis:
            r.freeze(x, k, "normalized across channels", f"'{ctx.node_label(i)}'")
            r.freeze(y, k, "normalized across channels", f"'{ctx.node_label(i)}'")
            continue
        a, b = ctx.act(x, k), ctx.act(y, k)
        if a is not None and b is not None:
            r.couple(a, b)
    for name in node.input[1:]:
        if name:
            r.freeze(name, None, "normalized across channels", f"'{ctx.node_label(i)}'")
    return r


# ----------------------------------------------------------------------------- element-wise


def _elementwise(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    y = node.output[0]
    rank = ctx.rank(y)
    if rank is None:
        return freeze_node(ctx, i, "shape unknown", f"'{y}'")
    r = RuleResult()
    for slot, name in enumerate(node.input):
        if not name:
            continue
        in_rank = ctx.rank(name)
        if in_rank is None or in_rank > rank:
            return freeze_node(ctx, i, "shape unknown", f"'{name}'")
        for k in range(in_rank):
            out_axis = k + rank - in_rank
            d_in, d_out = ctx.dims[name][k], ctx.dims[y][out_axis]
            if d_in == 1:
                continue  # broadcast: every output index reads the same input index
            if d_in is None or d_out is None or d_in != d_out:
                category = "shape unknown" if d_in is None or d_out is None else "sizes differ"
                r.freeze(name, k, category, f"'{ctx.node_label(i)}' input {slot}")
                r.freeze(y, out_axis, category, f"'{ctx.node_label(i)}' input {slot}")
                continue
            a = param_space(ctx, r, i, slot, k, "operand") if ctx.is_param(name) else ctx.act(name, k)
            r.couple(a, ctx.act(y, out_axis))
    for extra in node.output[1:]:
        if extra:
            r.freeze(extra, None, f"second output of {node.op_type}", f"'{ctx.node_label(i)}'")
    return r


def _dropout(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    if len(node.output) > 1 and node.output[1] and ctx.index.use_count(node.output[1]):
        return freeze_node(ctx, i, "Dropout mask is read")
    view = onnx.NodeProto()
    view.CopyFrom(node)
    del view.input[1:]
    return _elementwise(ctx, i, view)


def _pool(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    if len(node.output) > 1 and node.output[1]:
        return freeze_node(ctx, i, "MaxPool indices are produced")
    x, y = node.input[0], node.output[0]
    r = RuleResult()
    _couple_batch(ctx, r, x, y)
    r.couple(ctx.need(r, x, 1), ctx.need(r, y, 1))
    return r


_LAYER_RULES: dict[str, Rule] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _channel_norm,
    "InstanceNormalization": _channel_norm,
    "LayerNormalization": _layer_norm,
    "Dropout": _dropout,
    **{op: _pool for op in ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")},
    **{op: _elementwise for op in ELEMENTWISE_OPS},
}

#: op type (default ONNX domain) -> channel rule. One explicit table; nothing registers itself.
CHANNEL_RULES: dict[str, Rule] = {**_LAYER_RULES, **SHAPE_RULES}


def rule_for(node: onnx.NodeProto) -> Rule | None:
    """The rule of ``node``'s op, or ``None`` (custom domains never have one)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    return CHANNEL_RULES.get(node.op_type)
