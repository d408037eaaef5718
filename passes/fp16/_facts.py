"""What the conversion needs to know about a model before deciding anything.

- the element type of every tensor in every scope (ONNX type inference on a copy, falling back to
  the declared types when inference fails);
- static shapes where inference found them (for reductions' element counts);
- every float32 constant (initializer or ``Constant`` node, in any scope): where it lives and its
  largest finite magnitude;
- float16 limits and the counters of values that lose themselves in float16.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from passes._graph import is_onnx_domain, iter_subgraphs

__all__ = [
    "FLOAT",
    "FLOAT16",
    "NON_TENSOR",
    "FP16_MAX",
    "FP16_MIN_SUBNORMAL",
    "FP16_MIN_NORMAL",
    "ModelFacts",
    "ConstantInfo",
    "collect_facts",
    "walk_graphs",
    "constant_attr_value",
    "to_fp16",
    "LossCounts",
    "format_magnitude",
    "insert_after_sources",
]

log = logging.getLogger(__name__)

FLOAT = onnx.TensorProto.FLOAT
FLOAT16 = onnx.TensorProto.FLOAT16
#: Element "type" recorded for sequence, optional and map values (never converted).
NON_TENSOR = -1

#: Largest finite float16.
FP16_MAX = 65504.0
#: Smallest positive float16 (subnormal, 2**-24); values below half of it round to zero.
FP16_MIN_SUBNORMAL = 2.0**-24
#: Smallest positive normal float16 (2**-14); below it precision drops bit by bit.
FP16_MIN_NORMAL = 2.0**-14

_MAX_PROTO = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ConstantInfo:
    """A float32 constant: an initializer (not overridable) or a ``Constant`` node's output."""

    name: str
    kind: str  # "initializer", "Constant", or "default" (an initializer listed as an input)
    max_abs: float  # largest finite |x| (0 for an empty tensor)
    size: int


@dataclasses.dataclass
class ModelFacts:
    """Types, static shapes and float32 constants of a model, over all its scopes."""

    types: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    constants: dict[str, ConstantInfo]
    defaults: dict[str, ConstantInfo]  # float32 initializers listed as graph inputs (overridable)


def walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph nested in it (depth first, parents first)."""
    yield graph
    for node in graph.node:
        for sub in iter_subgraphs(node):
            yield from walk_graphs(sub)


def _record(value: onnx.ValueInfoProto, types: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> None:
    kind = value.type.WhichOneof("value")
    if kind is None:
        return
    if kind != "tensor_type":
        types.setdefault(value.name, NON_TENSOR)
        return
    tensor = value.type.tensor_type
    if tensor.elem_type:
        types.setdefault(value.name, tensor.elem_type)
    if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
        shapes.setdefault(value.name, tuple(d.dim_value for d in tensor.shape.dim))


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ByteSize() >= _MAX_PROTO:
        log.debug("model over 2 GB: using declared types only")
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as err:  # noqa: BLE001 - inference is best effort; declared types remain
        log.debug("type inference failed (%s); using declared types only", err)
        return model


def constant_attr_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node when it is a (dense) float32 tensor, else ``None``."""
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == FLOAT:
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
    return None


def _max_abs(array: np.ndarray) -> float:
    if array.size == 0:
        return 0.0
    finite = np.abs(array[np.isfinite(array)])
    return float(finite.max()) if finite.size else 0.0


def _constants(graph: onnx.GraphProto, out: dict[str, ConstantInfo], defaults: dict[str, ConstantInfo]) -> None:
    listed = {v.name for v in graph.input}
    for init in graph.initializer:
        if init.data_type == FLOAT:
            array = numpy_helper.to_array(init)
            kind = "default" if init.name in listed else "initializer"
            info = ConstantInfo(init.name, kind, _max_abs(array), int(array.size))
            (defaults if init.name in listed else out)[init.name] = info
    for node in graph.node:
        if node.op_type == "Constant" and is_onnx_domain(node) and node.output:
            array = constant_attr_value(node)
            if array is not None:
                out[node.output[0]] = ConstantInfo(node.output[0], "Constant", _max_abs(array), int(array.size))


def collect_facts(model: onnx.ModelProto) -> ModelFacts:
    """Types (inferred where possible), static shapes and float32 constants of ``model``."""
    types: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    constants: dict[str, ConstantInfo] = {}
    defaults: dict[str, ConstantInfo] = {}
    for source in (model, _inferred(model)):  # declared types win over inferred ones
        for graph in walk_graphs(source.graph):
            for value in (*graph.input, *graph.output, *graph.value_info):
                _record(value, types, shapes)
            for init in graph.initializer:
                types.setdefault(init.name, init.data_type)
                shapes.setdefault(init.name, tuple(init.dims))
    for graph in walk_graphs(model.graph):
        _constants(graph, constants, defaults)
        for node in graph.node:
            if node.op_type == "Constant" and is_onnx_domain(node) and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        types.setdefault(node.output[0], attr.t.data_type)
                    elif attr.name in ("value_float", "value_floats"):
                        types.setdefault(node.output[0], FLOAT)
    return ModelFacts(types, shapes, constants, defaults)


@dataclasses.dataclass
class LossCounts:
    """Values of converted constants that float16 cannot hold as they were."""

    flushed_to_zero: int = 0  # 0 < |x| <= 2**-25: round to 0
    subnormal: int = 0  # 2**-25 < |x| < 2**-14: kept with fewer significant bits


def to_fp16(array: np.ndarray, losses: LossCounts) -> np.ndarray:
    """``array`` as float16 (round to nearest), counting values that flush to zero or go subnormal.

    Values must already be within :data:`FP16_MAX`; nothing is clamped.
    """
    magnitude = np.abs(array[np.isfinite(array)])
    nonzero = magnitude[magnitude > 0]
    half_min = FP16_MIN_SUBNORMAL / 2
    losses.flushed_to_zero += int(np.count_nonzero(nonzero <= half_min))
    losses.subnormal += int(np.count_nonzero((nonzero > half_min) & (nonzero < FP16_MIN_NORMAL)))
    return array.astype(np.float16)


def format_magnitude(value: float) -> str:
    """A short form of a magnitude for reasons, e.g. ``9.79e+07``."""
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def insert_after_sources(graph: onnx.GraphProto, new_nodes: list[onnx.NodeProto]) -> None:
    """Add single-input ``new_nodes`` right after the node producing their input (first when the
    input is a graph input, an initializer or an outer-scope value); the order stays topological.

    (``passes._graph.topological_sort`` would refuse a subgraph, whose outer reads it cannot see.)
    """
    position = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    after: dict[int, list[onnx.NodeProto]] = {}
    for node in new_nodes:
        after.setdefault(position.get(node.input[0], -1), []).append(node)
    ordered = list(after.get(-1, []))
    for i, node in enumerate(graph.node):
        ordered.append(node)
        ordered.extend(after.get(i, []))
    del graph.node[:]
    graph.node.extend(ordered)
