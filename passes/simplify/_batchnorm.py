"""BatchNormalization folding into the Conv, ConvTranspose or Gemm that produces its input.

A BN in inference mode is a per-channel affine map ``y = x·f + s`` with
``f = γ / √(σ² + ε)`` and ``s = β − μ·f`` (computed in float64). When the producer's output is
read by the BN only, the map is folded into the producer's weight W and bias B:

- ``Conv`` (any ``group``; W is ``[C_out, C_in/group, k…]``):
  ``W'[c] = W[c]·f[c]``, ``B' = B·f + s`` (``B = 0`` when absent).
- ``ConvTranspose`` (W is ``[C_in, C_out/group, k…]``; output channel
  ``c = g·(C_out/group) + j`` comes from ``W[g·(C_in/group):(g+1)·(C_in/group), j]``):
  ``W'[i, j] = W[i, j]·f[g(i)·(C_out/group) + j]``, ``B'`` as for Conv.
- ``Gemm`` (opset ≥ 7; ``Y = α·A'·B' + β_g·C``, ``B' = Bᵀ`` when ``transB``): scale column
  ``n`` of ``B'`` by ``f[n]`` and set ``C' = β_g·C·f + s`` with ``beta = 1``; C of shape
  ``[N]``, ``[1, N]``, a scalar or absent.

The BN's output name moves to the producer and the BN is removed. New weights are written as
new initializers (named by :class:`NameAllocator`); shared ones are never mutated. Parameters
must be constants (initializers that are graph inputs are not), 1-D, of one length and float.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import numpy as np
import onnx
from onnx import numpy_helper

from passes._graph import GraphIndex, NameAllocator, is_onnx_domain, remove_nodes
from passes.simplify._common import skip

__all__ = ["fold_batchnorms"]

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@dataclasses.dataclass(frozen=True)
class _BnAffine:
    """A BN as ``y = x·factor + shift`` per channel (float64)."""

    factor: np.ndarray
    shift: np.ndarray


def _bn_affine(bn: onnx.NodeProto, index: GraphIndex, opset: int) -> _BnAffine | str:
    """The BN's per-channel affine form, or why it cannot be folded."""
    attrs = {a.name: a for a in bn.attribute}
    if "spatial" in attrs and attrs["spatial"].i == 0:
        return "bn spatial=0"
    if opset < 7 and ("is_test" not in attrs or attrs["is_test"].i != 1):
        return "bn in training mode"
    if "training_mode" in attrs and attrs["training_mode"].i != 0:
        return "bn in training mode"
    if any(o and index.use_count(o) > 0 for o in bn.output[1:]):
        return "bn training outputs used"
    if len(bn.input) != 5:
        return "bn malformed"
    params = [index.constant(name) for name in bn.input[1:]]
    if any(p is None for p in params):
        return "bn parameters not constant"
    scale, bias, mean, var = params
    if any(p.dtype not in _FLOAT_DTYPES for p in params):
        return "bn unsupported dtype"
    if any(p.ndim != 1 or p.shape != scale.shape for p in params):
        return "bn parameters not 1-D of one length"
    eps = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = bias.astype(np.float64) - mean.astype(np.float64) * factor
    return _BnAffine(factor, shift)


def fold_batchnorms(graph: onnx.GraphProto, opset: int, skips: collections.Counter[str]) -> int:
    """Fold every foldable BN into its producer; returns the number folded."""
    index = GraphIndex.build(graph)
    alloc = NameAllocator(graph)
    doomed = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or not is_onnx_domain(bn):
            continue
        problem = _bn_producer_problem(bn, index)
        affine = _bn_affine(bn, index, opset) if problem is None else problem
        if isinstance(affine, str):
            skip(skips, affine, bn)
            continue
        producer = index.producer[bn.input[0]]
        folded = _FOLDERS[producer.op_type](producer, affine, index, opset)
        if isinstance(folded, str):
            skip(skips, folded, bn)
            continue
        weight, bias = folded
        _install(graph, alloc, producer, weight, bias)
        producer.output[0] = bn.output[0]
        doomed.append(bn)
        logger.debug("folded BN '%s' into %s '%s'", bn.name, producer.op_type, producer.name)
    return remove_nodes(graph, doomed)


def _bn_producer_problem(bn: onnx.NodeProto, index: GraphIndex) -> str | None:
    source = bn.input[0] if bn.input else ""
    producer = index.producer.get(source)
    if producer is None or not is_onnx_domain(producer) or producer.op_type not in _FOLDERS:
        return "bn without conv/convtranspose/gemm producer"
    if source in index.graph_outputs:
        return "bn producer output is a graph output"
    if index.use_count(source) > 1:
        return "bn producer has other users"
    if producer.output[0] != source:
        return "bn reads a secondary output"
    return None


_Folded = tuple[np.ndarray, np.ndarray]


def _weight_and_bias(
    node: onnx.NodeProto, index: GraphIndex, channels: int
) -> tuple[np.ndarray, np.ndarray] | str:
    weight = index.constant(node.input[1] if len(node.input) > 1 else "")
    if weight is None:
        return "bn producer weight not constant"
    if weight.dtype not in _FLOAT_DTYPES:
        return "bn unsupported dtype"
    has_bias = len(node.input) > 2 and node.input[2]
    bias = index.constant(node.input[2]) if has_bias else np.zeros(channels)
    if bias is None:
        return "bn producer bias not constant"
    return weight, bias


def _fold_into_conv(
    conv: onnx.NodeProto, bn: _BnAffine, index: GraphIndex, opset: int
) -> _Folded | str:
    found = _weight_and_bias(conv, index, bn.factor.size)
    if isinstance(found, str):
        return found
    weight, bias = found
    if weight.ndim < 3 or weight.shape[0] != bn.factor.size or bias.shape != bn.factor.shape:
        return "bn channel count mismatch"
    factor = bn.factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_weight = (weight.astype(np.float64) * factor).astype(weight.dtype)
    return new_weight, (bias * bn.factor + bn.shift).astype(weight.dtype)


def _fold_into_conv_transpose(
    conv: onnx.NodeProto, bn: _BnAffine, index: GraphIndex, opset: int
) -> _Folded | str:
    found = _weight_and_bias(conv, index, bn.factor.size)
    if isinstance(found, str):
        return found
    weight, bias = found
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if weight.ndim < 3 or group < 1 or weight.shape[0] % group:
        return "convtranspose group does not divide its input channels"
    per_group = weight.shape[1]  # W: [C_in, C_out/group, k...]
    if per_group * group != bn.factor.size or bias.shape != bn.factor.shape:
        return "bn channel count mismatch"
    kernel = weight.shape[2:]
    grouped = weight.astype(np.float64).reshape(group, weight.shape[0] // group, per_group, *kernel)
    factor = bn.factor.reshape(group, 1, per_group, *(1,) * len(kernel))
    new_weight = (grouped * factor).reshape(weight.shape).astype(weight.dtype)
    return new_weight, (bias * bn.factor + bn.shift).astype(weight.dtype)


def _fold_into_gemm(
    gemm: onnx.NodeProto, bn: _BnAffine, index: GraphIndex, opset: int
) -> _Folded | str:
    if opset < 7:
        return "gemm below opset 7"
    found = _weight_and_bias(gemm, index, bn.factor.size)
    if isinstance(found, str):
        return found
    weight, bias = found
    attrs = {a.name: a for a in gemm.attribute}
    trans_b = attrs["transB"].i if "transB" in attrs else 0
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    n = bn.factor.size
    if weight.ndim != 2 or weight.shape[0 if trans_b else 1] != n:
        return "bn channel count mismatch"
    if bias.size != 1 and bias.shape not in ((n,), (1, n)):
        return "gemm bias shape not [N] or [1, N]"
    factor = bn.factor[:, None] if trans_b else bn.factor[None, :]
    new_weight = (weight.astype(np.float64) * factor).astype(weight.dtype)
    new_bias = np.broadcast_to(beta * bias.astype(np.float64).reshape(-1), (n,))
    return new_weight, (new_bias * bn.factor + bn.shift).astype(weight.dtype)


_FOLDERS = {
    "Conv": _fold_into_conv,
    "ConvTranspose": _fold_into_conv_transpose,
    "Gemm": _fold_into_gemm,
}


def _install(
    graph: onnx.GraphProto,
    alloc: NameAllocator,
    node: onnx.NodeProto,
    weight: np.ndarray,
    bias: np.ndarray,
) -> None:
    """Point ``node`` at new weight and bias initializers (a Gemm also gets ``beta = 1``)."""
    base = node.name or node.output[0]
    names = [alloc.fresh(f"{base}_bnfold_w"), alloc.fresh(f"{base}_bnfold_b")]
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), names[0]))
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(bias), names[1]))
    node.input[1] = names[0]
    if len(node.input) > 2:
        node.input[2] = names[1]
    else:
        node.input.append(names[1])
    kept = [a for a in node.attribute if a.name != "beta"]
    if len(kept) != len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(kept)
