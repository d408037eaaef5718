"""The one flow every command that writes a model goes through (DESIGN §1).

::

    check the target → load → names and data checked against the model → verification inputs
    the input model runs on → passes (pipeline, each verified) → evaluation and gates (--eval,
    --metric, --max-drop) → latency → write last, atomically

Nothing is written unless every check passed: a bad eval file, a gate not met, a model the
verification inputs cannot drive, a pass with nothing to do, or Ctrl-C at any point (the
temporary file of the atomic write is removed on the way out) leave no output file. A command
describes its work as a :class:`Plan` built from the loaded model; :func:`run_flow` does the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.datasets import Dataset, input_specs, prepare_dataset
from onnxslim.bench import op_type_times, side_by_side_runs
from onnxslim.io import check_output_path, load_model, model_file_size, save_model
from onnxslim.pipeline import ContextStep, PipelineReport, run_pipeline
from onnxslim.report import human_bytes, markdown_table
from onnxslim.runtime import cast_feeds, make_session, run_model, runnable_feeds
from onnxslim.summary import parameter_stats
from onnxslim.validate import ValidationReport, load_metric, validate
from passes._base import VERIFY_SAMPLES, Pass, RunContext
from passes._errors import DataError, NothingToDoError, OnnxSlimError
from passes._graph import check_names

__all__ = [
    "ModelSize",
    "LatencyCheck",
    "kernel_changes",
    "CHANGED_KERNELS",
    "PassReport",
    "EvalRequest",
    "Plan",
    "FlowOptions",
    "Outcome",
    "run_flow",
    "write_outcome",
    "first_samples",
]

log = logging.getLogger(__name__)

#: A list in a pass's stats longer than this is shown as counts by op type (names in --json / -v).
LIST_LIMIT = 12


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Node, parameter and byte counts of one model (main graph nodes), and, when measured, the
    seconds onnxruntime takes to create a session from its file (``load_s``)."""

    nodes: int
    params: int
    param_bytes: int
    file_bytes: int | None
    load_s: float | None = None

    @classmethod
    def of(cls, model: onnx.ModelProto, *, file_bytes: int | None = None) -> ModelSize:
        """Measure ``model``."""
        stats = parameter_stats(model)
        return cls(len(model.graph.node), sum(p.count for p in stats), sum(p.bytes for p in stats), file_bytes)


#: kernel types listed when a result is not faster
CHANGED_KERNELS = 5


def kernel_changes(before: onnx.ModelProto, after: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                  *, runs: int = 10) -> tuple[tuple[str, float, float], ...]:
    """The ``CHANGED_KERNELS`` kernel types whose time per run changed the most from ``before`` to
    ``after`` on ``feeds`` (either way: a float Conv gone, the QLinearConv that replaced it):
    ``(type, before ms, after ms)``."""
    try:
        a, b = op_type_times(before, feeds, runs=runs), op_type_times(after, feeds, runs=runs)
    except OnnxSlimError:  # a diagnosis only: the timing it explains was measured
        return ()
    changed = sorted(((op, a.get(op, 0.0), b.get(op, 0.0)) for op in set(a) | set(b)),
                     key=lambda r: (-abs(r[2] - r[1]), r[0]))
    return tuple((op, round(x, 3), round(y, 3)) for op, x, y in changed[:CHANGED_KERNELS] if y != x)


@dataclasses.dataclass(frozen=True)
class LatencyCheck:
    """Input and result timed on one sample with 1 thread, round-robin in one process.

    ``ratios`` holds, per round, the result's time divided by the input's in that same round, so
    drift of a shared machine hits both alike. The verdict says "slower" or "faster" only when the
    middle half of those ratios lies wholly on one side of 1.

    ``where``: when the result is not measurably faster, the kernel types whose time changed the
    most, as ``(type, input ms, result ms)`` per run from onnxruntime's profiler
    (:func:`op_type_times`) — e.g. on an int8 MobileNetV3-style model, the HardSwish halves and
    Q/DQ that run in float between the int8 convolutions, where the float model fuses the
    activation into its Conv.
    """

    input_p50_ms: float
    output_p50_ms: float
    runs: int
    ratio_p25: float
    ratio_p50: float
    ratio_p75: float
    where: tuple[tuple[str, float, float], ...] = ()

    @classmethod
    def measure(cls, models: Sequence[onnx.ModelProto], feeds: Mapping[str, np.ndarray], *, runs: int) -> LatencyCheck:
        """Time ``models`` (input, result) on ``feeds``."""
        before, after = side_by_side_runs(models, feeds, threads=1, runs=runs)
        ratios = np.asarray(after) / np.maximum(np.asarray(before), 1e-9)
        p25, p50, p75 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
        where = kernel_changes(models[0], models[-1], feeds) if p75 >= 1.0 else ()  # not measurably faster
        return cls(float(np.median(before)), float(np.median(after)), len(ratios), p25, p50, p75, where)

    @property
    def speedup(self) -> float:
        """Input p50 ÷ output p50 (above 1: the result is faster)."""
        return self.input_p50_ms / self.output_p50_ms

    @property
    def direction(self) -> str:
        """``slower``, ``faster`` or ``same`` (the difference is within the spread of the runs)."""
        if self.ratio_p25 > 1.0:
            return "slower"
        if self.ratio_p75 < 1.0:
            return "faster"
        return "same"

    def verdict(self, label: str = "result") -> str:
        """One line; says plainly when the result is slower, and only when it measurably is."""
        text = (f"latency (1 thread, {self.runs} interleaved runs): input p50 {self.input_p50_ms:.3f} ms, "
                f"{label} p50 {self.output_p50_ms:.3f} ms ({self.speedup:.2f}x; per-run time ratio "
                f"{self.ratio_p50:.2f}, middle half {self.ratio_p25:.2f}-{self.ratio_p75:.2f})")
        if self.direction == "slower":
            text += (f" -- the {label} is SLOWER than the input on this CPU; keep the input unless size "
                     "matters more")
        elif self.direction == "same":
            text += " -- no difference beyond the spread of the runs"
        if self.where and self.direction != "faster":
            text += ("; where the time changed (onnxruntime's kernels, ms per run, input -> " + label + "): "
                     + ", ".join(f"{op} {a:.2f} -> {b:.2f}" for op, a, b in self.where))
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self) | {"speedup": self.speedup, "direction": self.direction}


@dataclasses.dataclass(frozen=True)
class PassReport:
    """What a command that rewrites a model did: sizes before and after, each pass's stats,
    verification, evaluation, latency, notes, and whether the output was written."""

    input_path: str
    output_path: str | None
    before: ModelSize
    after: ModelSize
    pipeline: PipelineReport
    verification: str
    notes: tuple[str, ...] = ()
    validation: ValidationReport | None = None
    latency: LatencyCheck | None = None
    written: bool = False
    op_types: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        """Whether the evaluation gates (if any) held."""
        return self.validation is None or self.validation.passed

    @property
    def unchanged(self) -> bool:
        """No pass changed the model: the output is a copy of the input."""
        return not any(s.changed for s in self.pipeline.steps)

    def step_stats(self, name: str) -> Mapping[str, Any]:
        """The stats of the step called ``name`` (empty when it did not run)."""
        return next((s.stats for s in self.pipeline.steps if s.name == name), {})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "input": self.input_path,
            "output": self.output_path if self.written else None,
            "written": self.written,
            "unchanged": self.unchanged,
            "before": dataclasses.asdict(self.before),
            "after": dataclasses.asdict(self.after),
            "verification": self.verification,
            "notes": list(self.notes),
            **self.pipeline.to_dict(),
            "latency": None if self.latency is None else self.latency.to_dict(),
            "validation": None if self.validation is None else self.validation.to_dict(),
        }

    def render(self, *, verbose: bool = False) -> str:
        """A before/after table, what each pass did, notes, verification, latency, evaluation."""
        b, a = self.before, self.after
        headers = ["", "nodes", "params", "param bytes", "file"]
        rows = [
            ["before", b.nodes, f"{b.params:,}", f"{b.param_bytes:,}", human_bytes(b.file_bytes)],
            ["after", a.nodes, f"{a.params:,}", f"{a.param_bytes:,}", human_bytes(a.file_bytes)],
        ]
        if b.load_s is not None and a.load_s is not None:
            headers.append("load s")
            rows[0].append(f"{b.load_s:.3f}")
            rows[1].append(f"{a.load_s:.3f}")
        target = self.output_path if self.written else "(nothing written)"
        lines = [f"{self.input_path} -> {target}", "", markdown_table(headers, rows), ""]
        if self.unchanged:
            lines.append("UNCHANGED: no pass changed the model; the output is a copy of the input")
        for step in self.pipeline.steps:
            lines += _render_stats(step.name, step.stats, self.op_types, verbose=verbose)
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"verification: {self.verification}")
        if self.latency is not None:
            lines.append(self.latency.verdict())
        if self.validation is not None:
            lines += ["", self.validation.render()]
        return "\n".join(lines)


_QUIET_STATS = {"nodes_before", "nodes_after"}
#: List-valued stats that their command renders as its own table (prune's per-group rows).
_OWN_TABLE_STATS = {"groups"}


def _render_stats(name: str, stats: Mapping[str, Any], op_types: Mapping[str, str], *, verbose: bool) -> list[str]:
    """One line of scalar counters, then the list-valued stats: one line per entry, or, for a
    long list, its length and counts by op type (every entry with ``verbose``)."""
    plain: list[str] = []
    prefixed: dict[str, list[str]] = {}  # "quantized: Conv 64" and the like, one line per prefix
    for k, v in stats.items():
        if not v or k in _QUIET_STATS or isinstance(v, (list, tuple, dict)):
            continue
        prefix, sep, rest = str(k).partition(": ")
        if sep:
            prefixed.setdefault(prefix, []).append(f"{rest} {v}")
        else:
            plain.append(f"{k} {v}")
    lines = [f"{name}: {', '.join(plain) or ('' if prefixed else 'nothing to do')}".rstrip()]
    lines += [f"  {prefix}: {', '.join(items)}" for prefix, items in prefixed.items()]
    for key, value in stats.items():
        if not isinstance(value, (list, tuple)) or not value or key in _OWN_TABLE_STATS:
            continue
        if len(value) > LIST_LIMIT and not verbose:
            lines.append(f"  {key}: {len(value)} entries ({_by_op_type(value, op_types)}; every entry: --json or -v)")
            continue
        lines.append(f"  {key}:")
        lines += [f"    - {_entry(item)}" for item in value]
    return lines


def _by_op_type(entries: Sequence[Any], op_types: Mapping[str, str]) -> str:
    """Counts of the op types the entries name (an entry names a node by itself or by a
    ``node`` key); entries that name no node of the model are counted as "other"."""
    counts: dict[str, int] = {}
    for item in entries:
        node = item.get("node") if isinstance(item, Mapping) else item
        key = op_types.get(str(node), "other")
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _entry(item: Any) -> str:
    if isinstance(item, Mapping):
        return ", ".join(f"{k} {v}" for k, v in item.items())
    return str(item)


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """Evaluate input and result on ``data`` (``--eval``), with a task ``metric`` and a gate."""

    data: str | os.PathLike[str] | Dataset
    metric: str | None = None
    max_drop: float | None = None
    samples: int | None = None
    confidence: float = 0.9  # the gate holds the drop's upper bound at this confidence (0: the measured drop)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a command does to a loaded model.

    Attributes:
        steps: passes and context steps (e.g. calibration), in order.
        ctx: the context the first step gets.
        verify_data: the command's own samples to verify on when no ``--data`` is given (the
            calibration data), or ``None``.
        notes: lines for the report.
        must_change: name of the pass whose work is the point of the command: when it changes
            nothing, the command fails with its skip reasons and writes nothing. ``None``: an
            unchanged model is still a useful output (said loudly in the report).
        describe: called with the result before it is written; its return value goes to
            :attr:`Outcome.extra` (e.g. quantize's fusion count).
    """

    steps: Sequence[Pass | ContextStep]
    ctx: RunContext = dataclasses.field(default_factory=RunContext)
    verify_data: Dataset | Sequence[Mapping[str, np.ndarray]] | None = None
    notes: Sequence[str] = ()
    must_change: str | None = None
    describe: Callable[[onnx.ModelProto], Any] | None = None


@dataclasses.dataclass(frozen=True)
class FlowOptions:
    """The options every model-writing command shares.

    Attributes:
        verify: compare each pass's output with its input in onnxruntime.
        data: verification samples (``--data``); default: the plan's own data, else synthesized.
        shapes: dynamic input dims for synthesized inputs (``--shape``).
        evaluation: ``--eval`` data, metric and gate.
        latency_runs: time input and result side by side this many rounds (0: not timed).
        names: node names given on the command line, by flag; each must be a node of the model.
        ops: op types given on the command line, by flag; each must occur in the model.
        skip_nonfinite: drop samples with NaN/Inf from every dataset instead of refusing them.
    """

    verify: bool = True
    data: str | os.PathLike[str] | Dataset | None = None
    shapes: Mapping[str, tuple[int, ...]] | None = None
    evaluation: EvalRequest | None = None
    latency_runs: int = 0
    names: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    ops: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    skip_nonfinite: bool = False


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The report, the resulting model (written or not), and what the plan's ``describe`` gave."""

    report: PassReport
    model: onnx.ModelProto
    extra: Any = None


def first_samples(samples: Dataset | Sequence[Mapping[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """The first ``count`` samples of a dataset or list, as plain dicts."""
    out = []
    for sample in samples:
        out.append({k: np.asarray(v) for k, v in sample.items()})
        if len(out) == count:
            break
    return out


def open_data(source: str | os.PathLike[str] | Dataset, model: onnx.ModelProto, *, flag: str, limit: int | None = None,
              skip_nonfinite: bool = False) -> Dataset:
    """``source`` opened and checked against ``model``'s inputs; errors name the flag."""
    try:
        return prepare_dataset(source, input_specs(model), limit=limit, skip_nonfinite=skip_nonfinite)
    except DataError as err:
        raise DataError(f"{flag}: {err}") from err


def _verification_feeds(model: onnx.ModelProto, plan: Plan, options: FlowOptions,
                        data: Dataset | None) -> tuple[list[dict[str, np.ndarray]], str]:
    """Samples to verify on, and how they were chosen; the input model is run on them here, so a
    model these inputs cannot drive is refused before any pass runs."""
    if data is not None:
        feeds, how = first_samples(data, VERIFY_SAMPLES), f"samples of --data {data.source}"
    elif plan.verify_data is not None:
        source = getattr(plan.verify_data, "source", "calibration data")
        feeds, how = first_samples(plan.verify_data, VERIFY_SAMPLES), f"samples of {source}"
    else:
        try:
            feeds, how = runnable_feeds(model, shapes=options.shapes, samples=2)
        except DataError as err:
            raise DataError(f"cannot verify the result: {err}; give real inputs with --data DATA "
                            "(or --no-verify)") from err
    try:
        session = make_session(model, graph_opt="disable")
        for feed in feeds:
            run_model(session, cast_feeds(feed, model))
    except OnnxSlimError as err:
        flag = "other samples with --data DATA" if data is not None else "real inputs with --data DATA"
        raise DataError(f"the input model does not run on the verification inputs ({how}): {err}; "
                        f"give {flag} (or --no-verify)") from err
    return feeds, f"{len(feeds)} {how}"


def _nothing_to_do(step_name: str, pipeline: PipelineReport) -> NothingToDoError:
    stats = next((s.stats for s in pipeline.steps if s.name == step_name), {})
    reasons = [f"{k.removeprefix('skipped: ')} ({v})" for k, v in stats.items() if str(k).startswith("skipped: ")]
    why = "; ".join(reasons) or "no eligible node"
    return NothingToDoError(f"{step_name}: nothing to do ({why}); nothing written")


def _op_types(model: onnx.ModelProto) -> dict[str, str]:
    return {n.name: n.op_type for n in model.graph.node if n.name}


def run_flow(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None,
    plan: Callable[[onnx.ModelProto], Plan],
    options: FlowOptions = FlowOptions(),
) -> Outcome:
    """Load, run the command's plan, verify, evaluate, time, and write last.

    Args:
        input_path: the user's model (never modified).
        output_path: where to write the result; ``None`` never writes (a trial of a search).
        plan: builds the command's :class:`Plan` from the loaded model (opening its data there,
            so bad data fails before any pass runs).
        options: the shared options.

    Returns:
        The outcome; ``outcome.report.written`` is false when a gate was not met (or
        ``output_path`` is ``None``).

    Raises:
        OnnxSlimError: bad model, data or names; verification failed; the main pass had nothing
            to do; the output cannot be written. Nothing is written then.
    """
    input_path = Path(input_path)
    if output_path is not None:
        output_path = Path(output_path)
        check_output_path(output_path, input_path)  # before any work; save_model checks again
    original = load_model(input_path)
    check_names(original, nodes=options.names, ops=options.ops)
    evaluation = options.evaluation
    eval_data = metric = None
    if evaluation is not None:  # opened and checked now, so a bad --eval fails before the work
        eval_data = open_data(evaluation.data, original, flag="--eval", limit=evaluation.samples,
                              skip_nonfinite=options.skip_nonfinite)
        if evaluation.metric:
            metric = load_metric(evaluation.metric)
    data = None
    if options.data is not None:
        data = open_data(options.data, original, flag="--data", skip_nonfinite=options.skip_nonfinite)
    work = plan(original)
    need_feeds = options.verify or options.latency_runs > 0
    feeds, how = _verification_feeds(original, work, options, data) if need_feeds else (None, "")
    gate = evaluation is not None and evaluation.max_drop is not None  # then the task metric judges lossy passes
    pipeline = run_pipeline(original, work.steps, work.ctx, verify_feeds=feeds if options.verify else None,
                            fidelity=not gate)
    if work.must_change is not None and not any(s.changed for s in pipeline.steps if s.name == work.must_change):
        raise _nothing_to_do(work.must_change, pipeline)
    result = pipeline.model
    verification = "not requested" if not options.verify else \
        "; ".join(sorted({s.verified for s in pipeline.steps if s.verified != "not a rewrite"})) + f" ({how})"
    latency = None
    if options.latency_runs > 0:
        latency = LatencyCheck.measure([original, result], feeds[0], runs=options.latency_runs)
    validation = None
    if eval_data is not None:
        validation = validate(original, result, data=eval_data, metric=evaluation.metric, loaded_metric=metric,
                              max_drop=evaluation.max_drop, confidence=evaluation.confidence,
                              reference_name=str(input_path),
                              candidate_name=str(output_path or "result"))
    extra = work.describe(result) if work.describe is not None else None
    report = PassReport(str(input_path), None if output_path is None else str(output_path),
                        ModelSize.of(original, file_bytes=model_file_size(input_path)),
                        ModelSize.of(result, file_bytes=None), pipeline, verification, tuple(work.notes),
                        validation, latency, op_types=_op_types(original) | _op_types(result))
    outcome = Outcome(report, result, extra)
    if output_path is None or not report.passed:
        return outcome
    return write_outcome(outcome, output_path)


def write_outcome(outcome: Outcome, output_path: str | os.PathLike[str]) -> Outcome:
    """Write the outcome's model to ``output_path`` atomically and record the file size."""
    output_path = Path(output_path)
    report = outcome.report
    save_model(outcome.model, output_path, input_path=report.input_path)
    after = dataclasses.replace(report.after, file_bytes=model_file_size(output_path))
    validation = report.validation
    if validation is not None:
        validation = dataclasses.replace(validation, candidate=str(output_path))
    report = dataclasses.replace(report, output_path=str(output_path), after=after, validation=validation, written=True)
    return dataclasses.replace(outcome, report=report)
