"""Cross-layer equalization: rescale channels between two convolutions so their weights share range.

For a chain ``A -> f -> B`` where ``A`` and ``B`` are Convs with constant weights and ``f`` is
positively homogeneous per channel (``f(s·x) = s·f(x)`` for ``s > 0``: nothing, Relu,
LeakyRelu, PRelu, MaxPool), dividing output channel ``i`` of ``A`` (its weights and bias) by
``s_i`` and multiplying input channel ``i`` of ``B``'s weights by ``s_i`` leaves the model's
function unchanged in real arithmetic (Nagel et al. 2019, "Data-Free Quantization", §4.1). With

    r1_i = max |W_A[i, ...]|      (output channel i of A)
    r2_i = max |W_B[:, i, ...]|   (input channel i of B; for a depthwise B, its channel i)
    s_i  = sqrt(r1_i / r2_i)

both become ``sqrt(r1_i · r2_i)``: per-tensor weight scales stop being set by one large channel.
A depthwise Conv sits in two pairs (as ``B`` of the one before it and ``A`` of the one after), so
the pairs are equalized in turn until the scales stop moving.

Only exact rewrites are made: ``A``'s output (and each op of ``f``) has a single reader and is no
graph output; ``B`` is an ordinary (group 1) or depthwise Conv reading the chain as its input;
``A`` is any Conv whose groups do not mix the rescaled channels (group 1 or depthwise).
Activation functions that are not homogeneous (Clip/Relu6, HardSwish, SiLU, Sigmoid) end a chain:
rescaling through them would change the model. Modified weights and biases get new initializers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from passes._base import EXACT, Pass, PassResult, RunContext, Tolerance
from passes._graph import (
    GraphIndex,
    NameAllocator,
    iter_subgraphs,
    subgraph_outer_inputs,
)

__all__ = ["EqualizePass", "conv_pairs", "equalize_pairs"]

#: ops that commute with a positive per-channel scale (one data input, channels on axis 1)
HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu", "MaxPool")
_ROUNDS = 20
_CLAMP = (1e-4, 1e4)


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _kind(node: onnx.NodeProto, w: np.ndarray | None) -> str | None:
    """``"dense"`` (group 1), ``"depthwise"`` (one input and one output channel per group) or
    ``None`` (not an equalizable Conv)."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or w is None or w.ndim < 3 or w.dtype.kind != "f":
        return None
    g = _group(node)
    if g == 1:
        return "dense"
    return "depthwise" if w.shape[1] == 1 and w.shape[0] == g else None


def _single_reader(tensor: str, index: GraphIndex) -> tuple[onnx.NodeProto, int] | None:
    readers = index.consumers.get(tensor, [])
    if len(readers) != 1 or tensor in index.graph_outputs or index.subgraph_users.get(tensor):
        return None
    return readers[0]


def conv_pairs(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """Every ``(A, B)`` Conv pair of ``graph`` that can be equalized exactly (module docstring)."""
    index = GraphIndex.build(graph)
    pairs = []
    for a in graph.node:
        if _kind(a, index.constant(a.input[1]) if len(a.input) > 1 else None) is None:
            continue
        if len(a.input) > 2 and a.input[2] and index.constant(a.input[2]) is None:
            continue
        tensor, found = a.output[0], None
        for _ in range(4):  # at most a few homogeneous ops between the two Convs
            reader = _single_reader(tensor, index)
            if reader is None:
                break
            node, slot = reader
            if slot == 0 and _kind(node, index.constant(node.input[1]) if len(node.input) > 1 else None):
                found = node
                break
            if slot != 0 or node.op_type not in HOMOGENEOUS or node.domain not in ("", "ai.onnx"):
                break
            if node.op_type == "PRelu" and index.constant(node.input[1]) is None:
                break
            if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
                break  # the Indices output would not change, but keep the rewrite simple
            tensor = node.output[0]
        if found is not None:
            pairs.append((a, found))
    return pairs


def equalize_pairs(graph: onnx.GraphProto) -> dict[str, Any]:
    """Equalize every pair of :func:`conv_pairs` in place (new initializers); returns stats."""
    index = GraphIndex.build(graph)
    pairs = conv_pairs(graph)
    if not pairs:
        return {"pairs": 0}
    weights: dict[int, np.ndarray] = {}
    biases: dict[int, np.ndarray | None] = {}
    nodes: dict[int, onnx.NodeProto] = {}
    for a, b in pairs:
        for n in (a, b):
            if id(n) not in weights:
                nodes[id(n)] = n
                weights[id(n)] = index.constant(n.input[1]).astype(np.float64)
                bias = index.constant(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                biases[id(n)] = None if bias is None else bias.astype(np.float64)
    before = _spread(weights, pairs)
    for _ in range(_ROUNDS):
        moved = 0.0
        for a, b in pairs:
            wa, wb = weights[id(a)], weights[id(b)]
            r1 = np.abs(wa).reshape(wa.shape[0], -1).max(axis=1)
            if _kind(b, wb) == "depthwise":
                r2 = np.abs(wb).reshape(wb.shape[0], -1).max(axis=1)
            else:
                r2 = np.abs(np.moveaxis(wb, 1, 0)).reshape(wb.shape[1], -1).max(axis=1)
            if r1.shape != r2.shape:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.sqrt(r1 / r2)
            s = np.where(np.isfinite(s) & (s > 0), np.clip(s, *_CLAMP), 1.0)
            shape_a = (-1,) + (1,) * (wa.ndim - 1)
            weights[id(a)] = wa / s.reshape(shape_a)
            if biases[id(a)] is not None:
                biases[id(a)] = biases[id(a)] / s
            if _kind(b, wb) == "depthwise":
                weights[id(b)] = wb * s.reshape((-1,) + (1,) * (wb.ndim - 1))
            else:
                weights[id(b)] = wb * s.reshape((1, -1) + (1,) * (wb.ndim - 2))
            moved = max(moved, float(np.max(np.abs(np.log(s)))))
        if moved < 1e-6:
            break
    names = NameAllocator(graph)
    for key, node in nodes.items():
        node.input[1] = _init(graph, names, f"{node.input[1]}_equalized", weights[key], index.constant(node.input[1]).dtype)
        if biases[key] is not None:
            node.input[2] = _init(graph, names, f"{node.input[2]}_equalized", biases[key], index.constant(node.input[2]).dtype)
    return {"pairs": len(pairs), "layers": len(nodes), "weight range spread before": round(before, 2),
            "weight range spread after": round(_spread(weights, pairs), 2)}


def _spread(weights: dict[int, np.ndarray], pairs) -> float:
    """Mean over the pairs' first layers of max/median output-channel range (how uneven they are)."""
    out = []
    for a, _ in pairs:
        r = np.abs(weights[id(a)]).reshape(weights[id(a)].shape[0], -1).max(axis=1)
        med = float(np.median(r))
        if med > 0:
            out.append(float(r.max()) / med)
    return float(np.mean(out)) if out else 1.0


def _init(graph: onnx.GraphProto, names: NameAllocator, hint: str, value: np.ndarray, dtype) -> str:
    name = names.fresh(hint)
    graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
    return name


class EqualizePass(Pass):
    """Cross-layer equalization of Conv chains (module docstring); exact in real arithmetic.

    Run it on the prepared float model before calibrating (``quantize --equalize``): the ranges
    must be measured on the equalized model.
    """

    name: ClassVar[str] = "equalize"
    tolerance: ClassVar[Tolerance] = EXACT

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Equalize a copy of ``model``; unchanged when it has no equalizable pair."""
        work = onnx.ModelProto()
        work.CopyFrom(model)
        stats = equalize_pairs(work.graph)
        if not stats["pairs"]:
            return PassResult(model, False, {"skipped: no Conv -> (Relu/LeakyRelu/PRelu/MaxPool) -> Conv chain": 1})
        used = {i for n in work.graph.node for i in n.input} | {i.name for i in work.graph.input}
        used |= {t for n in work.graph.node for sub in iter_subgraphs(n) for t in subgraph_outer_inputs(sub)}
        kept = [t for t in work.graph.initializer if t.name in used]
        del work.graph.initializer[:]
        work.graph.initializer.extend(kept)
        return PassResult(work, True, stats)
