"""THE rules table of static QDQ quantization: op type -> which slots get Q/DQ and how scales flow.

Every entry was checked against onnxruntime 1.32 (CPU EP, x86-64): a one-op QDQ model was
loaded with ``ORT_ENABLE_ALL`` and ``optimized_model_filepath``, and the optimized graph's
nodes were counted (the probe is ``benchmarks/quantize_static.py --probe``). What was found:

=================  =====================================================================
op                 what onnxruntime does with ``DQ -> op -> Q``
=================  =====================================================================
Conv               QLinearConv (per-channel weights on axis 0; the int32 bias DQ must have
                   scale exactly ``s_x * s_w``, else no fusion). Without the output Q:
                   FusedConv in float (DQ'd weights) — used for a graph-output Conv.
Gemm               QGemm (weights per-channel on the output axis: 0 with transB, else 1).
MatMul             QLinearMatMul; without the output Q: MatMulIntegerToFloat.
                   activation x activation also fuses, but the default policy keeps it float.
Add, Mul           QLinearAdd / QLinearMul (both inputs quantized).
Concat             QLinearConcat (each input keeps its own scale: no sharing needed).
AveragePool,       QLinearAveragePool / QLinearGlobalAveragePool (com.microsoft).
GlobalAveragePool
Sigmoid,           QLinearSigmoid / QLinearLeakyRelu (com.microsoft).
LeakyRelu
MaxPool, Reshape,  "drop" rules: DQ and Q removed, the op runs on uint8 — only when the Q
Transpose,         after has the same scale and zero point as the DQ before, so these share
Squeeze,           their input's parameters (``same_scale``); Split: every output's Q must
                   share the input's parameters (YOLOv8's C2f blocks: 8 Splits that otherwise
                   run ``DQ -> Split -> Q, Q`` in float).
Unsqueeze,
Flatten, Slice,
Gather, Split,
Resize(nearest)
Relu, Clip         Absorbed: with u8 asymmetric activations the quantizer's clamp to
                   ``[0, rmax]`` *is* the activation, so the op is removed and its output
                   tensor becomes the producer's quantized output (as onnxruntime's own
                   quantizer does).
=================  =====================================================================

Not in the table, because onnxruntime 1.32 on CPU does **not** fuse them (Q/DQ around them
would only add work): ConvTranspose (stays ``DQ -> ConvTranspose -> Q``, with per-tensor or
per-channel weights), HardSigmoid, HardSwish, Tanh, Resize(linear), Pad. Softmax *is* fused
(QLinearSoftmax) but runs slower than ``DQ -> Softmax -> Q`` in float, so it stays float: 1 thread,
p50, 2026-11-28: [1,16,4,2100] axis 1 (YOLOv8's DFL) 1.31 vs 1.09 ms; [1,2100,64] 0.38 vs
0.10 ms; [1,8,64,64] 0.095 vs 0.027 ms; [1,40,6625] 0.74 vs 0.14 ms (last axis).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import onnx

__all__ = ["OpRule", "RULES", "ABSORBABLE", "COMPUTE", "weight_axis", "rule_for", "node_label"]


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


@dataclasses.dataclass(frozen=True)
class OpRule:
    """How one op type is quantized.

    Attributes:
        kind: ``"compute"`` (has a constant weight), ``"binary"``, ``"unary"``, ``"concat"``
            or ``"drop"`` (runs on int8 unchanged when input and output scales are equal).
        activations: input slots quantized as activations (``None`` = all inputs).
        weight: input slot of the constant weight, or ``None``.
        axis: per-channel axis of the weight given the node (``None`` = per-tensor only).
        bias: input slot of the bias (quantized to int32 with scale ``s_x * s_w``), or ``None``.
        same_scale: the output reuses the input's scale and zero point.
        multi_output: the node may have several outputs (each one same-scale, like Split).
        ort_fused: what onnxruntime turns the node unit into (for docs and tests).
    """

    kind: str
    activations: tuple[int, ...] | None = (0,)
    weight: int | None = None
    axis: Callable[[onnx.NodeProto], int] | None = None
    bias: int | None = None
    same_scale: bool = False
    multi_output: bool = False
    ort_fused: str = ""


def _gemm_axis(node: onnx.NodeProto) -> int:
    # B is [K, N] (output channels on axis 1) unless transB, where it is [N, K].
    return 0 if _attr_int(node, "transB", 0) else 1


def _drop(fused: str = "op on uint8 (DQ/Q dropped)") -> OpRule:
    return OpRule("drop", same_scale=True, ort_fused=fused)


#: op type -> rule. The one place that says what gets quantized and how.
RULES: dict[str, OpRule] = {
    # compute ops: activation x constant weight (per-channel on the output-channel axis)
    "Conv": OpRule("compute", (0,), weight=1, axis=lambda n: 0, bias=2, ort_fused="QLinearConv"),
    "Gemm": OpRule("compute", (0,), weight=1, axis=_gemm_axis, bias=2, ort_fused="QGemm"),
    "MatMul": OpRule("compute", (0,), weight=1, axis=lambda n: 1, ort_fused="QLinearMatMul"),
    # binary element-wise (residuals, gates)
    "Add": OpRule("binary", (0, 1), ort_fused="QLinearAdd"),
    "Mul": OpRule("binary", (0, 1), ort_fused="QLinearMul"),
    # Concat: QLinearConcat requantizes each input, so inputs keep their own scales
    "Concat": OpRule("concat", None, ort_fused="QLinearConcat"),
    # unary ops with com.microsoft QLinear kernels
    "AveragePool": OpRule("unary", ort_fused="QLinearAveragePool"),
    "GlobalAveragePool": OpRule("unary", ort_fused="QLinearGlobalAveragePool"),
    "Sigmoid": OpRule("unary", ort_fused="QLinearSigmoid"),
    "LeakyRelu": OpRule("unary", ort_fused="QLinearLeakyRelu"),
    # data movement: the Q/DQ pair around them is dropped when scales match
    "MaxPool": _drop("MaxPool on uint8"),
    "Reshape": _drop(),
    "Transpose": _drop(),
    "Squeeze": _drop(),
    "Unsqueeze": _drop(),
    "Flatten": _drop(),
    "Slice": _drop(),
    "Gather": _drop(),
    "Split": OpRule("drop", same_scale=True, multi_output=True, ort_fused="Split on uint8 (DQ/Q dropped)"),
    "Resize": _drop("Resize on uint8 (nearest mode only)"),
}

#: activations the u8 quantizer's clamp implements exactly (removed after a quantized producer)
ABSORBABLE = ("Relu", "Clip")

#: op types whose node units carry a weight (the ones worth quantizing for speed)
COMPUTE = tuple(op for op, rule in RULES.items() if rule.kind == "compute")


def weight_axis(node: onnx.NodeProto) -> int | None:
    """Per-channel axis of ``node``'s weight (Conv 0, Gemm 0 with transB else 1, MatMul 1)."""
    rule = RULES.get(node.op_type)
    return None if rule is None or rule.axis is None else rule.axis(node)


def rule_for(node: onnx.NodeProto) -> OpRule | None:
    """The rule of ``node`` or ``None`` (another domain, no rule, or a mode ORT keeps float)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Resize":
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
        if mode != "nearest":
            return None
    return RULES.get(node.op_type)


def node_label(node: onnx.NodeProto) -> str:
    """How reports name a node: its name, else ``op_type:first output``."""
    return node.name or f"{node.op_type}:{node.output[0] if node.output else '?'}"
