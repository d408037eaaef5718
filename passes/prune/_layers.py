"""Read and write the weights and bias of a consumer layer (Conv, Gemm, MatMul [+ Add bias]).

Writes never change an initializer another node also reads: a shared one is left alone and the
layer gets a new initializer (names from :class:`~passes._graph.NameAllocator`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from passes._graph import GraphIndex, NameAllocator

__all__ = ["Layer", "layer_of", "ensure_bias", "current", "set_input", "kernel_size", "to_matrix", "from_matrix",
           "weight_matrix", "write_weights", "out_axis", "conv_strides"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """A consumer layer seen as ``Y = X·Wᵀ + b`` per output channel.

    Attributes:
        node: index of the node in ``graph.node``.
        kind: ``"Conv"``, ``"Depthwise"``, ``"ConvTranspose"``, ``"Gemm"`` or ``"MatMul"``.
        weight_slot: input slot of the weight.
        bias_node: index of the node holding the bias (the layer itself, or the ``Add`` after a
            ``MatMul``), or ``-1`` when the layer cannot take a bias.
        bias_slot: input slot of the bias on ``bias_node`` (may not exist yet).
        output: the tensor the layer's fit targets (the Add's output after a MatMul).
        scale: ``alpha`` of a Gemm (the weight is stored divided by it), else 1.
        bias_scale: ``beta`` of a Gemm, else 1.
        trans_b: a Gemm weight stored as ``[N, K]``.
    """

    node: int
    kind: str
    weight_slot: int
    bias_node: int
    bias_slot: int
    output: str
    scale: float = 1.0
    bias_scale: float = 1.0
    trans_b: bool = False


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(helper.get_attribute_value(a))
    return default


def layer_of(model: onnx.ModelProto, node_k: int, kind: str) -> Layer:
    """The :class:`Layer` view of node ``node_k`` (``bias_node`` is -1 when it cannot take a bias)."""
    graph = model.graph
    node = graph.node[node_k]
    if kind in ("Conv", "Depthwise", "ConvTranspose"):
        return Layer(node_k, kind, 1, node_k, 2, node.output[0])
    if kind == "Gemm":
        bias_node = node_k
        if len(node.input) > 2 and node.input[2]:
            index = GraphIndex.build(graph)
            c = index.constant(node.input[2])
            if c is None or c.ndim == 2 and c.shape[0] != 1:
                bias_node = -1  # a per-row bias [M, N] is not a channel bias
        return Layer(node_k, kind, 1, bias_node, 2, node.output[0], _attr(node, "alpha", 1.0),
                     _attr(node, "beta", 1.0), bool(_attr(node, "transB", 0)))
    index = GraphIndex.build(graph)
    users = index.consumers.get(node.output[0], [])
    if len(users) == 1 and users[0][0].op_type == "Add" and node.output[0] not in index.graph_outputs:
        add = users[0][0]
        other = 1 - users[0][1]
        value = index.constant(add.input[other])
        if value is not None and value.ndim == 1 and add.input[other] in index.initializers:
            add_k = next(k for k, n in enumerate(graph.node) if n is add)
            return Layer(node_k, kind, 1, add_k, other, add.output[0])
    return Layer(node_k, kind, 1, -1, -1, node.output[0])


def current(model: onnx.ModelProto, node_k: int, slot: int) -> np.ndarray | None:
    """The constant read by node ``node_k`` at ``slot``, or ``None``."""
    node = model.graph.node[node_k]
    if slot >= len(node.input) or not node.input[slot]:
        return None
    return GraphIndex.build(model.graph).constant(node.input[slot])


def set_input(model: onnx.ModelProto, node_k: int, slot: int, value: np.ndarray, hint: str) -> None:
    """Make node ``node_k`` read ``value`` at ``slot`` (added when missing), sharing nothing."""
    graph = model.graph
    node = graph.node[node_k]
    index = GraphIndex.build(graph)
    name = node.input[slot] if slot < len(node.input) else ""
    if name and name in index.initializers and index.use_count(name) == 1 and name not in index.overridable:
        index.initializers[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return
    fresh = NameAllocator(graph).fresh(hint)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), fresh))
    while len(node.input) <= slot:
        node.input.append("")
    node.input[slot] = fresh


def ensure_bias(model: onnx.ModelProto, layer: Layer) -> Layer:
    """``layer`` with a bias: a MatMul without one gets ``Add(MatMul, zeros)`` appended.

    The Add takes over the MatMul's output name (so readers and graph outputs are unchanged) and
    is appended at the end of the node list: the caller sorts the graph when done (onnxruntime
    sorts by itself meanwhile). Other layers are returned as they are.
    """
    if layer.kind != "MatMul" or layer.bias_node >= 0:
        return layer
    graph = model.graph
    node = graph.node[layer.node]
    width = current(model, layer.node, layer.weight_slot).shape[1]
    names = NameAllocator(graph)
    product, bias = names.fresh(f"{node.output[0]}_nobias"), names.fresh(f"{node.name or 'MatMul'}_bias")
    dtype = current(model, layer.node, layer.weight_slot).dtype
    graph.initializer.append(numpy_helper.from_array(np.zeros(width, dtype), bias))
    output = node.output[0]
    node.output[0] = product
    graph.node.append(helper.make_node("Add", [product, bias], [output], name=names.fresh(f"{node.name or 'MatMul'}_add")))
    return dataclasses.replace(layer, bias_node=len(graph.node) - 1, bias_slot=1, output=output)


# ------------------------------------------------------------------ weights as Y = X·Wᵀ + b


def kernel_size(w_shape: tuple[int, ...], kind: str) -> int:
    """Features per input channel: kernel positions of a (transposed) convolution, else 1."""
    return int(np.prod(w_shape[2:])) if kind in ("Conv", "ConvTranspose") else 1


def to_matrix(w: np.ndarray, layer: Layer) -> np.ndarray:
    """A weight as ``W2 [outputs, features]``: a Conv's features are (channel, kernel position);
    a ConvTranspose's rows are its output channels and its features (input channel, kernel
    position); a Gemm's includes ``alpha``."""
    w = w.astype(np.float64)
    if layer.kind in ("Conv", "Depthwise"):
        return w.reshape(w.shape[0], -1)
    if layer.kind == "ConvTranspose":
        return w.transpose(1, 0, *range(2, w.ndim)).reshape(w.shape[1], -1)
    if layer.kind == "Gemm":
        return layer.scale * (w if layer.trans_b else w.T)
    return w.T


def from_matrix(w2: np.ndarray, layer: Layer, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`to_matrix` for a weight of ``shape``."""
    if layer.kind in ("Conv", "Depthwise"):
        return w2.reshape(shape)
    if layer.kind == "ConvTranspose":
        return w2.reshape(shape[1], shape[0], *shape[2:]).transpose(1, 0, *range(2, len(shape)))
    if layer.kind == "Gemm":
        return w2 / layer.scale if layer.trans_b else (w2 / layer.scale).T
    return w2.T


def weight_matrix(model: onnx.ModelProto, layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """The layer's current weights as ``W2 [O, D]`` (float64) and its bias ``[O]``."""
    w2 = to_matrix(current(model, layer.node, layer.weight_slot), layer)
    b = current(model, layer.bias_node, layer.bias_slot) if layer.bias_node >= 0 else None
    bias = np.zeros(w2.shape[0]) if b is None else np.broadcast_to(b.astype(np.float64).reshape(-1), (w2.shape[0],)).copy()
    if layer.kind == "Gemm":
        bias *= layer.bias_scale
    return w2, bias


def write_weights(model: onnx.ModelProto, layer: Layer, w2: np.ndarray, bias: np.ndarray | None) -> None:
    old = current(model, layer.node, layer.weight_slot)
    node_name = model.graph.node[layer.node].name or model.graph.node[layer.node].op_type
    w = from_matrix(w2, layer, old.shape)
    set_input(model, layer.node, layer.weight_slot, w.astype(old.dtype), f"{node_name}_weight")
    if bias is not None and layer.bias_node >= 0:
        if layer.kind == "Gemm":
            bias = bias / layer.bias_scale
        set_input(model, layer.bias_node, layer.bias_slot, bias.astype(old.dtype), f"{node_name}_bias")


def out_axis(kind: str, trans_b: bool) -> int:
    """The weight axis of a layer's output channels."""
    if kind in ("Conv", "Depthwise") or (kind == "Gemm" and trans_b):
        return 0
    return 1


def conv_strides(node: onnx.NodeProto) -> list[int]:
    return next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "strides"), [1, 1])
