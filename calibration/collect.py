"""Collection: run onnxruntime over calibration data and stream every observed tensor into its observer.

How one collection runs:

1. The first sample's input shapes drive ONNX shape inference on a light copy of the graph:
   which tensors are float activations (see :mod:`calibration._augment`) and how many bytes
   each takes for that sample.
2. The observed tensors are grouped, in graph order, into *chunks* whose exposed bytes fit
   ``budget_bytes``; the data is run once per chunk, each time through a copy of the model
   pruned to what the chunk needs, with the chunk's tensors as the only outputs (the model's own
   outputs are dropped) and onnxruntime's graph optimizations off. Unknown sizes are assumed to
   be as large as the largest known one (with none known, as large as the sample's inputs); an
   underestimate costs one oversized run, then step 4 corrects it.
3. After every run each exposed tensor goes to its observer at once (min/max, histogram counts)
   and is released: nothing per sample is kept, so memory does not grow with the number of
   samples. Graph inputs are observed straight from the feeds.
4. Sizes can vary with the input shape: every run records the largest size seen per tensor, and
   when one run's outputs exceed the budget, the rest of that chunk's data is split over several
   smaller chunks (the run that overshot is still used, so no sample is lost or counted twice).

With ``method="minmax"`` float32 tensors are reduced inside the graph (a ReduceMin/ReduceMax
pair each), so only two scalars per tensor leave onnxruntime and one pass suffices. onnxruntime's
ReduceMin/Max skip NaN; a ±inf reaches the observer, which then skips that sample's bound for
that tensor and counts it (the numpy path skips only the non-finite elements).

The library never prints: ``progress(done, total)`` is called after every run (``total`` is
samples × passes and can grow when a chunk is split).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from calibration._augment import FLOAT_TYPES, TensorInfo, chunk_model, infer_tensors, plan_chunks, select_tensors
from calibration.datasets import Dataset, InputSpec, IterableDataset, check_dataset, check_sample, input_specs
from calibration.observers import METHODS, Observer, ObserverOptions, make_observer
from calibration.table import CalibrationTable, TensorRange, model_fingerprint
from passes._errors import CalibrationError, DataError

__all__ = ["DEFAULT_BUDGET", "Collector", "collect", "observed_tensors"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 512 * 2**20
_MAX_PROTO = 2**31 - 1
Progress = Callable[[int, int], None]


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = False  # its plans are cached per input shape: would grow with ragged data
    opts.execution_order = ort.ExecutionOrder.PRIORITY_BASED  # node order: in-graph reductions free early
    if model.ByteSize() > _MAX_PROTO:
        raise CalibrationError("the model is over 2 GB in memory; calibration of such models is not supported yet")
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises several unrelated types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CalibrationError(f"onnxruntime cannot load the calibration copy of the model: {first}") from err


class Collector:
    """Observers for one model's tensors, and the runs that feed them.

    Args:
        model: the model (never modified).
        method: one of :data:`calibration.observers.METHODS`.
        tensors: observe exactly these tensors (default: every float activation).
        budget_bytes: most bytes of exposed tensors one run may return (a single bigger tensor
            still runs, alone).
        observer_options: settings of the observers.
        threads: onnxruntime intra-op threads (0: its default).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        *,
        method: str = "minmax",
        tensors: Sequence[str] | None = None,
        budget_bytes: int = DEFAULT_BUDGET,
        observer_options: ObserverOptions | None = None,
        threads: int = 0,
    ) -> None:
        if method not in METHODS:
            raise CalibrationError(f"unknown calibration method '{method}'; choose from {', '.join(METHODS)}")
        if budget_bytes < 1:
            raise CalibrationError(f"memory budget must be positive, got {budget_bytes} bytes")
        self.model = model
        self.method = method
        self.budget_bytes = int(budget_bytes)
        self.threads = threads
        self._tensors = None if tensors is None else tuple(tensors)
        self._options = observer_options or ObserverOptions()
        self.observers: dict[str, Observer] = {}
        self.skipped: dict[str, int] = {}
        self.notes: list[str] = []
        self.samples = 0
        self.passes = 0
        self.runs = 0
        self.peak_output_bytes = 0
        self._sizes: dict[str, int] = {}
        self._reduced: frozenset[str] = frozenset()
        self._inputs: tuple[str, ...] = ()
        self._fed = 0  # samples whose inputs were checked and observed
        self._started = False
        self._source = "data"

    def tracked_bytes(self) -> int:
        """Bytes the collection holds: observer states plus the largest set of outputs held at once."""
        return sum(o.tracked_bytes() for o in self.observers.values()) + self.peak_output_bytes

    def run(self, dataset: Dataset, *, progress: Progress | None = None) -> None:
        """Feed every sample of ``dataset`` to the observers (once per chunk of tensors).

        Raises:
            DataError: a sample does not fit the model, or onnxruntime fails on it.
            CalibrationError: nothing to observe, or the calibration copy does not load.
        """
        if self._started:
            raise CalibrationError("a Collector runs once; make a new one for new data")
        self._started = True
        self._source = getattr(dataset, "source", "data")
        specs = input_specs(self.model)
        check_dataset(dataset, specs)
        first = next(iter(dataset))
        infos = infer_tensors(self.model, {k: np.shape(v) for k, v in first.items()})
        input_bytes = sum(int(np.asarray(v).nbytes) for v in first.values())
        del first
        selection = select_tensors(self.model, infos, self._tensors)
        self.skipped = dict(selection.skipped)
        names = (*selection.inputs, *selection.outputs)
        if not names:
            raise CalibrationError("the model has no float tensors to calibrate")
        self.observers = {name: make_observer(self.method, self._options) for name in names}
        self._plan_sizes(selection.outputs, infos, input_bytes)
        queue = deque((chunk, 0) for chunk in plan_chunks(list(selection.outputs), self._sizes, self.budget_bytes))
        tracker = _Progress(progress, len(dataset) * max(1, len(queue)))
        if not queue:  # only graph inputs: one pass over the feeds
            queue.append(([], 0))
        self._inputs = selection.inputs
        while queue:
            chunk, start = queue.popleft()
            split = self._run_chunk(dataset, chunk, start, specs, tracker)
            self.passes += 1
            if split:
                tracker.total += (len(dataset) - split[0][1]) * (len(split) - 1)
                queue.extendleft(reversed(split))
        self.samples = len(dataset)
        self._note_nonfinite()

    def _plan_sizes(self, outputs: Sequence[str], infos: Mapping[str, TensorInfo], input_bytes: int) -> None:
        """Bytes per tensor for planning: inferred, else the largest inferred size (else the input size)."""
        known = {n: infos[n].nbytes() for n in outputs if n in infos and infos[n].nbytes() is not None}
        default = max(known.values(), default=max(1, input_bytes))
        self._sizes = {n: int(known.get(n, default)) for n in outputs}
        if self.method == "minmax":
            float32 = onnx.TensorProto.FLOAT
            self._reduced = frozenset(n for n in outputs if n in infos and infos[n].elem_type == float32)
        for name in outputs:
            if name in self._reduced:
                self._sizes[name] = 16
        big = [n for n in outputs if n not in self._reduced and self._sizes[n] > self.budget_bytes]
        if big:
            self.notes.append(f"{len(big)} tensor(s) alone exceed the {self.budget_bytes / 2**20:.1f} MiB budget "
                              f"(largest {max(self._sizes[n] for n in big) / 2**20:.1f} MiB); each runs on its own")

    def _run_chunk(
        self, dataset: Dataset, chunk: list[str], start: int, specs: Sequence[InputSpec], tracker: _Progress
    ) -> list[tuple[list[str], int]] | None:
        """One pass of the data (from sample ``start``) for ``chunk``; a re-split plan when it overflowed.

        Samples are checked, and graph inputs observed, the first time each sample is read.
        """
        raw = [n for n in chunk if n not in self._reduced and n in self.observers]
        reduced = [n for n in chunk if n in self._reduced]
        session, kinds = None, []
        if raw or reduced:
            copy, kinds = chunk_model(self.model, raw, reduced)
            session = _session(copy, self.threads)
            del copy
        source = getattr(dataset, "source", "data")
        for index, sample in enumerate(itertools.islice(iter(dataset), start, None), start):
            if index >= self._fed:
                check_sample(sample, specs, where=f"{source} (sample {index})")
                for name in self._inputs:
                    self.observers[name].update(np.asarray(sample[name]))
                self._fed = index + 1
            held = self._run_one(session, kinds, sample, index, source) if session is not None else 0
            self.runs += 1
            tracker.advance()
            if held > self.budget_bytes and len(raw) > 1 and index + 1 < len(dataset):
                log.debug("chunk of %d tensors returned %d bytes (budget %d): splitting the rest of the data",
                          len(raw), held, self.budget_bytes)
                parts = plan_chunks(raw, self._sizes, self.budget_bytes)
                parts[0] = reduced + parts[0]
                return [(part, index + 1) for part in parts]
        return None

    def _run_one(self, session: ort.InferenceSession, kinds: list[tuple[str, str]], sample: Mapping, index: int,
                 source: str) -> int:
        try:
            values = session.run(None, dict(sample))
        except Exception as err:  # onnxruntime raises several unrelated types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"{source} (sample {index}): onnxruntime failed: {first}") from err
        held = sum(int(getattr(v, "nbytes", 0)) for v in values)
        self.peak_output_bytes = max(self.peak_output_bytes, held)
        reduced: dict[str, list[float]] = {}
        for (kind, name), value in zip(kinds, values):
            if kind == "raw":
                self._observe(name, value)
            else:
                reduced.setdefault(name, [np.inf, -np.inf])[kind == "max"] = float(value)
        values.clear()
        for name, (lo, hi) in reduced.items():
            self.observers[name].update_range(lo, hi)  # type: ignore[attr-defined]
        return held

    def _observe(self, name: str, value: object) -> None:
        observer = self.observers.get(name)
        if observer is None:
            return
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
            del self.observers[name]  # typed only now (shape inference could not reach it)
            self.skipped["not float"] = self.skipped.get("not float", 0) + 1
            return
        self._sizes[name] = max(self._sizes.get(name, 0), int(value.nbytes))
        observer.update(value)

    def _note_nonfinite(self) -> None:
        nonfinite = sum(1 for o in self.observers.values() if o.nonfinite)
        if nonfinite:
            self.notes.append(f"{nonfinite} tensor(s) held NaN/inf values; those values were left out of the ranges")

    def table(self, *, keep_histograms: bool = False, seconds: float | None = None,
              fingerprint: str | None = None) -> CalibrationTable:
        """The ranges as a :class:`CalibrationTable` (tensors without any finite value are left out).

        Raises:
            CalibrationError: no tensor had a single finite value (nothing was observed): an
                empty table would quantize nothing and look like a success.
        """
        tensors: dict[str, TensorRange] = {}
        empty = 0
        for name, observer in self.observers.items():
            bounds = observer.compute_range()
            if bounds is None:
                empty += 1
                continue
            hist = observer.histogram() if keep_histograms else None
            tensors[name] = TensorRange(bounds[0], bounds[1], hist.state() if hist is not None else None)
        if not tensors:
            first = next(iter(self.observers), None)
            raise CalibrationError(
                f"calibration on {self._source} ({self.samples} samples) observed no finite value in any of its "
                f"{len(self.observers)} tensors (first: '{first}'): every value was NaN/Inf, or no sample was run"
            )
        skipped = {**self.skipped, "no finite values": empty}
        probe = make_observer(self.method, self._options)
        stats = {"tensors": len(tensors), "skipped": skipped, "passes": self.passes, "runs": self.runs,
                 "budget_bytes": self.budget_bytes, "peak_output_bytes": self.peak_output_bytes,
                 "in_graph_minmax": len(self._reduced)}
        if seconds is not None:
            stats["seconds"] = round(seconds, 3)
        options = {"method": self.method, **probe.options(),
                   "tensors": "float activations" if self._tensors is None else "explicit"}
        return CalibrationTable(fingerprint or model_fingerprint(self.model), self.method, self.samples, tensors,
                                options, stats, tuple(self.notes))


class _Progress:
    """Counts runs and forwards ``(done, total)`` to the caller's callback."""

    def __init__(self, callback: Progress | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def advance(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def collect(
    model: onnx.ModelProto,
    dataset: Dataset | Iterable[Mapping[str, np.ndarray]],
    *,
    method: str = "minmax",
    tensors: Sequence[str] | None = None,
    budget_bytes: int = DEFAULT_BUDGET,
    observer_options: ObserverOptions | None = None,
    threads: int = 0,
    keep_histograms: bool = False,
    progress: Progress | None = None,
) -> CalibrationTable:
    """Calibrate ``model`` on ``dataset`` and return the table (see the module docstring).

    ``dataset`` is a :class:`Dataset` or any iterable of ``{input name: array}`` dicts (held in
    memory then, as it is read once per chunk). A synthetic dataset adds a note to the table.

    Raises:
        DataError: the data does not fit the model.
        CalibrationError: nothing to calibrate, or onnxruntime cannot load the model.
    """
    if not isinstance(dataset, Dataset):
        dataset = IterableDataset(dataset)
    started = time.perf_counter()
    collector = Collector(model, method=method, tensors=tensors, budget_bytes=budget_bytes,
                          observer_options=observer_options, threads=threads)
    if getattr(dataset, "synthetic", False):
        collector.notes.append("synthetic random data: these ranges are not meaningful for a real model")
    collector.run(dataset, progress=progress)
    return collector.table(keep_histograms=keep_histograms, seconds=time.perf_counter() - started)


def observed_tensors(model: onnx.ModelProto) -> frozenset[str]:
    """The tensors a default :func:`collect` of ``model`` gives a range for whenever the data
    reaches them with finite values: graph inputs and main-graph node outputs that are not
    constant and whose float type shape inference knows (tensors it cannot type are left out,
    as :func:`collect` types those only at run time).

    A quantizer uses this to tell "no range because the table lacks it" (an error) from "no
    range because the tensor is not a float activation" (a reason to leave a node float).
    """
    infos = infer_tensors(model, {})
    selection = select_tensors(model, infos)
    unknown = TensorInfo(0, None)
    return frozenset(n for n in (*selection.inputs, *selection.outputs)
                     if infos.get(n, unknown).elem_type in FLOAT_TYPES)
