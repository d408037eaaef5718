"""How much a removal of channels hurts the model's outputs, measured on calibration data.

Every layer that reads a prunable group (its non-depthwise consumers: Conv, ConvTranspose,
Gemm, MatMul) gets its weight and bias as graph inputs of one copy of the model, so a removal
is tried by feeding *repaired* consumer weights to one onnxruntime session, not by rebuilding
the model. A consumer ``Y = Σ_f W[:, f]·x_f + b`` whose input channels ``R`` are removed is
repaired the way the pruning itself will repair it:

- ``mean`` (no re-fit to follow): ``x_R`` is replaced by its calibration mean ``μ_R``:
  ``b += W[:, R]·μ_R`` (per kernel position; ÷ stride² for a ConvTranspose), ``W[:, R] = 0``;
  this is exactly the pruned, mean-compensated layer (Conv padding aside);
- ``linear`` (a least-squares re-fit follows): ``x_R`` is replaced by its best linear
  prediction from the kept channels ``K`` of the same tensor, ``x̂_R = μ_R + A·(x_K − μ_K)`` with
  ``A = Σ_RK (Σ_KK + λI)⁻¹`` from the calibration covariance: ``W[:, K] += W[:, R]·A`` and the
  bias takes ``W[:, R]·(μ_R − A·μ_K)``. That is what a re-fit of the consumer alone could at
  least reach (the re-fit also uses the other kernel positions and repairs upstream drift), so
  channels the rest can stand in for count as cheap.

A removal's *noise* is the outputs' noise-to-signal ratio on a few fixed samples,

    s = mean over outputs (over the axis-1 channels of an output with few) of Σ(y − y₀)² / Σ y₀²

against the unpruned outputs ``y₀`` (``10·log10(1/s)`` is an SQNR in dB; see :func:`_noise`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from passes._errors import CalibrationError
from passes._graph import NameAllocator, topological_sort
from passes.prune._collect import Samples, TensorRunner
from passes.prune._groups import Group
from passes.prune._layers import Layer, conv_strides, current, ensure_bias, from_matrix, layer_of, weight_matrix
from passes.prune._spaces import Consumer

__all__ = ["FILLS", "PROBE_LABEL", "channel_moments", "MaskedModel", "Meter"]

#: The progress label of the sensitivity probes (see :attr:`passes._base.RunContext.progress`).
PROBE_LABEL = "probing channel groups"

#: How a consumer stands in for removed inputs while probing (see the module docstring).
FILLS = ("mean", "linear")
#: Outputs with at most this many indices on axis 1 are measured index by index (see :func:`_noise`).
MAX_SPLIT = 256
#: Largest input width whose covariance is kept for the ``linear`` fill (wider: ``mean``).
MAX_LINEAR_WIDTH = 2048

Space = tuple[str, int]
Moments = Mapping[Space, tuple[np.ndarray, np.ndarray | None]]
Removal = Sequence[tuple[Group, np.ndarray]]


def channel_moments(model: onnx.ModelProto, samples: Samples, spaces: Sequence[Space], *, rows: int = 4096,
                    seed: int = 0) -> dict[Space, tuple[np.ndarray, np.ndarray | None]]:
    """Mean and second moment ``E[x xᵀ]`` (``None`` when wider than :data:`MAX_LINEAR_WIDTH`) per space.

    At most ``rows`` positions per sample (chosen at random) enter the sums.
    """
    if not spaces:
        return {}
    rng = np.random.default_rng(seed)
    runner = TensorRunner(model, [t for t, _ in spaces])
    sums: dict[Space, list] = {}
    for sample in samples:
        values = runner.run(sample)
        for tensor, axis in spaces:
            x = np.moveaxis(np.asarray(values[tensor], dtype=np.float64), axis, -1)
            x = x.reshape(-1, x.shape[-1])
            if len(x) > rows:
                x = x[rng.choice(len(x), rows, replace=False)]
            entry = sums.setdefault((tensor, axis), [np.zeros(x.shape[1]), None, 0])
            entry[0] += x.sum(axis=0)
            if x.shape[1] <= MAX_LINEAR_WIDTH:
                entry[1] = x.T @ x + (0.0 if entry[1] is None else entry[1])
            entry[2] += len(x)
    return {k: (s / max(n, 1), None if q is None else q / max(n, 1)) for k, (s, q, n) in sums.items()}


class _Slot:
    """One consumer layer of the probe model: its original weights as ``W3 [O, C, kernel]`` and bias."""

    def __init__(self, model: onnx.ModelProto, consumer: Consumer, layer: Layer) -> None:
        self.consumer, self.layer = consumer, layer
        self.shape = current(model, layer.node, layer.weight_slot).shape
        w2, self.bias = weight_matrix(model, layer)
        self.w3 = w2.reshape(w2.shape[0], consumer.data.size, -1)
        b = current(model, layer.bias_node, layer.bias_slot)
        self.bias_shape = (len(self.bias),) if b is None else b.shape
        self.share = 1.0 / float(np.prod(conv_strides(model.graph.node[layer.node]))) if layer.kind == "ConvTranspose" else 1.0
        self.names = ("", "")

    def arrays(self, removed: np.ndarray | None, fill: tuple[np.ndarray | None, np.ndarray] | None) -> list[np.ndarray]:
        """Weight and bias with ``removed`` inputs replaced by ``fill = (A [R, K] or None, c [R])``."""
        w3, bias = self.w3, self.bias
        if removed is not None and len(removed):
            a, c = fill
            lost = w3[:, removed]
            w3 = w3.copy()
            w3[:, removed] = 0.0
            if a is not None:
                kept = np.setdiff1d(np.arange(w3.shape[1]), removed)
                w3[:, kept] += np.einsum("orp,rk->okp", lost, a)
            bias = bias + self.share * np.einsum("orp,r->o", lost, c)
        w = from_matrix(w3.reshape(w3.shape[0], -1), self.layer, self.shape).astype(np.float32)
        b = bias / self.layer.bias_scale if self.layer.kind == "Gemm" else bias
        return [np.ascontiguousarray(w), b.reshape(self.bias_shape).astype(np.float32)]


class MaskedModel:
    """The model with every consumer's weight and bias fed as inputs, in one onnxruntime session."""

    def __init__(self, model: onnx.ModelProto, groups: Sequence[Group], moments: Moments, *, fill: str = "mean",
                 ridge: float = 1e-3) -> None:
        work = onnx.ModelProto()
        work.CopyFrom(model)
        self.fill, self.ridge, self.moments = fill, ridge, moments
        self.slots: dict[int, _Slot] = {}
        for g in groups:
            for c in g.consumers:
                key = (c.data.tensor, c.data.axis)
                if c.node in self.slots or c.kind not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or key not in moments:
                    continue
                layer = ensure_bias(work, layer_of(work, c.node, c.kind))
                if layer.bias_node >= 0 and current(work, c.node, 1) is not None:
                    self.slots[c.node] = _Slot(work, c, layer)
        names = NameAllocator(work.graph)
        self.defaults: dict[str, np.ndarray] = {}
        for node_k, slot in self.slots.items():
            label = work.graph.node[node_k].name or work.graph.node[node_k].op_type
            slot.names = (names.fresh(f"{label}_probe_weight"), names.fresh(f"{label}_probe_bias"))
            places = [(node_k, slot.layer.weight_slot), (slot.layer.bias_node, slot.layer.bias_slot)]
            for name, array, (node, at) in zip(slot.names, slot.arrays(None, None), places):
                target = work.graph.node[node]
                while len(target.input) <= at:
                    target.input.append("")
                target.input[at] = name
                work.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape)))
                self.defaults[name] = array
        topological_sort(work.graph)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(work.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises several unrelated types
            raise CalibrationError(f"onnxruntime cannot run the model to measure sensitivity: {err}") from err
        self.outputs = [o.name for o in work.graph.output]
        self.model_inputs = [v.name for v in model.graph.input if v.name not in {t.name for t in model.graph.initializer}]
        self._cache: dict[tuple, object] = {}

    def covers(self, group: Group) -> bool:
        """Whether every non-depthwise consumer of ``group`` can be probed."""
        readers = [c for c in group.consumers if c.kind != "Depthwise"]
        return bool(readers) and all(c.node in self.slots and c.data in group.indices for c in readers)

    def _fill(self, key: Space, removed: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        mean, second = self.moments[key]
        if self.fill == "mean" or second is None:
            return None, mean[removed]
        kept = np.setdiff1d(np.arange(len(mean)), removed)
        cov = second - np.outer(mean, mean)
        a_kk = cov[np.ix_(kept, kept)]
        lam = self.ridge * max(float(np.trace(a_kk)) / max(len(kept), 1), 1e-12)
        a = np.linalg.solve(a_kk + lam * np.eye(len(kept)), cov[np.ix_(kept, removed)]).T
        return a, mean[removed] - a @ mean[kept]

    def _cached(self, key: tuple, make, fresh: dict) -> object:
        value = self._cache[key] if key in self._cache else make()
        fresh[key] = value
        return value

    def feeds(self, removal: Removal) -> dict[str, np.ndarray]:
        """Consumer weights and biases repaired for this removal (the others as they are)."""
        removed: dict[int, set[int]] = {}
        for group, units in removal:
            for c in group.consumers if len(units) else ():
                if c.node in self.slots and c.data in group.indices:
                    removed.setdefault(c.node, set()).update(group.indices[c.data][units].reshape(-1).tolist())
        feeds, fresh = dict(self.defaults), {}
        for node_k, indices in removed.items():
            slot = self.slots[node_k]
            r = np.array(sorted(indices), dtype=np.int64)
            key = (slot.consumer.data.tensor, slot.consumer.data.axis)
            fill = self._cached(("fill", key, r.tobytes()), lambda: self._fill(key, r), fresh)
            arrays = self._cached(("slot", node_k, r.tobytes()), lambda: slot.arrays(r, fill), fresh)
            feeds.update(zip(slot.names, arrays))
        self._cache = fresh  # keep what this removal used: the next probe differs in one group
        return feeds

    def run(self, batches: Sequence[Mapping[str, np.ndarray]], feeds: Mapping[str, np.ndarray]) -> list[list[np.ndarray]]:
        """Outputs of each batch with these consumer weights."""
        return [self.session.run(self.outputs, {**{n: b[n] for n in self.model_inputs}, **feeds}) for b in batches]


def _energy(arrays: Sequence[np.ndarray], split: bool) -> np.ndarray:
    """``Σ a²`` over every array: per index of axis 1 when ``split``, else one total."""
    if split:
        return sum(np.square(np.moveaxis(a.astype(np.float64), 1, 0).reshape(a.shape[1], -1)).sum(axis=1) for a in arrays)
    return np.array([sum(float(np.sum(np.square(a.astype(np.float64)))) for a in arrays)])


def _noise(outputs: list[list[np.ndarray]], reference: list[list[np.ndarray]]) -> float:
    """Mean noise-to-signal ratio over the outputs (every batch together).

    An output with 2 to :data:`MAX_SPLIT` indices on axis 1 counts each index alone, and each
    index's ratio is capped at 1 (as good as lost): YOLO's ``[N, 4 + classes, anchors]`` puts box
    coordinates in pixels next to class scores in [0, 1], and on yolov8n a removal that kept the
    boxes at 36 dB had destroyed the scores (0.4 dB) unseen by a single ratio; the cap keeps a
    class absent from the samples (almost no signal) from dominating.
    """
    ratios: list[float] = []
    for k in range(len(reference[0])):
        refs = [r[k] for r in reference]
        split = refs[0].ndim >= 2 and 1 < refs[0].shape[1] <= MAX_SPLIT
        signal = _energy(refs, split)
        error = _energy([o[k].astype(np.float64) - r for o, r in zip(outputs, refs)], split)
        ratios.extend(np.minimum(error / np.maximum(signal, 1e-30), 1.0).tolist())
    return float(np.mean(ratios)) if ratios else 0.0


class Meter:
    """The outputs' noise-to-signal ratio of a removal, on a few fixed samples."""

    def __init__(self, model: MaskedModel, samples: Samples, *,
                 progress: Callable[[str, int, int], None] | None = None, expected: int = 0) -> None:
        self.model = model
        self.batches = list(samples)
        self.reference = model.run(self.batches, model.defaults)
        self.runs = 0
        self.progress, self.expected = progress, expected

    def __call__(self, removal: Removal) -> float:
        self.runs += 1
        noise = _noise(self.model.run(self.batches, self.model.feeds(removal)), self.reference)
        if self.progress is not None:  # the probe count is only estimated: the total may grow
            self.progress(PROBE_LABEL, self.runs, max(self.expected, self.runs))
        return noise
