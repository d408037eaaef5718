"""A small activation collector for pruning: expose tensors, run onnxruntime sample by sample.

The model is copied and cut down to the nodes the requested tensors need; those tensors become
its only outputs. onnxruntime runs it with graph optimizations off and its logging silenced,
one sample at a time, and the caller reduces each sample at once (per-channel sums, ``XᵀX``),
so memory does not grow with the number of samples.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from passes._errors import CalibrationError, DataError

__all__ = ["Samples", "pick_batch", "TensorRunner", "expose", "channel_stats"]


class Samples:
    """At most ``limit`` samples from a re-iterable dataset, yielded in batches of ``batch``.

    A batch stacks consecutive samples of equal shapes on axis 0 (a one-shot iterator is kept in
    memory so that it can be read again).
    """

    def __init__(self, source: Iterable[Mapping[str, np.ndarray]], limit: int | None, batch: int = 1) -> None:
        if iter(source) is source:  # an iterator can be read once: keep what we need
            source = list(itertools.islice(source, limit))
        self._source = source
        self._limit = limit
        self.batch = max(1, int(batch))

    def with_batch(self, batch: int) -> Samples:
        """The same samples in batches of ``batch``."""
        return Samples(self._source, self._limit, batch)

    def head(self, count: int) -> Samples:
        """The first ``count`` of these samples, in the same batches."""
        limit = count if self._limit is None else min(count, self._limit)
        return Samples(self._source, limit, self.batch)

    def singles(self) -> Iterator[dict[str, np.ndarray]]:
        """One sample at a time, as the dataset gives it."""
        for sample in itertools.islice(self._source, self._limit):
            yield dict(sample)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        for sample in self.singles():
            if pending and (len(pending) == self.batch or _shapes(pending[0]) != _shapes(sample)):
                yield _stack(pending)
                pending = []
            pending.append(sample)
        if pending:
            yield _stack(pending)

    def first(self) -> dict[str, np.ndarray]:
        """The first sample (raises :class:`DataError` when there is none)."""
        for sample in self.singles():
            return sample
        raise DataError("the calibration data holds no samples")


def _shapes(sample: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: np.shape(v) for k, v in sample.items()}


def _stack(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(samples) == 1:
        return samples[0]
    return {k: np.concatenate([np.asarray(s[k]) for s in samples], axis=0) for k in samples[0]}


def pick_batch(model: onnx.ModelProto, samples: Samples, *, budget_bytes: int = 2 << 20, cap: int = 16) -> Samples:
    """``samples`` batched when that gives the same outputs as one sample at a time.

    Batches stack samples on axis 0 up to ``budget_bytes`` of input (at most ``cap``). A model
    with a fixed first input dim, or whose outputs differ when batched (a Reshape that hard-codes
    the batch size), runs one sample at a time.
    """
    first = samples.first()
    size = sum(np.asarray(v).nbytes for v in first.values())
    batch = int(min(cap, max(1, budget_bytes // max(size, 1))))
    fixed = any(v.type.tensor_type.shape.dim[0].dim_value > 0 for v in model.graph.input
                if v.type.tensor_type.shape.dim and v.name in first)
    if batch == 1 or fixed or any(np.ndim(v) == 0 for v in first.values()):
        return samples
    outputs = [o.name for o in model.graph.output]
    runner = TensorRunner(model, outputs)
    trial = samples.with_batch(batch)
    try:
        stacked = runner.run(next(iter(trial)))
        alone = [runner.run(s) for s in itertools.islice(samples.singles(), batch)]
    except DataError:
        return samples
    for name in outputs:
        joined = np.concatenate([a[name] for a in alone], axis=0)
        if joined.shape != stacked[name].shape or not np.allclose(joined, stacked[name], rtol=1e-3, atol=1e-5):
            return samples
    return trial


def _needed_nodes(graph: onnx.GraphProto, outputs: Sequence[str]) -> list[onnx.NodeProto]:
    producer = {o: n for n in graph.node for o in n.output if o}
    wanted, stack, seen = set(), list(outputs), set()
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        wanted.add(id(node))
        stack.extend(i for i in node.input if i)
    return [n for n in graph.node if id(n) in wanted]


def expose(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that computes only ``outputs`` and returns them."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes = _needed_nodes(graph, outputs)
    typed = {v.name: v for v in [*graph.value_info, *graph.output, *graph.input]}
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(typed[n] if n in typed else helper.make_empty_tensor_value_info(n) for n in outputs)
    del graph.value_info[:]
    return out


class TensorRunner:
    """Runs a model cut down to some tensors (see :func:`expose`)."""

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str], *, threads: int = 0) -> None:
        self.outputs = list(dict.fromkeys(outputs))
        exposed = expose(model, self.outputs)
        self.inputs = [v.name for v in exposed.graph.input if v.name not in {t.name for t in exposed.graph.initializer}]
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the CPU to numpy between runs
        try:
            self.session = ort.InferenceSession(exposed.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises several unrelated types
            raise CalibrationError(f"onnxruntime cannot run the model to collect activations: {err}") from err

    def run(self, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The exposed tensors for one sample.

        Raises:
            DataError: the sample lacks an input or onnxruntime rejects it.
        """
        missing = [n for n in self.inputs if n not in sample]
        if missing:
            raise DataError(f"calibration sample has no input '{missing[0]}'")
        try:
            values = self.session.run(self.outputs, {n: sample[n] for n in self.inputs})
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"onnxruntime failed on a calibration sample: {first}") from err
        return dict(zip(self.outputs, values))


def channel_stats(
    model: onnx.ModelProto, samples: Samples, wanted: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Per-index ``mean(x)`` and ``mean(|x|)`` of each ``(tensor, axis)`` over all samples.

    The mean runs over every other axis and every sample (weighted by element count).
    """
    if not wanted:
        return {}
    runner = TensorRunner(model, [t for t, _ in wanted])
    sums: dict[tuple[str, int], list[np.ndarray]] = {}
    counts: dict[tuple[str, int], int] = {}
    for sample in samples:
        values = runner.run(sample)
        for tensor, axis in wanted:
            x = np.moveaxis(np.asarray(values[tensor], dtype=np.float64), axis, 0).reshape(values[tensor].shape[axis], -1)
            key = (tensor, axis)
            if key not in sums:
                sums[key], counts[key] = [np.zeros(len(x)), np.zeros(len(x))], 0
            sums[key][0] += x.sum(axis=1)
            sums[key][1] += np.abs(x).sum(axis=1)
            counts[key] += x.shape[1]
    return {k: (s[0] / max(counts[k], 1), s[1] / max(counts[k], 1)) for k, s in sums.items()}
