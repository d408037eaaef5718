"""Parameters and MACs: of a model, of its layers, and what pruning one group would save.

MACs are counted as in ``onnxslim inspect`` for the main graph's ``Conv``
(``numel(Y)·∏W.shape[1:]``), ``ConvTranspose`` (``numel(X)·∏W.shape[1:]``), ``Gemm`` and
``MatMul`` (``numel(Y)·K``), from dims inferred with the input shapes fixed; a node with an
unknown dim has unknown MACs. Every one of them is proportional to its weight's element count
at fixed spatial size, so pruning a weight axis from ``n`` to ``k`` scales the node's MACs by
``k/n``; per-group figures use that (each group alone), totals are recounted on the result.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np
import onnx

from passes.prune._context import Dims
from passes.prune._groups import Group

__all__ = ["count_params", "node_macs", "total_macs", "kept_fractions", "group_cost"]

_MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every initializer and Constant tensor of the main graph."""
    total = sum(math.prod(t.dims) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    total += math.prod(attr.t.dims)
    return int(total)


def _numel(dims: Dims | None) -> int | None:
    if dims is None or any(d is None for d in dims):
        return None
    return math.prod(dims)


def node_macs(model: onnx.ModelProto, dims: Mapping[str, Dims]) -> dict[int, int | None]:
    """MACs of each Conv/ConvTranspose/Gemm/MatMul node (by index), ``None`` when unknown."""
    out: dict[int, int | None] = {}
    for k, node in enumerate(model.graph.node):
        if node.op_type not in _MAC_OPS or node.domain not in ("", "ai.onnx"):
            continue
        x, w, y = (dims.get(n) for n in (node.input[0], node.input[1], node.output[0]))
        if node.op_type in ("Conv", "ConvTranspose"):
            base = _numel(y if node.op_type == "Conv" else x)
            kernel = _numel(w[1:]) if w else None
            out[k] = None if base is None or kernel is None else base * kernel
        else:
            k_dim = x[-2] if node.op_type == "Gemm" and _attr(node, "transA") else (x[-1] if x else None)
            y_count = _numel(y)
            out[k] = None if y_count is None or k_dim is None else y_count * k_dim
    return out


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def total_macs(macs: Mapping[int, int | None]) -> int | None:
    """Sum of the known node MACs, or ``None`` when any is unknown."""
    values = list(macs.values())
    return None if any(v is None for v in values) else int(sum(values))


def kept_fractions(group: Group, removed_units: np.ndarray) -> dict[tuple[int, int], float]:
    """Kept fraction of each parameter use touched by the group when these units go."""
    fractions: dict[tuple[int, int], float] = defaultdict(lambda: 1.0)
    for p in group.params:
        idx = group.indices.get(p.space)
        if idx is None:
            continue
        lost = len(np.unique(idx[removed_units].reshape(-1))) if len(removed_units) else 0
        fractions[(p.space.user, p.space.slot)] *= (p.space.size - lost) / p.space.size
    return dict(fractions)


def group_cost(
    group: Group,
    removed_units: np.ndarray,
    numel: Mapping[str, int],
    macs: Mapping[int, int | None],
) -> dict[str, int | None]:
    """Params and MACs of the layers the group touches, before and after removing these units alone."""
    fractions = kept_fractions(group, removed_units)
    tensors = {(p.space.user, p.space.slot): p.initializer for p in group.params}
    params_before = sum(numel[t] for t in dict.fromkeys(tensors.values()))
    params_lost = sum(numel[tensors[use]] * (1.0 - f) for use, f in fractions.items())
    weight_uses: Iterable[tuple[int, int]] = [u for u in fractions if u[1] == 1 and u[0] in macs]
    known = [macs[u[0]] for u in weight_uses]
    if any(m is None for m in known):
        macs_before = macs_after = None
    else:
        macs_before = int(sum(known))
        macs_after = int(round(sum(macs[u[0]] * fractions[u] for u in weight_uses)))
    return {
        "params_before": int(params_before),
        "params_after": int(round(params_before - params_lost)),
        "macs_before": macs_before,
        "macs_after": macs_after,
    }
