"""Planning: which node units are quantized, with which tensor parameters (no graph edits here).

Steps:

1. Candidates: every main-graph node with a rule (:mod:`passes.quantize._rules`) whose
   activation inputs have calibrated ranges, whose weight is a constant float, that is not
   excluded by the user or kept float by the policy. A unit whose output is a graph output (or a
   policy-float tensor) keeps its output float: a compute unit then still takes quantized inputs
   (onnxruntime runs it in float on dequantized values), any other unit is skipped. A range the
   table lacks for a tensor calibration should have measured (``expected``: a float activation)
   is a :class:`CalibrationError` naming it, never a silent skip; tensors outside ``expected``
   (integer shape arithmetic, types unknown before run time) only leave their node float.
2. Relu/Clip right after a unit with a quantized u8 output is absorbed (the clamp of the
   quantizer is the activation).
3. Isolated units are dropped until stable: a data-movement unit needs a quantized producer
   *and* a quantized consumer; a binary/unary/Concat unit needs one quantized neighbour.
4. Parameters: in graph order, each activation tensor gets its scale and zero point from the
   calibration table, except outputs of ``same_scale`` units, which reuse their input's.
"""

from __future__ import annotations

import collections
import dataclasses

import onnx

from calibration.qparams import QuantParams, quant_params
from passes._errors import CalibrationError
from passes._graph import GraphIndex
from passes.quantize._policy import PolicyDecision
from passes.quantize._rules import ABSORBABLE, OpRule, node_label, rule_for

__all__ = ["Unit", "Plan", "make_plan", "node_label"]


@dataclasses.dataclass
class Unit:
    """One node to quantize.

    Attributes:
        node: the node.
        rule: its rule.
        acts: input tensors quantized as activations.
        output: the tensor whose Q/DQ ends the unit (after absorption), or ``None`` (float out).
        absorbed: a Relu/Clip removed into the quantizer's clamp, if any.
        extra: the further outputs of a multi-output unit (Split), quantized like ``output``
            with its input's parameters.
    """

    node: onnx.NodeProto
    rule: OpRule
    acts: list[str]
    output: str | None
    absorbed: onnx.NodeProto | None = None
    extra: tuple[str, ...] = ()

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every quantized output tensor (``output`` first)."""
        return ((self.output,) if self.output else ()) + self.extra


@dataclasses.dataclass
class Plan:
    """The units, the parameters of every quantized activation tensor, and why others are not."""

    units: list[Unit]
    params: dict[str, QuantParams]
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    float_nodes: dict[str, str] = dataclasses.field(default_factory=dict)


def _no_range(tensor: str, node: onnx.NodeProto, role: str, table) -> CalibrationError:
    held = f"it has ranges for {len(table)} other tensors" if len(table) else "it is empty"
    return CalibrationError(
        f"the calibration table has no range for tensor '{tensor}', the {role} of {node.op_type} "
        f"'{node_label(node)}', which quantization needs ({held}): calibrate this model again (a table must come "
        "from the same graph), with data that gives this tensor finite values"
    )


def _candidate(node, rule, index: GraphIndex, table, opts, decision: PolicyDecision,
               fallback: frozenset[str], expected: frozenset[str]) -> Unit | str:
    """A :class:`Unit` or the reason ``node`` stays float.

    Raises:
        CalibrationError: an input (or quantized output) in ``expected`` has no range.
    """
    if node.op_type in opts.exclude_ops:
        return "excluded op type"
    if node.name and node.name in opts.exclude_nodes:
        return "excluded node"
    if node_label(node) in fallback:
        return "fallback (largest measured error)"
    if id(node) in decision.float_nodes:
        return decision.float_nodes[id(node)]
    slots = range(len(node.input)) if rule.activations is None else rule.activations
    acts = [node.input[s] for s in slots if s < len(node.input) and node.input[s]]
    if rule.kind == "compute":
        w = index.constant(node.input[1]) if len(node.input) > 1 else None
        if w is None:
            return "activation x activation MatMul" if node.op_type == "MatMul" else "weight is not constant"
        if w.dtype.kind != "f":
            return "weight is not float"
        if rule.bias is not None and len(node.input) > rule.bias and node.input[rule.bias]:
            b = index.constant(node.input[rule.bias])
            if b is None or b.ndim != 1:
                return "bias is not a constant vector"
        if node.op_type == "Gemm" and not _plain_gemm(node):
            return "Gemm with transA, alpha or beta != 1"
    if any(index.constant(a) is not None for a in acts):
        return "constant operand"
    missing = [a for a in acts if a not in table]
    if missing:
        needed = [a for a in missing if a in expected]
        if needed:
            raise _no_range(needed[0], node, "input", table)
        return "no calibrated range for an input (not a float activation)"
    outs = [o for o in node.output if o]
    if len(outs) != 1 and not (rule.multi_output and outs and len(outs) == len(node.output)):
        return "more than one output"
    float_out = any(o in index.graph_outputs or o in decision.float_tensors for o in outs)
    if not float_out:
        needed = [o for o in outs if o not in table and o in expected]
        if needed:
            raise _no_range(needed[0], node, "output", table)
        float_out = any(o not in table for o in outs)
    if float_out and rule.kind != "compute":
        return "output stays float (graph output or output head)"
    return Unit(node, rule, acts, None if float_out else outs[0], extra=() if float_out else tuple(outs[1:]))


def _plain_gemm(node: onnx.NodeProto) -> bool:
    attrs = {a.name: a for a in node.attribute}
    return (attrs["transA"].i == 0 if "transA" in attrs else True) and all(
        attrs[k].f == 1.0 for k in ("alpha", "beta") if k in attrs)


def _absorb(unit: Unit, index: GraphIndex, table, decision: PolicyDecision) -> None:
    out = unit.output
    readers = index.consumers.get(out, [])
    if out is None or len(readers) != 1 or index.subgraph_users.get(out) or out in index.graph_outputs:
        return
    act = readers[0][0]
    if act.op_type not in ABSORBABLE or act.domain not in ("", "ai.onnx") or id(act) in decision.float_nodes:
        return
    if act.op_type == "Clip" and not _clip_from_zero(act, index):
        return
    y = act.output[0]
    if (y in index.graph_outputs or y in decision.float_tensors or y not in table
            or index.subgraph_users.get(y)):
        return
    unit.output, unit.absorbed = y, act


def _clip_from_zero(node: onnx.NodeProto, index: GraphIndex) -> bool:
    lo = None
    if len(node.input) > 1 and node.input[1]:
        v = index.constant(node.input[1])
        lo = None if v is None else float(v)
    else:
        lo = next((a.f for a in node.attribute if a.name == "min"), None)
    return lo is not None and lo == 0.0


def _prune_isolated(units: list[Unit], index: GraphIndex) -> list[Unit]:
    while True:
        produced = {o for u in units for o in u.outputs}
        consumed = {a for u in units for a in u.acts}
        keep = []
        for u in units:
            fed = any(a in produced for a in u.acts)
            feeds = any(o in consumed for o in u.outputs)
            if u.rule.kind == "compute" or (fed and feeds) or (u.rule.kind != "drop" and (fed or feeds)):
                keep.append(u)
        if len(keep) == len(units):
            return keep
        units = keep


def make_plan(graph: onnx.GraphProto, index: GraphIndex, table, opts, decision: PolicyDecision,
              *, fallback: frozenset[str] = frozenset(), expected: frozenset[str] = frozenset()) -> Plan:
    """Decide the units and tensor parameters of ``graph`` (see the module docstring).

    ``expected``: the tensors the table should have a range for
    (:func:`calibration.collect.observed_tensors` of the model).

    Raises:
        CalibrationError: a tensor in ``expected`` that a unit needs has no range.
    """
    skipped: collections.Counter = collections.Counter()
    float_nodes: dict[str, str] = {}
    units: list[Unit] = []
    for node in graph.node:
        rule = rule_for(node)
        if rule is None:
            if node.domain not in ("", "ai.onnx"):
                skipped["custom-domain op"] += 1
            continue
        got = _candidate(node, rule, index, table, opts, decision, fallback, expected)
        if isinstance(got, str):
            skipped[got] += 1
            float_nodes[node_label(node)] = got
            continue
        units.append(got)
    if opts.activations == "u8":
        for unit in units:
            if not unit.rule.same_scale:
                _absorb(unit, index, table, decision)
    kept = _prune_isolated(units, index)
    for u in units:
        if u not in kept:
            skipped["isolated (no quantized neighbour)"] += 1
            float_nodes[node_label(u.node)] = "isolated (no quantized neighbour)"
    return Plan(kept, _params(kept, table, opts), skipped, float_nodes)


def _params(units: list[Unit], table, opts) -> dict[str, QuantParams]:
    dtype = "uint8" if opts.activations == "u8" else "int8"
    symmetric = opts.activations == "s8"
    params: dict[str, QuantParams] = {}

    def of(name: str) -> QuantParams:
        if name not in params:
            lo, hi = table.range(name)
            params[name] = quant_params(lo, hi, dtype=dtype, symmetric=symmetric)
        return params[name]

    for u in units:  # graph order: a same-scale unit's input is settled before its output
        for a in u.acts:
            of(a)
        for out in u.outputs:
            if u.rule.same_scale:
                params[out] = of(u.acts[0])
            else:
                of(out)
    return params
