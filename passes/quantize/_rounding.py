"""Weight rounding learned from calibration data: each weighted layer's int8 grid values chosen to
keep its *output*, not each weight, close to float.

Rounding every weight to its nearest grid value minimizes ``|W - Ŵ|`` but not the layer's output
error ``|X·Wᵀ - X·Ŵᵀ|``: errors of weights that see correlated inputs add up. With the Gram
matrix ``H = Σ XᵀX`` of the layer's inputs on the calibration data — the same design rows the
pruning re-fit solves its least squares on (:func:`passes.prune._patches.rows`: a Conv's input
patches, a Gemm's input rows) — the columns are rounded one at a time and the rounding error of
each is spread over the columns not yet rounded, along ``H⁻¹`` (optimal brain quantization, as
in GPTQ, Frantar et al. 2022):

    for j in columns:  q_j = clip(round(w_j / s), ±127)·s;  e = (w_j - q_j) / U_jj;
                       w_{j+1:} -= e · U_{j, j+1:}        (U: upper Cholesky factor of H⁻¹)

Scales are those of the float weight's own range (per channel or per tensor, as the
quantization), and they are handed to the emission unchanged, so the rounded values stay on the
grid they were chosen on. ``H`` gets 1 % of its mean diagonal added (damping) and inputs that are
always zero get weight 0. A depthwise Conv is solved per channel on its own ``k×k`` patch.

The layer sees float inputs here (the float model's activations), so each layer is solved for
its own weights alone; AdaRound (Nagel et al. 2020) learns the same up/down choices by gradient
descent on a relaxed objective, which needs a training loop this closed-form solve does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from calibration.qparams import qrange, weight_quant_params
from passes._graph import GraphIndex
from passes.prune._layers import Layer, from_matrix, to_matrix
from passes.prune._patches import rows
from passes.quantize._fallback import probe_session
from passes.quantize._rules import node_label

__all__ = ["RoundingTarget", "learned_weights", "round_weights", "rounding_targets"]

_DAMP = 0.01
_ROWS_PER_SAMPLE = 2048
_BUDGET = 256 << 20  # bytes of Gram matrices held at once


@dataclasses.dataclass(frozen=True)
class RoundingTarget:
    """A weighted unit to round: its node label, layer view and weight."""

    label: str
    node: onnx.NodeProto
    layer: Layer
    weight: np.ndarray

    @property
    def features(self) -> int:
        """Columns of the weight matrix (per channel for a depthwise Conv), from its shape."""
        if self.layer.kind in ("Conv", "Depthwise"):
            return int(np.prod(self.weight.shape[1:]))
        return int(self.weight.shape[0] if self.layer.kind == "MatMul" or not self.layer.trans_b else self.weight.shape[1])


def _kind(node: onnx.NodeProto, w: np.ndarray) -> str | None:
    if node.op_type == "Conv" and w.ndim == 4:
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        if group == 1:
            return "Conv"
        return "Depthwise" if w.shape[1] == 1 and w.shape[0] == group else None
    if node.op_type in ("Gemm", "MatMul") and w.ndim == 2:
        return node.op_type
    return None


def rounding_targets(graph: onnx.GraphProto, labels: Sequence[str]) -> list[RoundingTarget]:
    """The units among ``labels`` whose weights can be rounded this way (2-D Conv, depthwise,
    Gemm, MatMul with a constant weight)."""
    index = GraphIndex.build(graph)
    wanted = set(labels)
    out = []
    for k, node in enumerate(graph.node):
        label = node_label(node)
        if label not in wanted or len(node.input) < 2:
            continue
        w = index.constant(node.input[1])
        kind = None if w is None or w.dtype.kind != "f" else _kind(node, w)
        if kind is None:
            continue
        trans_b = bool(next((a.i for a in node.attribute if a.name == "transB"), 0))
        out.append(RoundingTarget(label, node, Layer(k, kind, 1, -1, -1, node.output[0], trans_b=trans_b), w))
    return out


def round_weights(w2: np.ndarray, gram: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """Grid values (``q·s``, float64) for ``w2 [O, D]`` that keep ``X·w2ᵀ`` close, given the
    inputs' Gram matrix ``gram [D, D]`` and one scale per row (module docstring)."""
    w = w2.astype(np.float64).copy()
    h = gram.astype(np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += _DAMP * float(np.mean(np.diag(h))) * np.eye(len(h))
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H⁻¹ = Uᵀ·U
    except np.linalg.LinAlgError:
        return np.clip(np.round(w / scale[:, None]), -qmax, qmax) * scale[:, None]
    s = scale[:, None].astype(np.float64)
    q = np.empty_like(w)
    for j in range(w.shape[1]):
        col = w[:, j:j + 1]
        q[:, j:j + 1] = np.clip(np.round(col / s), -qmax, qmax) * s
        err = (col - q[:, j:j + 1]) / u[j, j]
        w[:, j + 1:] -= err * u[j:j + 1, j + 1:]
    return q


def _grams(float_model: onnx.ModelProto, targets: Sequence[RoundingTarget],
           samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``Σ XᵀX`` of each target's design rows over ``samples`` (per channel for a depthwise Conv),
    in chunks of layers whose matrices fit the budget (one pass over the samples per chunk)."""
    grams: dict[str, np.ndarray] = {}
    chunk: list[RoundingTarget] = []
    held = 0
    chunks = []
    for t in targets:
        size = (t.weight.shape[0] * t.features ** 2 if t.layer.kind == "Depthwise" else t.features ** 2) * 8
        if chunk and held + size > _BUDGET:
            chunks.append(chunk)
            chunk, held = [], 0
        chunk.append(t)
        held += size
    if chunk:
        chunks.append(chunk)
    rng = np.random.default_rng(0)
    for part in chunks:
        names = sorted({t.node.input[0] for t in part} | {t.node.output[0] for t in part})
        session = probe_session(float_model, names)
        inputs = {i.name for i in session.get_inputs()}
        for sample in samples:
            got = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {k: v for k, v in sample.items() if k in inputs})))
            for t in part:
                x, y = got[t.node.input[0]], got[t.node.output[0]]
                kernel = tuple(t.weight.shape[2:]) if t.layer.kind in ("Conv", "Depthwise") else ()
                design, _ = rows(t.node, t.layer.kind, kernel, np.asarray(x, np.float64), np.asarray(y), _ROWS_PER_SAMPLE, rng)
                if t.layer.kind == "Depthwise":  # [rows, channels, k]: one Gram per channel
                    g = np.einsum("rck,rcl->ckl", design, design)
                else:
                    g = design.T @ design
                grams[t.label] = grams.get(t.label, 0.0) + g
    return grams


def learned_weights(float_model: onnx.ModelProto, targets: Sequence[RoundingTarget],
                    samples: Sequence[Mapping[str, np.ndarray]], *, per_channel: bool, reduce_range: bool
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per target label: the rounded weight (on its int8 grid, in the weight's own layout and
    dtype) and the scale of that grid (one per output channel, or a scalar)."""
    qmax = qrange("int8", symmetric=True, reduce_range=reduce_range)[1]
    grams = _grams(float_model, targets, samples)
    out = {}
    for t in targets:
        gram = grams.get(t.label)
        if gram is None:
            continue
        axis = (0 if t.layer.kind in ("Conv", "Depthwise") or (t.layer.kind == "Gemm" and t.layer.trans_b)
                else 1) if per_channel else None
        p = weight_quant_params(t.weight, axis=axis, dtype="int8", symmetric=True, reduce_range=reduce_range)
        w2 = to_matrix(t.weight, t.layer)
        scale = np.broadcast_to(np.asarray(p.scale, np.float64), (w2.shape[0],))
        if t.layer.kind == "Depthwise":
            q2 = np.concatenate([round_weights(w2[c:c + 1], gram[c], scale[c:c + 1], qmax) for c in range(w2.shape[0])])
        else:
            q2 = round_weights(w2, gram, scale, qmax)
        out[t.label] = (from_matrix(q2, t.layer, t.weight.shape).astype(t.weight.dtype), np.asarray(p.scale, np.float32))
    return out
