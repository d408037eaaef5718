"""Bias correction: cancel the mean error int8 adds to each output channel of a weighted unit.

Quantizing a unit's input and weight shifts the *mean* of each output channel:
``E[y_q - y] = E[x_q]·W_q - E[x]·W`` is not zero in general (rounding of a weight row does not
average out over one row, clipped input ranges move the mean). Empirical bias correction
(Nagel et al. 2019, "Data-Free Quantization", §4.2, in its empirical form) measures that shift
on calibration samples and subtracts it from the unit's bias:

    shift_c = mean over samples and positions of (y_float[c] - y_int8[c])
    b'_c    = b_c + shift_c

where ``y`` is the unit's own output before any absorbed Relu (its pre-activation: the shift is
of the affine output, which the bias moves exactly). With one unit and the correction measured on
the same samples, the corrected model's mean output error per channel is zero up to the int32
bias rounding (``s_x·s_w / 2``); that is what the tests check.

Units corrected: Conv (channel axis 1; a Conv without bias gets one), Gemm with a 1-D or absent
``C`` (last axis), and MatMul whose only reader is an ``Add`` of a constant vector over the last
axis (the exporters' Linear: the Add's constant is the bias). Other units (no bias slot, a 2-D
Gemm ``C``, ConvTranspose) are left alone and counted.

Measured locally: each unit's shift is measured with *float* inputs from the float model,
quantized by the unit's own input quantizer, and its int8 weights — a copy of the unit beside the
original in one probe model, so one pass over the samples measures every unit. A unit's shift is
then its own error only: measuring on the quantized model instead would include the mean error
its inputs inherit from upstream units, which their own corrections already remove, and the
deeper units would over-correct (YOLOv8n, 64 Convs corrected at once that way: class-score SQNR
12 dB -> -14 dB).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from passes._graph import GraphIndex, NameAllocator, topological_sort
from passes.quantize._fallback import probe_session
from passes.quantize._rules import node_label

__all__ = ["BiasTarget", "LocalProbe", "apply_bias_shifts", "bias_targets", "measure_shifts"]


@dataclasses.dataclass(frozen=True)
class BiasTarget:
    """A unit whose bias can absorb a mean shift.

    Attributes:
        label: the unit's node label.
        tensor: the unit's output in the float model (its ``output[0]``; the affine output
            before any activation, and for a MatMul before the bias Add).
        channels: length of the channel axis (the bias length).
        axis: the channel axis of ``tensor`` (1 for Conv, -1 otherwise).
        after_add: the bias is the constant of the Add after it (a MatMul unit).
    """

    label: str
    tensor: str
    channels: int
    axis: int
    after_add: bool = False


def _matmul_bias_add(node: onnx.NodeProto, index: GraphIndex) -> tuple[onnx.NodeProto, int] | None:
    readers = index.consumers.get(node.output[0], [])
    if len(readers) != 1 or index.subgraph_users.get(node.output[0]) or node.output[0] in index.graph_outputs:
        return None
    add, slot = readers[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
        return None
    other = index.constant(add.input[1 - slot])
    return (add, 1 - slot) if other is not None and other.ndim == 1 and other.dtype.kind == "f" else None


def bias_targets(graph: onnx.GraphProto, labels: Sequence[str]) -> list[BiasTarget]:
    """The units among ``labels`` (quantized node labels of ``graph``, the float model) whose
    bias can be corrected, in graph order."""
    index = GraphIndex.build(graph)
    wanted = set(labels)
    out: list[BiasTarget] = []
    for node in graph.node:
        label = node_label(node)
        if label not in wanted or len(node.input) < 2:
            continue
        w = index.constant(node.input[1])
        if w is None:
            continue
        if node.op_type == "Conv" and w.ndim >= 3:
            out.append(BiasTarget(label, node.output[0], int(w.shape[0]), 1))
        elif node.op_type == "Gemm" and w.ndim == 2:
            c = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and (c is None or c.ndim > 1):
                continue
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            out.append(BiasTarget(label, node.output[0], int(w.shape[0] if trans_b else w.shape[1]), -1))
        elif node.op_type == "MatMul" and w.ndim == 2:
            found = _matmul_bias_add(node, index)
            if found is not None and index.constant(found[0].input[found[1]]).shape[0] == w.shape[1]:
                out.append(BiasTarget(label, node.output[0], int(w.shape[1]), -1, after_add=True))
    return out


class LocalProbe:
    """The float model plus copies of quantized units that read float inputs through a quantizer
    (:meth:`unit`): one session then measures each unit's own error, with nothing inherited.

    ``quant_model`` supplies the quantizers and int8 weights (its DequantizeLinear nodes);
    :meth:`quantizer` adds other activation parameters (e.g. candidate ranges).
    """

    def __init__(self, float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(float_model)
        self.graph = self.model.graph
        self.names = NameAllocator(self.graph)
        self.q_nodes = {o: n for n in quant_model.graph.node for o in n.output}
        self.q_inits = {t.name: t for t in quant_model.graph.initializer}
        self.have = {t.name for t in self.graph.initializer}
        self.float_nodes = {node_label(n): n for n in self.graph.node}
        self.float_tensors = {o for n in self.graph.node for o in n.output} | {i.name for i in self.graph.input}
        for name in self.q_inits:
            self.names.reserve(name)
        self._copied: dict[str, str] = {}

    def _init(self, name: str) -> str:
        if name not in self.have and name in self.q_inits:
            self.graph.initializer.append(self.q_inits[name])
            self.have.add(name)
        return name

    def _node(self, op: str, inputs: list[str], hint: str, template: onnx.NodeProto | None = None) -> str:
        out = self.names.fresh(f"{hint}_local")
        attrs = {} if template is None else {a.name: onnx.helper.get_attribute_value(a) for a in template.attribute}
        self.graph.node.append(onnx.helper.make_node(op, inputs, [out], name=self.names.fresh(f"{hint}_local_node"),
                                                     domain="" if template is None else template.domain, **attrs))
        return out

    def dequantized(self, tensor: str) -> str | None:
        """A probe tensor equal to the quantized model's DequantizeLinear output ``tensor``,
        recomputed from float values (activation: ``DQ(Q(float x))``; weight: ``DQ(int8)``);
        ``None`` when ``tensor`` is no such output."""
        if tensor in self._copied:
            return self._copied[tensor]
        dq = self.q_nodes.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        source = dq.input[0]
        if source in self.q_inits:
            inputs = [self._init(i) for i in dq.input]
        else:
            q = self.q_nodes.get(source)
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in self.float_tensors:
                return None
            inputs = [self._node("QuantizeLinear", [q.input[0]] + [self._init(i) for i in q.input[1:]], source, q)]
            inputs += [self._init(i) for i in dq.input[1:]]
        self._copied[tensor] = self._node("DequantizeLinear", inputs, tensor, dq)
        return self._copied[tensor]

    def quantizer(self, tensor: str, scale: np.ndarray, zero_point: np.ndarray, hint: str) -> str:
        """``DQ(Q(tensor))`` of the float ``tensor`` with the given parameters."""
        s = self.names.fresh(f"{hint}_scale")
        z = self.names.fresh(f"{hint}_zero_point")
        self.graph.initializer.extend([numpy_helper.from_array(np.asarray(scale, np.float32), s),
                                       numpy_helper.from_array(np.asarray(zero_point), z)])
        q = self._node("QuantizeLinear", [tensor, s, z], hint)
        return self._node("DequantizeLinear", [q, s, z], hint)

    def unit(self, label: str, raw_output: str, x: str | None = None) -> str | None:
        """A copy of unit ``label`` (found in the quantized model by the tensor its node writes)
        reading ``x`` (default: its own quantizer on the float input) and its int8 weight, with
        the float bias; returns the copy's output, or ``None`` when it cannot be built."""
        qnode = self.q_nodes.get(raw_output)
        fnode = self.float_nodes.get(label)
        if qnode is None or fnode is None or qnode.op_type != fnode.op_type:
            return None
        x = x if x is not None else self.dequantized(qnode.input[0])
        w = self.dequantized(qnode.input[1])
        if x is None or w is None:
            return None
        return self._node(fnode.op_type, [x, w] + list(fnode.input[2:]), fnode.output[0], fnode)

    def input_quantizer(self, raw_output: str) -> onnx.NodeProto | None:
        """The QuantizeLinear of the unit's input in the quantized model."""
        qnode = self.q_nodes.get(raw_output)
        dq = None if qnode is None else self.q_nodes.get(qnode.input[0])
        q = None if dq is None or dq.op_type != "DequantizeLinear" else self.q_nodes.get(dq.input[0])
        return q if q is not None and q.op_type == "QuantizeLinear" else None

    def finish(self) -> onnx.ModelProto:
        """The probe model, its nodes in topological order."""
        topological_sort(self.graph)
        return self.model


def measure_shifts(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, targets: Sequence[BiasTarget],
                   raw_outputs: Mapping[str, str], samples: Sequence[Mapping[str, np.ndarray]]
                   ) -> dict[str, np.ndarray]:
    """Per target, ``mean(y_float - y_local)`` per channel over ``samples`` and every other axis,
    where ``y_local`` is the unit's output computed locally (module docstring).

    ``raw_outputs``: target label -> the tensor its node writes in ``quant_model`` (to find the
    node and its quantizers there). A target whose copy cannot be built or whose output has
    another shape is left out.
    """
    if not targets or not samples:
        return {}
    probe = LocalProbe(float_model, quant_model)
    local = {t.label: out for t in targets if (out := probe.unit(t.label, raw_outputs.get(t.label, ""))) is not None}
    chosen = [t for t in targets if t.label in local]
    if not chosen:
        return {}
    session = probe_session(probe.finish(), [t.tensor for t in chosen] + [local[t.label] for t in chosen])
    inputs = {i.name for i in session.get_inputs()}
    sums = {t.label: np.zeros(t.channels, np.float64) for t in chosen}
    counts = dict.fromkeys(sums, 0)
    bad: set[str] = set()
    for sample in samples:
        feeds = {k: np.asarray(v) for k, v in sample.items() if k in inputs}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for t in chosen:
            a, b = np.asarray(got[t.tensor]), np.asarray(got[local[t.label]])
            if a.shape != b.shape or a.ndim == 0 or a.shape[t.axis] != t.channels:
                bad.add(t.label)
                continue
            diff = np.moveaxis(a.astype(np.float64) - b.astype(np.float64), t.axis, -1).reshape(-1, t.channels)
            sums[t.label] += diff.sum(axis=0)
            counts[t.label] += diff.shape[0]
    return {label: sums[label] / counts[label] for label in sums if label not in bad and counts[label]}


def apply_bias_shifts(graph: onnx.GraphProto, shifts: Mapping[str, np.ndarray]) -> int:
    """Add ``shifts[label]`` to the bias of each labelled unit of ``graph`` (in place; a fresh
    initializer per unit, so a shared bias stays as it was for its other readers). Returns how
    many biases changed."""
    if not shifts:
        return 0
    index = GraphIndex.build(graph)
    names = NameAllocator(graph)
    changed = 0
    for node in list(graph.node):
        shift = shifts.get(node_label(node))
        if shift is None:
            continue
        if node.op_type == "MatMul":
            found = _matmul_bias_add(node, index)
            if found is None:
                continue
            holder, slot = found
        else:
            holder, slot = node, 2
        old = index.constant(holder.input[slot]) if len(holder.input) > slot and holder.input[slot] else None
        base = np.zeros(shift.shape, np.float32) if old is None else np.broadcast_to(old, shift.shape)
        dtype = np.float32 if old is None else old.dtype
        new = names.fresh(f"{node.name or node.output[0]}_bias_corrected")
        graph.initializer.append(numpy_helper.from_array((base.astype(np.float64) + shift).astype(dtype), new))
        while len(holder.input) <= slot:
            holder.input.append("")
        holder.input[slot] = new
        changed += 1
    return changed
