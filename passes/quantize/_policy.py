"""The default accuracy policy: general rules that keep sensitive parts of a model in float.

These rules do automatically what hand-tuning onnxruntime's quantizer needed (DESIGN §5):

(a) activation x activation MatMul stays float (only Conv/Gemm/MatMul with constant weights are
    quantized) — enforced by the planner (:mod:`passes.quantize._plan`).
(b) **output heads**: a tensor that reaches a graph output through data-movement and Concat ops
    only (Reshape, Transpose, Squeeze, Concat, Split, …) stays float, so no Concat mixes ranges
    like box coordinates (0–320) and class scores (0–1) under one scale; anywhere else, a Concat
    whose inputs' magnitudes differ by more than ``mixed_range_ratio`` stays float.
(c) **state paths**: when a graph input and a graph output have the same shape (a recurrent
    state fed back by the caller, like Silero's ``state``/``stateN``), or the model has
    LSTM/GRU/RNN nodes, every node on a path from such an input to such an output stays float.
(g) **self-gated activations** ``x · σ(x)`` (SiLU/Swish, HardSwish written as
    ``x · clip(x + 3, 0, 6) / 6``, ``x · hardsigmoid(x)``): a gate whose every op has an int8
    kernel of its own (a lone Sigmoid: QLinearSigmoid, then QLinearMul) is quantized; any other
    gate (Add/Clip/Div, HardSigmoid, a Sigmoid of a scaled input) stays float with its Mul,
    since Q/DQ around float gate ops would only add work; the producer's output and the Mul's
    output are quantized either way. Each gate also forms a fallback *group* with the unit
    producing ``x`` (Conv -> Sigmoid -> Mul): the fallback returns a group to float as a whole
    (a float Mul behind a quantized Conv would remove no noise). ``float_self_gates=True``
    keeps every gate float. Measured on YOLOv8n 2026-11-28 (mAP@0.5 vs fp32 with candidates
    ranked down to confidence 0.001; 1 thread, p50 in one interleaved run: fp32 22.3 ms,
    onnxruntime's int8 10.1 ms at mAP 0.057): gates float, no fallback: 0.967, 11.7 ms;
    gates int8, no fallback: 0.967, 10.4 ms; gates float + 25 dB fallback (16 Conv float):
    0.999, 14.4 ms; gates int8 + 20 dB group fallback (17 groups float): 0.993, 16.1 ms. The
    gates cost speed, not accuracy; with Split run on uint8 (see ``_rules``) int8 gates reach
    0.965 at 10.1 ms vs onnxruntime's 10.3 ms in the same run.
(d) **weight outliers**: a layer whose weight has ``max|w| > weight_outlier_ratio ·
    percentile99.9(|w|)`` stays float (one outlier would stretch the int8 grid for the rest).

The result is data: node -> reason and tensor -> reason, counted in the pass's stats.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import onnx

from passes._graph import GraphIndex, iter_subgraphs, subgraph_outer_inputs
from passes.quantize._rules import node_label, rule_for

__all__ = ["PolicyOptions", "PolicyDecision", "decide", "TRANSPARENT_OPS"]

#: ops through which a graph output "is" its input (data movement, concatenation, split)
TRANSPARENT_OPS = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "Slice",
    "Gather", "Identity", "Expand", "Cast",
})
_RECURRENT = frozenset({"LSTM", "GRU", "RNN"})


@dataclasses.dataclass(frozen=True)
class PolicyOptions:
    """Thresholds of the default policy (see the module docstring).

    Attributes:
        float_output_heads: rule (b), output heads.
        mixed_range_ratio: rule (b), Concat inputs whose max|range| differ more stay float.
        float_state_paths: rule (c).
        weight_outlier_ratio: rule (d); ``None`` disables it.
        float_self_gates: rule (g): ``None`` (default) quantizes a self-gate whose every op has
            an int8 kernel of its own (a lone Sigmoid: QLinearSigmoid + QLinearMul) and keeps
            the others float (HardSwish written as ``Add``/``Clip``/``Div``, a scaled Sigmoid);
            ``True`` keeps every gate float; ``False`` quantizes every gate the rules allow.
    """

    float_output_heads: bool = True
    mixed_range_ratio: float = 8.0
    float_state_paths: bool = True
    weight_outlier_ratio: float | None = 16.0
    float_self_gates: bool | None = None


@dataclasses.dataclass
class PolicyDecision:
    """What the policy keeps float: node name/id -> reason, tensor -> reason."""

    float_nodes: dict[int, str] = dataclasses.field(default_factory=dict)
    float_tensors: dict[str, str] = dataclasses.field(default_factory=dict)
    #: the tensors an output head assembles into graph outputs (its components, e.g. boxes and
    #: scores): what the data-driven fallback measures
    output_parts: list[str] = dataclasses.field(default_factory=list)
    #: rule (g): node labels that fall back together (producer of x, the gate chain, the Mul)
    groups: list[list[str]] = dataclasses.field(default_factory=list)


def _shape(value: onnx.ValueInfoProto) -> tuple:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)


def _state_pairs(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    inputs = [v for v in graph.input if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    inits = {t.name for t in graph.initializer}
    pairs = []
    for out in graph.output:
        for inp in inputs:
            if inp.name not in inits and _shape(inp) and _shape(inp) == _shape(out):
                pairs.append((inp.name, out.name))
    return pairs


def _reach(index: GraphIndex, starts: set[str], *, forward: bool) -> set[int]:
    """ids of nodes reachable from tensors ``starts`` (forward) or reaching them (backward)."""
    seen: set[int] = set()
    queue = deque(starts)
    visited_tensors = set(starts)
    while queue:
        name = queue.popleft()
        nodes = index.users(name) if forward else ([index.producer[name]] if name in index.producer else [])
        for node in nodes:
            if id(node) in seen:
                continue
            seen.add(id(node))
            nxt = list(node.output) if forward else list(node.input) + _outer_reads(node)
            for t in nxt:
                if t and t not in visited_tensors:
                    visited_tensors.add(t)
                    queue.append(t)
    return seen


def _outer_reads(node: onnx.NodeProto) -> list[str]:
    names: list[str] = []
    for sub in iter_subgraphs(node):
        names.extend(subgraph_outer_inputs(sub))
    return names


def _state_nodes(index: GraphIndex, graph: onnx.GraphProto, decision: PolicyDecision) -> None:
    pairs = _state_pairs(graph)
    if not pairs:
        return
    fwd = _reach(index, {i for i, _ in pairs}, forward=True)
    back = _reach(index, {o for _, o in pairs}, forward=False)
    names = ", ".join(f"{i}->{o}" for i, o in pairs)
    for node in graph.node:
        if id(node) in fwd and id(node) in back:
            decision.float_nodes.setdefault(id(node), f"recurrent state path ({names})")


def _output_heads(index: GraphIndex, graph: onnx.GraphProto, decision: PolicyDecision) -> None:
    queue = deque(index.graph_outputs)
    seen = set(queue)
    while queue:
        name = queue.popleft()
        decision.float_tensors.setdefault(name, "feeds a graph output through data movement only")
        node = index.producer.get(name)
        if node is None or node.op_type not in TRANSPARENT_OPS:
            if name not in decision.output_parts:
                decision.output_parts.append(name)
            continue
        decision.float_nodes.setdefault(id(node), "output head (data movement into a graph output)")
        for t in node.input[:1] if node.op_type != "Concat" else node.input:
            if t and t not in seen and t not in index.initializers:
                seen.add(t)
                queue.append(t)


def _mixed_concats(graph: onnx.GraphProto, table, ratio: float, decision: PolicyDecision) -> None:
    for node in graph.node:
        if node.op_type != "Concat" or len(node.input) < 2:
            continue
        mags = [max(abs(lo), abs(hi)) for lo, hi in (table.range(t) for t in node.input if t in table)]
        if len(mags) >= 2 and min(mags) > 0 and max(mags) / min(mags) > ratio:
            decision.float_nodes.setdefault(
                id(node), f"Concat of mixed ranges (max|x| ratio {max(mags) / min(mags):.0f} > {ratio:g})")


_GATE_OPS = frozenset({"Sigmoid", "HardSigmoid", "Clip", "Add", "Div", "Mul", "Relu"})


def _gate_chain(index: GraphIndex, x: str, g: str, limit: int = 4) -> list[onnx.NodeProto] | None:
    """The nodes computing ``g`` from ``x`` through single-activation element-wise ops, or None."""
    chain = []
    t = g
    for _ in range(limit):
        node = index.producer.get(t)
        if node is None or node.op_type not in _GATE_OPS or node.domain not in ("", "ai.onnx"):
            return None
        acts = [i for i in node.input if i and index.constant(i) is None]
        if len(acts) != 1:
            return None
        chain.append(node)
        if acts[0] == x:
            return chain if any(n.op_type in ("Sigmoid", "HardSigmoid", "Clip") for n in chain) else None
        t = acts[0]
    return None


def _int8_gate(chain: list[onnx.NodeProto]) -> bool:
    """Every op of the gate has an int8 kernel of its own (a unary QLinear op, like Sigmoid)."""
    return all((r := rule_for(n)) is not None and r.kind == "unary" for n in chain)


def _self_gates(index: GraphIndex, graph: onnx.GraphProto, decision: PolicyDecision,
                *, keep_float: bool | None) -> None:
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for x, g in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            chain = _gate_chain(index, x, g)
            if chain:
                group = [node_label(n) for n in reversed(chain)] + [node_label(node)]
                producer = index.producer.get(x)
                if producer is not None and rule_for(producer) is not None:
                    group.insert(0, node_label(producer))
                decision.groups.append(group)
                if keep_float or (keep_float is None and not _int8_gate(chain)):
                    for n in (node, *chain):
                        decision.float_nodes.setdefault(id(n), "self-gated activation x*gate(x) (kept float)")
                break


def weight_outlier_ratio(weight: np.ndarray) -> float:
    """``max|w| / percentile99.9(|w|)`` (1.0 for an all-zero weight)."""
    a = np.abs(np.asarray(weight, dtype=np.float64)).ravel()
    if a.size == 0:
        return 1.0
    p = float(np.percentile(a, 99.9))
    return float(a.max() / p) if p > 0 else 1.0


def _outlier_weights(index: GraphIndex, graph: onnx.GraphProto, limit: float, decision: PolicyDecision) -> None:
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        w = index.constant(node.input[1])
        if w is None or w.dtype.kind != "f":
            continue
        r = weight_outlier_ratio(w)
        if r > limit:
            decision.float_nodes.setdefault(
                id(node), f"weight outliers (max|w| = {r:.0f} x its 99.9th percentile > {limit:g})")


def decide(graph: onnx.GraphProto, index: GraphIndex, table, options: PolicyOptions) -> PolicyDecision:
    """Apply rules (b)-(d) and (g) to ``graph`` (rule (a) lives in the planner)."""
    decision = PolicyDecision()
    if options.float_state_paths:
        _state_nodes(index, graph, decision)
    if options.float_output_heads:
        _output_heads(index, graph, decision)
    if options.mixed_range_ratio:
        _mixed_concats(graph, table, options.mixed_range_ratio, decision)
    _self_gates(index, graph, decision, keep_float=options.float_self_gates)
    if options.weight_outlier_ratio is not None:
        _outlier_weights(index, graph, options.weight_outlier_ratio, decision)
    return decision
