"""What to observe, how big it is, and the in-memory model copies that expose it.

- :func:`infer_tensors` runs ONNX shape inference on a light copy of the graph (large weights
  become typed inputs, so no weight data is copied) with the first sample's concrete input
  shapes, giving each tensor's element type and, where known, its shape.
- :func:`select_tensors` picks what a quantizer could need: float graph inputs and float outputs
  of main-graph nodes, excluding initializers and constants (Constant nodes and anything computed
  only from constants). Tensors inside If/Loop/Scan bodies cannot be graph outputs: they are
  counted, not observed.
- :func:`plan_chunks` groups tensors, in graph order, so that one run's exposed outputs fit a
  byte budget.
- :func:`chunk_model` builds the copy for one chunk: only the nodes the chunk's tensors depend on
  (onnxruntime runs every node of a graph even when no output needs it), the model's own outputs
  dropped, each observed tensor exposed as an output — or, for in-graph min/max, reduced by a
  ReduceMin/ReduceMax pair placed right after its producer so only two scalars leave the session
  (run with onnxruntime's priority-based execution order, which follows the node order, the
  tensor is freed as usual; appended at the end instead, every activation stayed alive: 827 MB
  instead of 185 MB on PP-OCR det at 640×640).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from passes._errors import CalibrationError

__all__ = [
    "FLOAT_TYPES",
    "TensorInfo",
    "Selection",
    "infer_tensors",
    "select_tensors",
    "plan_chunks",
    "chunk_model",
]

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16})
_SMALL_INIT = 64  # initializers up to this many elements stay in the light copy (shape data)
_RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                         "Bernoulli"})


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Element type (0 when unknown) and shape (``None`` when not fully known) of a tensor."""

    elem_type: int
    shape: tuple[int, ...] | None

    def nbytes(self) -> int | None:
        """Bytes of the tensor, when type and shape are known."""
        if self.shape is None or self.elem_type == 0:
            return None
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.elem_type)).itemsize
        return math.prod(self.shape) * itemsize


@dataclasses.dataclass(frozen=True)
class Selection:
    """Tensors to observe in graph order (graph inputs first), and skip counts by reason."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    skipped: Mapping[str, int]


def _value_info(name: str, elem_type: int, dims: Sequence[int]) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, elem_type, list(dims))


def _light_model(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    graph = model.graph
    light = onnx.helper.make_graph([], graph.name or "g", [], [])
    light.node.extend(graph.node)
    inits = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name in shapes and value.name not in inits:
            light.input.append(_value_info(value.name, value.type.tensor_type.elem_type, shapes[value.name]))
        elif value.name not in inits:
            light.input.append(value)
    for tensor in graph.initializer:
        if math.prod(tensor.dims) <= _SMALL_INIT:
            light.initializer.append(tensor)
        else:
            light.input.append(_value_info(tensor.name, tensor.data_type, tensor.dims))
    light.output.extend(graph.output)
    out = onnx.helper.make_model(light, opset_imports=model.opset_import, ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out


def infer_tensors(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> dict[str, TensorInfo]:
    """Types and shapes of the model's tensors for inputs of the given concrete shapes.

    Shape inference failing (custom ops, unusual models) is not an error: the tensors it could
    not reach stay unknown and are typed at run time.
    """
    light = _light_model(model, shapes)
    try:
        light = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; unknown types are handled later
        pass
    infos: dict[str, TensorInfo] = {}
    for value in (*light.graph.input, *light.graph.value_info, *light.graph.output):
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        known = tensor.HasField("shape") and all(d >= 0 for d in dims)
        if value.type.HasField("tensor_type") and tensor.elem_type:
            infos[value.name] = TensorInfo(tensor.elem_type, dims if known else None)
        elif value.type.WhichOneof("value") is not None:
            infos[value.name] = TensorInfo(-1, None)  # a sequence, map or optional: not a tensor
    return infos


def _subgraphs(node: onnx.NodeProto) -> Iterable[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _outer_uses(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for sub in _subgraphs(node):
            used |= _outer_uses(sub)
        defined.update(node.output)
    return used - defined


def _node_reads(node: onnx.NodeProto) -> set[str]:
    reads = {i for i in node.input if i}
    for sub in _subgraphs(node):
        reads |= _outer_uses(sub)
    return reads


def _count_subgraph_tensors(graph: onnx.GraphProto) -> int:
    count = 0
    for node in graph.node:
        count += sum(1 for o in node.output if o)
        count += sum(_count_subgraph_tensors(sub) for sub in _subgraphs(node))
    return count


def _is_constant(node: onnx.NodeProto, constants: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type in _RANDOM_OPS or any(True for _ in _subgraphs(node)):
        return False
    if node.op_type == "Constant":
        return True
    reads = [i for i in node.input if i]
    return bool(reads) and all(i in constants for i in reads)


def select_tensors(
    model: onnx.ModelProto, infos: Mapping[str, TensorInfo], tensors: Sequence[str] | None = None
) -> Selection:
    """Float activations to observe (see the module docstring), or the ``tensors`` given.

    Raises:
        CalibrationError: a requested tensor does not exist in the main graph, is constant, or
            is not a float tensor.
    """
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    skipped = {"constant": 0, "not float": 0, "inside a subgraph": 0}
    candidates: list[tuple[str, bool]] = [(v.name, True) for v in graph.input if v.name not in constants]
    for node in graph.node:
        skipped["inside a subgraph"] += sum(_count_subgraph_tensors(sub) for sub in _subgraphs(node))
        const = _is_constant(node, constants)
        for name in (o for o in node.output if o):
            if const:
                constants.add(name)
                skipped["constant"] += 1
            else:
                candidates.append((name, False))
    if tensors is not None:
        return _explicit(list(tensors), candidates, constants, infos)
    chosen = []
    for name, is_input in candidates:
        elem = infos.get(name, TensorInfo(0, None)).elem_type
        if elem in FLOAT_TYPES or (elem == 0 and not is_input):
            chosen.append((name, is_input))
        else:
            skipped["not float"] += 1
    return Selection(tuple(n for n, i in chosen if i), tuple(n for n, i in chosen if not i), skipped)


def _explicit(
    wanted: list[str], candidates: list[tuple[str, bool]], constants: set[str], infos: Mapping[str, TensorInfo]
) -> Selection:
    known = dict(candidates)
    for name in wanted:
        if name in constants:
            raise CalibrationError(f"tensor '{name}' is an initializer or constant; it needs no calibration")
        if name not in known:
            raise CalibrationError(f"tensor '{name}' is not produced in the model's main graph")
        elem = infos.get(name, TensorInfo(0, None)).elem_type
        if elem not in FLOAT_TYPES and elem != 0:
            kind = onnx.TensorProto.DataType.Name(elem) if elem > 0 else "not a tensor"
            raise CalibrationError(f"tensor '{name}' is {kind}, not a float tensor")
    order = {name: i for i, (name, _) in enumerate(candidates)}
    ordered = sorted(dict.fromkeys(wanted), key=order.__getitem__)
    return Selection(tuple(n for n in ordered if known[n]), tuple(n for n in ordered if not known[n]), {})


def plan_chunks(names: Sequence[str], sizes: Mapping[str, int], budget: int) -> list[list[str]]:
    """Consecutive groups whose summed ``sizes`` stay within ``budget`` (a bigger tensor goes alone)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in names:
        size = sizes[name]
        if current and used + size > budget:
            chunks.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current:
        chunks.append(current)
    return chunks


def _fresh(taken: set[str], hint: str) -> str:
    name, i = hint, 1
    while name in taken:
        name, i = f"{hint}_{i}", i + 1
    taken.add(name)
    return name


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)  # node and tensor names share one pool here: both must be fresh
        for sub in _subgraphs(node):
            names |= _all_names(sub)
    return names


def chunk_model(
    model: onnx.ModelProto, raw: Sequence[str], reduced: Sequence[str]
) -> tuple[onnx.ModelProto, list[tuple[str, str]]]:
    """The model copy exposing ``raw`` tensors and the min/max of ``reduced`` ones.

    Returns the copy and, per graph output in order, ``(kind, tensor)`` with kind ``"raw"``,
    ``"min"`` or ``"max"``.
    """
    graph = model.graph
    needed = set(raw) | set(reduced)
    keep = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed |= _node_reads(node)
    taken = _all_names(graph)
    out = onnx.helper.make_graph([], graph.name or "calibration", [], [])
    outputs: list[tuple[str, str]] = [("raw", name) for name in raw]
    out.output.extend(onnx.ValueInfoProto(name=name) for name in raw)
    pending = set(reduced)
    for node in reversed(keep):
        out.node.append(node)
        # Reduce right after the producer (and run in node order) so the tensor can be freed.
        for name in (o for o in node.output if o in pending):
            pending.discard(name)
            for kind, op in (("min", "ReduceMin"), ("max", "ReduceMax")):
                result = _fresh(taken, f"{name}__calib_{kind}")
                out.node.append(onnx.helper.make_node(op, [name], [result], keepdims=0, name=_fresh(taken, result)))
                out.output.append(onnx.ValueInfoProto(name=result))
                outputs.append((kind, name))
    if pending:
        raise CalibrationError(f"tensor '{sorted(pending)[0]}' is not produced by a node of the main graph")
    inits = {t.name for t in graph.initializer}
    out.input.extend(v for v in graph.input if v.name not in inits or v.name in needed)
    out.initializer.extend(t for t in graph.initializer if t.name in needed)
    out.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in needed)
    copy = onnx.helper.make_model(out, opset_imports=model.opset_import, ir_version=model.ir_version)
    copy.functions.extend(model.functions)
    return copy, outputs
