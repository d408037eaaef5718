"""Per-node decision: which of a node's type variables become float16, and why a node stays fp32.

A node of the default ONNX domain is read through its schema (for the model's opset):

- a type variable is *bound to float* when one of its slots holds a float32 tensor;
- its *converted* variables are those bound to float that allow ``tensor(float16)`` and type an
  output (plus :data:`~passes.fp16._kernels.EXTRA_CONVERTED`); every slot they type becomes
  float16 together, so an output bound to an input's variable always matches it;
- an input-only variable (Resize ``roi``, Pow's exponent, Shape's or Cast's input) is *flexible*:
  it reads its tensor in whatever precision that tensor has (no Cast) — unless the op's outputs
  could depend on it (sequence outputs) or onnxruntime refuses some bindings of the op
  (:data:`~passes.fp16._kernels.ORT_UNSUPPORTED`), where every variable is fixed explicitly;
- slots typed by a fixed type (``tensor(float)``: Resize ``scales``, NonMaxSuppression's inputs)
  and variables that do not allow float16 (Range's ``T``) keep float32;
- an output type set only by an attribute (RandomNormal's ``dtype``, EyeLike's) is not converted,
  except Cast (``to``), ConstantOfShape (``value``) and Constant, which the pass rewrites.

A node stays fp32, with a reason, when the user blocks it, when it is outside the default
domain, when its op is in :data:`~passes.fp16._kernels.DEFAULT_BLOCK_OPS`, when onnxruntime
cannot load it in float16, when a converted slot reads a constant beyond ±65504, or — given
ranges — when a converted slot's observed magnitude exceeds ``safe_max`` or a reduction's
accumulator would (mean: ``max|out| × n``; L2: ``max|out|²``; log-sum(-exp): ``exp(max out)``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import defs

from passes._graph import is_onnx_domain, iter_subgraphs
from passes.fp16._facts import FLOAT, FLOAT16, FP16_MAX, NON_TENSOR, ModelFacts, format_magnitude
from passes.fp16._kernels import DEFAULT_BLOCK_OPS, EXTRA_CONVERTED, ORT_MIN_OPSET, ORT_UNSUPPORTED

__all__ = ["NodePlan", "PlanSettings", "Planner", "node_label"]

_F16 = "tensor(float16)"
_CONTROL_FLOW = ("If", "Loop", "Scan")
#: Reductions whose accumulator is larger than their output: op -> how to estimate it.
_ACCUMULATORS = {
    "ReduceMean": "mean",
    "GlobalAveragePool": "mean",
    "ReduceL2": "square",
    "ReduceLogSum": "exp",
    "ReduceLogSumExp": "exp",
}

Want = int | str | None  # an element type, "flex:<var>", or None (no constraint)


@dataclasses.dataclass
class NodePlan:
    """What to do with one node.

    Attributes:
        kind: ``fp16`` (some variables converted), ``fp32`` (kept, with a reason),
            ``passthrough`` (no float32 slot, or flexible inputs only), ``cast``, ``constant``,
            ``control`` (If/Loop/Scan whose bodies are converted) or ``untouched`` (a node
            whose subgraphs are left as they are).
        wants: per input slot, the element type it must read, ``"flex:<var>"``, or ``None``.
        out_fp16: per output slot, whether it becomes float16.
        reason: why a node with float32 slots stays fp32.
        detail: the tensor and magnitude behind a range-based reason.
    """

    kind: str
    wants: list[Want]
    out_fp16: list[bool]
    reason: str | None = None
    detail: dict[str, object] | None = None


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """The options a decision depends on."""

    opset: int
    block_ops: frozenset[str]
    block_nodes: frozenset[str]
    ranges: Mapping[str, tuple[float, float]]
    safe_max: float


def node_label(node: onnx.NodeProto) -> str:
    """The node's name, or ``<op>:<first output>`` when it has none."""
    return node.name or f"{node.op_type}:{node.output[0] if node.output else ''}"


def _formal(params: list[defs.OpSchema.FormalParameter], slot: int) -> defs.OpSchema.FormalParameter | None:
    if slot < len(params):
        return params[slot]
    if params and params[-1].option == defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


@dataclasses.dataclass
class _Binding:
    """How a node's slots map to its schema's type variables, and what each is bound to."""

    allowed: dict[str, set[str]]
    in_var: dict[int, str]
    out_var: dict[int, str]
    bound: dict[str, set[int | None]]

    def float_vars(self) -> set[str]:
        return {v for v, types in self.bound.items() if FLOAT in types}

    def fp16_vars(self) -> set[str]:
        return {v for v, types in self.bound.items() if FLOAT16 in types}


class Planner:
    """Decides a :class:`NodePlan` for each node from the model's facts and the options."""

    def __init__(self, facts: ModelFacts, settings: PlanSettings) -> None:
        self.facts = facts
        self.settings = settings
        self._schemas: dict[str, defs.OpSchema | None] = {}

    # -- helpers ------------------------------------------------------------------------------
    def _type(self, name: str) -> int | None:
        return self.facts.types.get(name) if name else None

    def _keep(self, node: onnx.NodeProto, kind: str, reason: str | None) -> NodePlan:
        wants: list[Want] = [self._type(n) for n in node.input]
        return NodePlan(kind, wants, [False] * len(node.output), reason)

    def _has_float32(self, node: onnx.NodeProto) -> bool:
        return any(self._type(n) == FLOAT for n in (*node.input, *node.output))

    def _schema(self, op: str) -> defs.OpSchema | None:
        if op not in self._schemas:
            try:
                self._schemas[op] = defs.get_schema(op, self.settings.opset, "")
            except defs.SchemaError:
                self._schemas[op] = None
        return self._schemas[op]

    def _bind(self, node: onnx.NodeProto, schema: defs.OpSchema) -> _Binding:
        allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
        binding = _Binding(allowed, {}, {}, defaultdict(set))
        for slots, params, table in ((node.input, list(schema.inputs), binding.in_var),
                                     (node.output, list(schema.outputs), binding.out_var)):
            for slot, name in enumerate(slots):
                param = _formal(params, slot) if name else None
                if param is not None and param.type_str in allowed:
                    table[slot] = param.type_str
                    binding.bound[param.type_str].add(self._type(name))
        for slot, var in binding.out_var.items():  # an output inference left untyped follows its variable
            known = binding.bound[var] - {None}
            if self._type(node.output[slot]) is None and len(known) == 1:
                self.facts.types[node.output[slot]] = next(iter(known))
        return binding

    # -- the decision -------------------------------------------------------------------------
    def plan(self, node: onnx.NodeProto) -> NodePlan:
        """Decide what happens to ``node`` (see the module docstring)."""
        has_float = self._has_float32(node)
        subgraphs = any(True for _ in iter_subgraphs(node))
        if not is_onnx_domain(node):
            reason = f"custom domain '{node.domain}'" if has_float or subgraphs else None
            return self._keep(node, "untouched" if subgraphs else "fp32", reason)
        blocked = self._user_block(node)
        if blocked:
            return self._keep(node, "untouched" if subgraphs else "fp32", blocked)
        if node.op_type in _CONTROL_FLOW:
            return self._keep(node, "control", None)
        if subgraphs:
            return self._keep(node, "untouched", f"{node.op_type} bodies are not converted")
        if node.op_type == "Constant":
            return NodePlan("constant", [], [False] * len(node.output))
        if not has_float:
            return self._keep(node, "passthrough", None)
        if node.op_type in DEFAULT_BLOCK_OPS:
            return self._keep(node, "fp32", f"default block list: {DEFAULT_BLOCK_OPS[node.op_type]}")
        schema = self._schema(node.op_type)
        if schema is None:
            return self._keep(node, "fp32", f"no schema for {node.op_type} at opset {self.settings.opset}")
        if self.settings.opset < ORT_MIN_OPSET:
            return self._keep(node, "fp32", f"model opset {self.settings.opset} < {ORT_MIN_OPSET} (not verified)")
        if node.op_type == "Cast":
            return NodePlan("cast", ["flex:T1"], [False] * len(node.output))
        return self._typed(node, schema)

    def _user_block(self, node: onnx.NodeProto) -> str | None:
        if node.name and node.name in self.settings.block_nodes:
            return "blocked by user (node)"
        if node.op_type in self.settings.block_ops:
            return "blocked by user (op type)"
        return None

    def _typed(self, node: onnx.NodeProto, schema: defs.OpSchema) -> NodePlan:
        b = self._bind(node, schema)
        floats = b.float_vars()
        capable = {v for v in floats if _F16 in b.allowed[v]}
        in_vars, out_vars = set(b.in_var.values()), set(b.out_var.values())
        converted = {v for v in capable if v in out_vars} | (EXTRA_CONVERTED.get(node.op_type, frozenset()) & capable)
        attr_typed = {v for v in converted if v not in in_vars and node.op_type != "ConstantOfShape"}
        converted -= attr_typed
        fixed = bool(attr_typed) or (node.op_type, schema.since_version) in ORT_UNSUPPORTED
        if (node.op_type, schema.since_version) in ORT_UNSUPPORTED and converted:
            converted = self._loadable(node, schema, b, converted, capable)
            if converted is None:
                reason = f"onnxruntime cannot load {node.op_type}-{schema.since_version} in float16"
                return self._keep(node, "fp32", reason)
        if not converted:
            return self._no_conversion(node, b, floats & out_vars, attr_typed, fixed)
        problem = self._range_problem(node, b, converted)
        if problem is not None:
            plan = self._keep(node, "fp32", problem[0])
            plan.detail = problem[1]
            return plan
        flexible = set() if fixed or not self._outputs_independent(node, b, converted) else capable - converted
        return self._wants(node, b, converted, flexible, "fp16")

    def _loadable(self, node: onnx.NodeProto, schema: defs.OpSchema, b: _Binding, converted: set[str],
                  capable: set[str]) -> set[str] | None:
        bad = ORT_UNSUPPORTED[(node.op_type, schema.since_version)]
        already = {v for v in b.fp16_vars() if _F16 in b.allowed[v]}
        optional = sorted(capable - converted)
        for size in range(len(optional), -1, -1):
            for extra in itertools.combinations(optional, size):
                chosen = converted | set(extra)
                if frozenset(chosen | already) not in bad:
                    return chosen
        return None

    def _outputs_independent(self, node: onnx.NodeProto, b: _Binding, converted: set[str]) -> bool:
        """Whether no output's type can follow an input-only variable (so inputs may flex)."""
        for slot, name in enumerate(node.output):
            if not name or b.out_var.get(slot) in converted:
                continue
            if self._type(name) in (None, NON_TENSOR, FLOAT):
                return False
        return True

    def _no_conversion(self, node: onnx.NodeProto, b: _Binding, float_outs: set[str], attr_typed: set[str],
                       fixed: bool) -> NodePlan:
        if attr_typed:
            return self._keep(node, "fp32", f"{node.op_type} output type is set by an attribute")
        if float_outs:
            names = ", ".join(sorted(float_outs))
            return self._keep(node, "fp32", f"schema: {node.op_type} type {names} does not allow float16")
        capable = {v for v in b.float_vars() if _F16 in b.allowed[v]}
        flexible = set() if fixed or not self._outputs_independent(node, b, set()) else capable
        return self._wants(node, b, set(), flexible, "passthrough")

    def _wants(self, node: onnx.NodeProto, b: _Binding, converted: set[str], flexible: set[str], kind: str) -> NodePlan:
        wants: list[Want] = []
        for slot, name in enumerate(node.input):
            var = b.in_var.get(slot)
            if var in converted:
                wants.append(FLOAT16)
            elif var in flexible:
                wants.append(f"flex:{var}")
            else:
                wants.append(self._type(name))
        out = [b.out_var.get(slot) in converted for slot in range(len(node.output))]
        return NodePlan(kind, wants, out)

    # -- ranges ---------------------------------------------------------------------------------
    def _range_problem(self, node: onnx.NodeProto, b: _Binding, converted: set[str]) -> tuple[str, dict] | None:
        slots = [n for s, n in enumerate(node.input) if b.in_var.get(s) in converted]
        outs = [n for s, n in enumerate(node.output) if b.out_var.get(s) in converted]
        for name in slots:
            info = self.facts.constants.get(name)
            if info is not None and info.max_abs > FP16_MAX:
                return "reads a constant beyond fp16 range (|x| > 65504)", {"tensor": name, "max_abs": info.max_abs}
        if node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            array = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(0)
            peak = float(np.abs(array[np.isfinite(array)]).max(initial=0.0))
            if peak > FP16_MAX:
                return "value beyond fp16 range (|x| > 65504)", {"max_abs": peak}
        ranges, limit = self.settings.ranges, self.settings.safe_max
        for name in (*slots, *outs):
            if name in ranges:
                lo, hi = ranges[name]
                if max(abs(lo), abs(hi)) > limit:
                    reason = f"observed range exceeds fp16 safe range (|x| > {format_magnitude(limit)})"
                    return reason, {"tensor": name, "range": [float(lo), float(hi)]}
        return self._accumulator_problem(node, outs)

    def _accumulator_problem(self, node: onnx.NodeProto, outs: list[str]) -> tuple[str, dict] | None:
        how = _ACCUMULATORS.get(node.op_type)
        if how is None or not outs or outs[0] not in self.settings.ranges:
            return None
        lo, hi = self.settings.ranges[outs[0]]
        peak = max(abs(lo), abs(hi))
        if how == "mean":
            count = self._reduced_count(node)
            if count is None:
                return None
            estimate = peak * count
        elif how == "square":
            estimate = peak * peak
        else:
            estimate = math.exp(min(hi, 700.0))
        if estimate <= self.settings.safe_max:
            return None
        limit = format_magnitude(self.settings.safe_max)
        reason = f"reduction accumulator would exceed fp16 safe range (|x| > {limit})"
        return reason, {"tensor": outs[0], "range": [float(lo), float(hi)], "accumulator": estimate}

    def _reduced_count(self, node: onnx.NodeProto) -> int | None:
        shapes = self.facts.shapes
        if not node.input or node.input[0] not in shapes or node.output[0] not in shapes:
            return None
        size_in, size_out = math.prod(shapes[node.input[0]]), math.prod(shapes[node.output[0]])
        return size_in // size_out if size_out else None
