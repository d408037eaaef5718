"""Emission: rewrite the graph from a :class:`~passes.quantize._plan.Plan`.

- Each quantized activation tensor ``t`` gets one ``QuantizeLinear -> DequantizeLinear`` pair.
  When ``t`` is the output of a quantized unit, every direct reader reads the DQ output (so
  onnxruntime can fuse the producer); otherwise only the quantized units read it and float
  readers keep the exact value. Subgraph readers and graph outputs always keep ``t`` itself.
- Weights become an int8 initializer (symmetric; per-channel on the rule's axis, 7-bit with
  ``reduce_range``) read through one DequantizeLinear, shared by units using the same weight.
- Biases become int32 with scale ``s_x · s_w`` (float32 product, per channel) and zero point 0.
- An absorbed Relu/Clip is removed: its producer writes the activation's output tensor, whose
  quantizer clamps to ``[0, rmax]``.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import onnx
from onnx import numpy_helper

from calibration.qparams import QuantParams, quantize, weight_quant_params
from passes._graph import GraphIndex, NameAllocator, iter_subgraphs, remove_nodes, subgraph_outer_inputs, topological_sort
from passes.quantize._plan import Plan, Unit

__all__ = ["emit"]

_INT32 = np.iinfo(np.int32)


class _Emitter:
    def __init__(self, graph: onnx.GraphProto, index: GraphIndex, opts, per_channel: bool,
                 weight_scales: dict[str, np.ndarray] | None = None) -> None:
        self.graph, self.index, self.opts, self.per_channel = graph, index, opts, per_channel
        self.weight_scales = weight_scales or {}
        self.names = NameAllocator(graph)
        self.nodes: list[onnx.NodeProto] = []
        self.weight_dq: dict[tuple[str, int | None], tuple[str, QuantParams]] = {}
        self.stats: collections.Counter = collections.Counter()

    def init(self, hint: str, array: np.ndarray) -> str:
        name = self.names.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def qdq_params(self, hint: str, p: QuantParams) -> tuple[str, str]:
        return self.init(f"{hint}_scale", np.asarray(p.scale, np.float32)), self.init(
            f"{hint}_zero_point", np.asarray(p.zero_point))

    def dq(self, source: str, scale: str, zero: str, hint: str, axis: int | None = None) -> str:
        out = self.names.fresh(f"{hint}_dequantized")
        kwargs = {"axis": axis} if axis is not None else {}
        self.nodes.append(onnx.helper.make_node("DequantizeLinear", [source, scale, zero], [out],
                                                name=self.names.fresh(f"{hint}_DequantizeLinear"), **kwargs))
        return out

    def activation(self, t: str, p: QuantParams) -> str:
        scale, zero = self.qdq_params(t, p)
        q = self.names.fresh(f"{t}_quantized")
        self.nodes.append(onnx.helper.make_node("QuantizeLinear", [t, scale, zero], [q],
                                                name=self.names.fresh(f"{t}_QuantizeLinear")))
        self.stats["activations_quantized"] += 1
        return self.dq(q, scale, zero, t)

    def weight(self, unit: Unit) -> tuple[str, QuantParams]:
        name = unit.node.input[unit.rule.weight]
        w = self.index.constant(name)
        axis = unit.rule.axis(unit.node) % w.ndim if self.per_channel and unit.rule.axis else None
        if unit.node.op_type == "MatMul":
            axis = w.ndim - 1 if self.per_channel and w.ndim == 2 else None
        key = (name, axis)
        if key not in self.weight_dq:
            p = weight_quant_params(w, axis=axis, dtype="int8", symmetric=True, reduce_range=self.opts.reduce_range)
            given = self.weight_scales.get(name)
            if given is not None and np.shape(given) == np.shape(p.scale):  # chosen with the rounding
                p = dataclasses.replace(p, scale=np.asarray(given, np.float32))
            q = self.init(f"{name}_quantized", quantize(w, p))
            scale, zero = self.qdq_params(name, p)
            self.weight_dq[key] = (self.dq(q, scale, zero, name, axis), p)
            self.stats["weights_quantized"] += 1
        return self.weight_dq[key]

    def bias(self, unit: Unit, x: QuantParams, w: QuantParams) -> str:
        name = unit.node.input[unit.rule.bias]
        b = self.index.constant(name).astype(np.float64)
        scale = (np.float32(x.scale) * np.asarray(w.scale, np.float32)).astype(np.float32)
        scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        q = np.clip(np.round(b / scale), _INT32.min, _INT32.max).astype(np.int32)
        scale_full = np.broadcast_to(scale, b.shape).astype(np.float32) if w.per_channel else scale
        axis = 0 if w.per_channel else None
        qn = self.init(f"{name}_quantized", q)
        sn = self.init(f"{name}_scale", np.asarray(scale_full, np.float32))
        zn = self.init(f"{name}_zero_point", np.zeros(np.shape(scale_full), np.int32))
        self.stats["biases_quantized"] += 1
        return self.dq(qn, sn, zn, name, axis)


def emit(graph: onnx.GraphProto, index: GraphIndex, plan: Plan, opts, *, per_channel: bool,
         weight_scales: dict[str, np.ndarray] | None = None) -> collections.Counter:
    """Rewrite ``graph`` in place according to ``plan``; returns emission counters.

    ``weight_scales``: weight initializer name -> the scale its int8 grid was chosen with (a
    learned rounding); other weights get the scale of their own range.
    """
    em = _Emitter(graph, index, opts, per_channel, weight_scales)
    absorbed = []
    for unit in plan.units:
        if unit.absorbed is not None:
            unit.node.output[0] = unit.absorbed.output[0]
            absorbed.append(unit.absorbed)
    dq_of = {t: em.activation(t, p) for t, p in plan.params.items()}
    _rewire(graph, plan, dq_of)
    for unit in plan.units:
        if unit.rule.kind != "compute":
            continue
        wdq, wp = em.weight(unit)
        unit.node.input[unit.rule.weight] = wdq
        b = unit.rule.bias
        if b is not None and len(unit.node.input) > b and unit.node.input[b]:
            unit.node.input[b] = em.bias(unit, plan.params[unit.acts[0]], wp)
    em.stats["activations_absorbed"] = remove_nodes(graph, absorbed)
    graph.node.extend(em.nodes)
    _drop_unused_constants(graph)
    topological_sort(graph)
    return em.stats


def _rewire(graph: onnx.GraphProto, plan: Plan, dq_of: dict[str, str]) -> None:
    unit_outputs = {o for u in plan.units for o in u.outputs}
    unit_slots = {(id(u.node), a) for u in plan.units for a in u.acts}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in dq_of and (name in unit_outputs or (id(node), name) in unit_slots):
                node.input[slot] = dq_of[name]


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input}
    for n in graph.node:
        for sub in iter_subgraphs(n):
            used |= subgraph_outer_inputs(sub)
    used |= {o.name for o in graph.output} | {i.name for i in graph.input}
    dead = [n for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
            and not any(o in used for o in n.output)]
    remove_nodes(graph, dead)
    kept = [t for t in graph.initializer if t.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
