"""Dynamic int8 quantization: int8 weights, activations quantized at run time.

Rewrites (``W`` a float32 constant; ``x`` the float activation; names from one allocator; the
node's output name is kept, so nothing downstream is renamed):

- ``MatMul(x, W)`` with ``W`` 2-D ``[K, N]``::

      x_q, s_x, z_x = DynamicQuantizeLinear(x)                      # u8, per call
      y_i = MatMulInteger(x_q, W_q, z_x, z_w)                       # W_q int8 [K, N]
      y   = Mul(Cast<float>(y_i), Mul(s_x, s_w))                    # s_w, z_w: scalar or [N]

  This is exactly the chain onnxruntime's ``DynamicQuantizeMatMulFusion`` turns into one
  ``com.microsoft.DynamicQuantizeMatMul`` under graph optimizations (checked with
  ``onnxslim.fusion.fusion_report``), so the file stays standard ONNX (opset ≥ 11) and the
  runtime still gets one fused kernel. Per-channel weights are per column (``axis=1``, 1-D
  ``z_w``/``s_w`` of length ``N``), which MatMulInteger and DynamicQuantizeMatMul accept.
- ``Gemm(A, B, C)`` (``transA = 0``): ``W = α·Bᵀ`` if ``transB`` else ``α·B`` (``α`` folded into
  ``s_w``), then the MatMul chain above and ``Add(y, β·C)`` when ``C`` is given (constant).
- ``Conv`` (only with ``conv=True``): onnxruntime's CPU ``ConvInteger`` long implemented
  **u8 activations × u8 weights only** (u8×s8 failed to load: "Could not find an implementation
  for ConvInteger(10)", onnxruntime #6430/#12558; 1.32 does load the s8-weight form that its
  ``quantize_dynamic`` writes for LeNet, older deployed versions do not). We emit u8×u8 only:
  weights u8 asymmetric per tensor,
  ``y = Cast(ConvInteger(x_q, W_u8, z_x, z_w)) · (s_x·s_w) + B``. Off by default: onnxruntime
  has no fused or optimized dynamic Conv kernel, and CNNs are slower this way (measured below).
- ``weight_only=True`` instead keeps the float op and feeds it ``DequantizeLinear(W_q)``
  (per channel needs opset 13): the file shrinks 4×, compute stays float.

Weights are symmetric int8 (``z_w = 0``, range ``[-127, 127]``, or ``[-63, 63]`` with
``reduce_range`` for CPUs without VNNI, where ``vpmaddubsw`` saturates u8·s8 pairs in int16).
Nodes inside subgraphs (If/Loop/Scan), of other domains, with a non-constant or non-2-D weight,
or excluded by type or name, are left float and counted as ``"skipped: <reason>"``. A model
whose opset is too low for the emitted ops is first brought up through
:class:`passes.quantize._prepare.PrepareForQuantizationPass` (simplify, then
``onnx.version_converter``).

Which form onnxruntime runs fastest — measured, not assumed (``python -m benchmarks.quantize
--forms --runs 40``: onnxruntime 1.32, 1 thread, ``ORT_ENABLE_ALL``, p50 of runs interleaved
across the forms of one model; CPU AMD EPYC, 2 cores, AVX2 + AVX512-VNNI; ×: speed-up over fp32;
run-to-run noise on this shared machine is about ±10 %)::

    model                       fp32 p50   integer/ch   integer/tensor   weight-only DQ   +Conv u8u8   ORT dynamic
    mlp 4×(512→2048→512)        72.2 ms    3.20×        3.80×            0.73×            (= integer)  3.80×
    LeNet-5 (3 Gemm, 2 Conv)    0.029 ms   0.97×        1.02×            0.80×            0.63×        0.30×
    ppocr-rec (9 MatMul const)  57.6 ms    1.11×        1.07×            1.06×            0.84×        failed¹

- integer: onnxruntime fuses every chain into ``DynamicQuantizeMatMul`` (fusion report: 8/8,
  3/5, 9/51 compute nodes in int8, no Q/DQ left). Per-channel and per-tensor are within noise
  of each other; per-channel is kept as the default for accuracy.
- weight-only: onnxruntime turns some ``DequantizeLinear + MatMul`` into ``MatMulNBits``
  (8-bit weights, float compute) and leaves the rest — and every Gemm — as an unfused DQ in
  front of a float op: never faster than fp32 except on size.
- Conv as u8u8 ``ConvInteger``: no fused kernel (the Cast/Mul/Add and DynamicQuantizeLinear
  stay), slower than fp32 on both CNNs — hence ``conv=False`` by default.
- ¹ ``quantize_dynamic`` raised ``ValueError: Expected conv2d_157.w_0 to be an initializer``
  (ppocr-rec keeps its weights in Constant nodes).

The integer form is the default; weight-only is kept as an option (4× smaller file, float
compute).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.qparams import QuantParams, quantize, weight_quant_params
from passes._base import Pass, PassResult, RunContext, Tolerance
from passes._errors import PreconditionError
from passes._graph import GraphIndex, NameAllocator, all_nodes, is_onnx_domain, iter_subgraphs, opset_version, remove_nodes
from passes.quantize._prepare import PrepareForQuantizationPass, PrepareOptions

__all__ = ["DynamicQuantOptions", "QuantizeDynamicPass"]

logger = logging.getLogger(__name__)

_INTEGER_MIN_OPSET = 11  # DynamicQuantizeLinear
_PER_CHANNEL_DQ_OPSET = 13  # DequantizeLinear(axis=...)


@dataclasses.dataclass(frozen=True)
class DynamicQuantOptions:
    """What :class:`QuantizeDynamicPass` quantizes and how.

    Attributes:
        per_channel: one weight scale per output column (MatMul/Gemm) instead of per tensor.
        reduce_range: 7-bit weights (``[-63, 63]``), for u8·s8 kernels on CPUs without VNNI.
        op_types: op types to quantize (``MatMul``, ``Gemm``; ``Conv`` needs ``conv=True``).
        exclude_ops: op types never quantized (wins over ``op_types``).
        exclude_nodes: node names never quantized.
        conv: also quantize Conv as u8×u8 ``ConvInteger`` (per-tensor u8 weights).
        weight_only: emit int8 weights + ``DequantizeLinear`` feeding the float op instead of
            integer kernels.
        prepare: raise a too-low opset (and fold constants) before quantizing.
    """

    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    exclude_ops: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    conv: bool = False
    weight_only: bool = False
    prepare: bool = True

    def targets(self) -> frozenset[str]:
        """The op types this configuration rewrites."""
        ops = set(self.op_types) | ({"Conv"} if self.conv else set())
        if not self.conv:
            ops.discard("Conv")
        return frozenset(ops - set(self.exclude_ops))


@dataclasses.dataclass
class _Work:
    """Mutable state of one application: index, names, new nodes and initializers, counters."""

    index: GraphIndex
    names: NameAllocator
    opts: DynamicQuantOptions
    new_nodes: dict[int, list[onnx.NodeProto]] = dataclasses.field(default_factory=dict)
    new_inits: list[onnx.TensorProto] = dataclasses.field(default_factory=list)
    dql: dict[str, tuple[str, str, str]] = dataclasses.field(default_factory=dict)
    done: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    skips: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    replaced_weights: set[str] = dataclasses.field(default_factory=set)

    def init(self, hint: str, value: np.ndarray) -> str:
        name = self.names.fresh(hint)
        self.new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], hint: str, **attrs: Any) -> onnx.NodeProto:
        return helper.make_node(op, inputs, outputs, name=self.names.fresh(hint), **attrs)


class QuantizeDynamicPass(Pass):
    """MatMul/Gemm (optionally Conv) with constant weights → int8 weights, run-time activations.

    The tolerance is a cosine floor of 0.99 against the float model: one 8-bit activation
    quantization per call (u8 over the tensor's own min/max) and symmetric 8-bit weights each
    keep a layer near 40 dB SQNR (cosine ≈ 0.9999); 0.99 leaves room for error compounding
    over a few dozen quantized layers, and is what the int8 tests use (STYLE.md §8d).
    """

    name: ClassVar[str] = "quantize-dynamic"
    tolerance: ClassVar[Tolerance] = Tolerance(min_cosine=0.99)

    def __init__(self, options: DynamicQuantOptions | None = None) -> None:
        self.options = options or DynamicQuantOptions()

    def __repr__(self) -> str:
        return f"QuantizeDynamicPass({self.options})"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Quantize ``model``'s eligible nodes; returns ``changed=False`` when there are none."""
        opts = self.options
        stats: dict[str, Any] = {"bytes_before": model.ByteSize(), "nodes_before": len(model.graph.node)}
        targets = opts.targets()
        if not _has_candidates(model, targets, opts):
            stats["skipped: no eligible node"] = 1
            inside = _subgraph_targets(model.graph, targets)
            if inside:
                stats[f"skipped: {_IN_SUBGRAPH}"] = inside
            index = GraphIndex.build(model.graph)
            for node in model.graph.node:
                if node.op_type in targets:
                    reason = f"skipped: {node.op_type} {_why_not(node, index, opts)}"
                    stats[reason] = stats.get(reason, 0) + 1
            if not inside and not any(n.op_type in targets for n in model.graph.node):
                stats[f"skipped: no {'/'.join(sorted(targets))} in the model"] = 1
            return PassResult(model, False, stats)
        work_model, notes = _prepare(model, opts, ctx)
        if notes:
            stats["prepare"] = notes
        work = _Work(GraphIndex.build(work_model.graph), NameAllocator(work_model.graph), opts)
        inside = _subgraph_targets(work_model.graph, targets)
        if inside:
            work.skips[_IN_SUBGRAPH] += inside
        for position, node in enumerate(work_model.graph.node):
            if node.op_type not in targets:
                continue
            reason = _rewrite(node, position, work)
            if reason is not None:
                work.skips[reason] += 1
                ctx.logger.debug("quantize-dynamic: %s '%s' left float: %s", node.op_type, node.name, reason)
        if not work.done:
            stats.update({f"skipped: {r}": n for r, n in sorted(work.skips.items())})
            return PassResult(model, False, stats)
        _splice(work_model.graph, work)
        stats.update({f"quantized: {op}": n for op, n in sorted(work.done.items())})
        stats.update({f"skipped: {r}": n for r, n in sorted(work.skips.items())})
        stats.update(bytes_after=work_model.ByteSize(), nodes_after=len(work_model.graph.node),
                     form="weight-only" if opts.weight_only else "integer")
        return PassResult(work_model, True, stats)


def _has_candidates(model: onnx.ModelProto, targets: frozenset[str], opts: DynamicQuantOptions) -> bool:
    index = GraphIndex.build(model.graph)
    return any(_why_not(node, index, opts) is None for node in model.graph.node if node.op_type in targets)


def _min_opset(opts: DynamicQuantOptions) -> int:
    if opts.weight_only:
        return _PER_CHANNEL_DQ_OPSET if opts.per_channel else 10
    return _INTEGER_MIN_OPSET


def _prepare(model: onnx.ModelProto, opts: DynamicQuantOptions, ctx: RunContext) -> tuple[onnx.ModelProto, str]:
    """A copy of ``model`` at the opset the emitted ops need, and a note of what was done."""
    need, have = _min_opset(opts), opset_version(model) or 1
    if have >= need:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        return work, ""
    if not opts.prepare:
        raise PreconditionError(f"quantize-dynamic: opset {have} is below {need}, which the emitted ops need "
                                "(enable prepare)")
    result = PrepareForQuantizationPass(PrepareOptions(min_opset=need)).apply(model, ctx)
    notes = "; ".join(result.stats["notes"])
    if result.stats["opset_after"] < need:
        raise PreconditionError(f"quantize-dynamic: the emitted ops need opset {need}, and {notes}")
    return result.model, f"opset {have} → {result.stats['opset_after']} ({PrepareForQuantizationPass.name}: {notes})"


#: The skip reason of target ops inside If/Loop/Scan bodies.
_IN_SUBGRAPH = "inside a subgraph (left float)"


def _subgraph_targets(graph: onnx.GraphProto, targets: frozenset[str]) -> int:
    """How many target ops sit inside the subgraphs of ``graph`` (at any depth)."""
    return sum(inner.op_type in targets for node in graph.node for sub in iter_subgraphs(node) for inner in all_nodes(sub))


def _why_not(node: onnx.NodeProto, index: GraphIndex, opts: DynamicQuantOptions) -> str | None:
    """``None`` when ``node`` can be quantized, else the reason it stays float."""
    if not is_onnx_domain(node):
        return "not in the ONNX domain"
    if node.name and node.name in opts.exclude_nodes:
        return "excluded by name"
    if len(node.input) < 2:
        return "no weight input"
    weight = index.constant(node.input[1])
    if weight is None:
        return "weight is not a constant"
    if weight.dtype != np.float32:
        return f"weight is {weight.dtype}, not float32"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        if len(node.input) > 2 and node.input[2] and index.constant(node.input[2]) is None:
            return "bias is not a constant"
        return None if attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") else "auto_pad is set"
    if weight.ndim != 2:
        return f"weight is {weight.ndim}-D, not 2-D"
    if node.op_type == "Gemm":
        if attrs.get("transA", 0):
            return "Gemm with transA=1"
        if len(node.input) > 2 and node.input[2] and index.constant(node.input[2]) is None:
            return "bias is not a constant"
    return None


def _rewrite(node: onnx.NodeProto, position: int, work: _Work) -> str | None:
    reason = _why_not(node, work.index, work.opts)
    if reason is not None:
        return reason
    if node.op_type == "Conv":
        work.new_nodes[position] = _conv_integer(node, work)
    elif work.opts.weight_only:
        work.new_nodes[position] = _weight_only(node, work)
    else:
        work.new_nodes[position] = _matmul_integer(node, work)
    work.replaced_weights.add(node.input[1])
    work.done[node.op_type] += 1
    return None


def _gemm_parts(node: onnx.NodeProto, index: GraphIndex) -> tuple[np.ndarray, np.ndarray | None]:
    """``(W [K, N] with α folded in, β·C or None)`` of a Gemm, or ``(W, None)`` for MatMul."""
    weight = index.constant(node.input[1])
    assert weight is not None
    if node.op_type != "Gemm":
        return weight, None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    w = (weight.T if attrs.get("transB", 0) else weight) * np.float32(attrs.get("alpha", 1.0))
    bias = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if bias is not None:
        bias = (bias * np.float32(attrs.get("beta", 1.0))).astype(np.float32)
    return np.ascontiguousarray(w, dtype=np.float32), bias


def _weight_params(weight: np.ndarray, opts: DynamicQuantOptions, *, axis: int) -> QuantParams:
    return weight_quant_params(weight, axis=axis if opts.per_channel else None, dtype="int8",
                               symmetric=True, reduce_range=opts.reduce_range)


def _dynamic_input(x: str, work: _Work) -> tuple[list[onnx.NodeProto], tuple[str, str, str]]:
    """One DynamicQuantizeLinear per activation, shared by every node that reads it."""
    if x in work.dql:
        return [], work.dql[x]
    outs = (work.names.fresh(f"{x}_quant"), work.names.fresh(f"{x}_scale"), work.names.fresh(f"{x}_zero_point"))
    work.dql[x] = outs
    return [work.node("DynamicQuantizeLinear", [x], list(outs), f"{x}_DynamicQuantizeLinear")], outs


def _matmul_integer(node: onnx.NodeProto, work: _Work) -> list[onnx.NodeProto]:
    w, bias = _gemm_parts(node, work.index)
    params = _weight_params(w, work.opts, axis=1)
    base = node.name or node.output[0]
    w_q = work.init(f"{base}_weight_quantized", quantize(w, params))
    w_s = work.init(f"{base}_weight_scale", params.scale)
    w_z = work.init(f"{base}_weight_zero_point", params.zero_point)
    nodes, (x_q, x_s, x_z) = _dynamic_input(node.input[0], work)
    y_i, y_f, mult = (work.names.fresh(f"{base}_{s}") for s in ("output_int32", "output_float", "scale"))
    y = node.output[0] if bias is None else work.names.fresh(f"{base}_output_unbiased")
    nodes += [
        work.node("MatMulInteger", [x_q, w_q, x_z, w_z], [y_i], f"{base}_MatMulInteger"),
        work.node("Cast", [y_i], [y_f], f"{base}_Cast", to=TensorProto.FLOAT),
        work.node("Mul", [x_s, w_s], [mult], f"{base}_scale_Mul"),
        work.node("Mul", [y_f, mult], [y], f"{base}_output_Mul"),
    ]
    if bias is not None:
        nodes.append(work.node("Add", [y, work.init(f"{base}_bias", bias)], [node.output[0]], f"{base}_bias_Add"))
    return nodes


def _weight_only(node: onnx.NodeProto, work: _Work) -> list[onnx.NodeProto]:
    weight = work.index.constant(node.input[1])
    assert weight is not None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = 0 if node.op_type == "Gemm" and attrs.get("transB", 0) else 1
    params = _weight_params(weight, work.opts, axis=axis)
    base = node.name or node.output[0]
    w_q = work.init(f"{base}_weight_quantized", quantize(weight, params))
    w_s = work.init(f"{base}_weight_scale", params.scale)
    w_z = work.init(f"{base}_weight_zero_point", params.zero_point)
    w_d = work.names.fresh(f"{base}_weight_dequantized")
    extra = {"axis": axis} if params.per_channel else {}
    dq = work.node("DequantizeLinear", [w_q, w_s, w_z], [w_d], f"{base}_weight_DequantizeLinear", **extra)
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.input[1] = w_d
    return [dq, new]


def _conv_integer(node: onnx.NodeProto, work: _Work) -> list[onnx.NodeProto]:
    weight = work.index.constant(node.input[1])
    assert weight is not None
    params = weight_quant_params(weight, dtype="uint8", symmetric=False, reduce_range=work.opts.reduce_range)
    base = node.name or node.output[0]
    w_q = work.init(f"{base}_weight_quantized", quantize(weight, params))
    w_s = work.init(f"{base}_weight_scale", params.scale)
    w_z = work.init(f"{base}_weight_zero_point", params.zero_point)
    nodes, (x_q, x_s, x_z) = _dynamic_input(node.input[0], work)
    bias = work.index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    y_i, y_f, mult = (work.names.fresh(f"{base}_{s}") for s in ("output_int32", "output_float", "scale"))
    y = node.output[0] if bias is None else work.names.fresh(f"{base}_output_unbiased")
    conv = work.node("ConvInteger", [x_q, w_q, x_z, w_z], [y_i], f"{base}_ConvInteger")
    conv.attribute.extend(a for a in node.attribute)
    nodes += [conv, work.node("Cast", [y_i], [y_f], f"{base}_Cast", to=TensorProto.FLOAT),
              work.node("Mul", [x_s, w_s], [mult], f"{base}_scale_Mul"),
              work.node("Mul", [y_f, mult], [y], f"{base}_output_Mul")]
    if bias is not None:
        shaped = bias.astype(np.float32).reshape([1, -1] + [1] * (weight.ndim - 2))
        nodes.append(work.node("Add", [y, work.init(f"{base}_bias", shaped)], [node.output[0]], f"{base}_bias_Add"))
    return nodes


def _splice(graph: onnx.GraphProto, work: _Work) -> None:
    """Replace rewritten nodes in place (order kept), add initializers, drop dead weights."""
    nodes: list[onnx.NodeProto] = []
    for position, node in enumerate(graph.node):
        nodes.extend(work.new_nodes.get(position, [node]))
    copies = [onnx.NodeProto() for _ in nodes]
    for dst, src in zip(copies, nodes):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(copies)
    graph.initializer.extend(work.new_inits)
    _drop_unread(graph, work.replaced_weights)


def _drop_unread(graph: onnx.GraphProto, candidates: set[str]) -> None:
    index = GraphIndex.build(graph)
    dead = {name for name in candidates if index.use_count(name) == 0 and name not in index.graph_inputs}
    kept = [t for t in graph.initializer if t.name not in dead or t.name in index.overridable]
    if len(kept) != len(graph.initializer):
        copies = [onnx.TensorProto() for _ in kept]
        for dst, src in zip(copies, kept):
            dst.CopyFrom(src)
        del graph.initializer[:]
        graph.initializer.extend(copies)
    doomed = [n for n in graph.node if n.op_type == "Constant" and n.output[0] in dead]
    remove_nodes(graph, doomed)
