"""Compare a candidate model with a reference model: numbers, task accuracy, gates.

Two uses:

- :func:`tolerance_violation` — does a rewrite keep each output within a pass's tolerance
  (used by the pipeline's per-pass verification);
- :func:`validate` — run both models on the same samples and report, per output, cosine
  similarity, SQNR (dB), max/mean absolute error, top-1 agreement for class-score outputs,
  exact match for integer outputs; labeled accuracy of both when the data has labels; a user's
  task metric; and gates that turn the report into a pass/fail verdict.

Per-output figures are accumulated as running sums, so memory does not grow with the number of
samples (a user metric, which needs every output, is the exception and is documented so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from calibration.datasets import Dataset, IterableDataset, Subset, check_class_labels, input_specs, prepare_dataset
from onnxslim.io import load_model
from onnxslim.report import markdown_table
from onnxslim.runtime import make_session, run_model, runnable_feeds
from passes._base import Tolerance
from passes._errors import DataError, OnnxSlimError

__all__ = [
    "SQNR_CAP_DB",
    "OutputReport",
    "AccuracyReport",
    "ValidationReport",
    "tolerance_violation",
    "check_same_interface",
    "validate",
    "load_metric",
    "drop_bound",
    "RESAMPLES",
]

#: bootstrap resamples of the eval samples behind a drop's confidence bound (a task metric is
#: computed twice per resample: YOLOv8n's mAP on 120 images takes 0.4 s a call)
RESAMPLES = 50


def _flat_outputs(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Outputs with each sequence output spread into ``name[i]`` entries (and its length kept, so
    sequences of different lengths differ)."""
    flat: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        if isinstance(value, (list, tuple)):
            flat[f"{name} (length)"] = np.asarray(len(value))
            flat.update({f"{name}[{i}]": np.asarray(item) for i, item in enumerate(value)})
        else:
            flat[name] = np.asarray(value)
    return flat


def tolerance_violation(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    tolerance: Tolerance,
) -> str | None:
    """Return why ``candidate`` is outside ``tolerance`` of ``reference``, or ``None`` if within.

    Element-wise mode: ``|ref - cand| <= atol + rtol * max|ref|`` for every element (the scale is
    the output's largest magnitude, so near-zero elements are not judged relatively). Cosine mode:
    the cosine similarity of each flattened output is at least ``min_cosine``. A sequence output
    (a list of tensors) is compared element by element, as ``name[i]``.
    """
    if any(isinstance(v, (list, tuple)) for v in (*reference.values(), *candidate.values())):
        reference, candidate = _flat_outputs(reference), _flat_outputs(candidate)
    for name, ref in reference.items():
        if name not in candidate:
            return f"output '{name}' is missing"
        cand = candidate[name]
        if ref.shape != cand.shape:
            return f"output '{name}' has shape {cand.shape}, expected {ref.shape}"
        if not np.issubdtype(ref.dtype, np.floating):
            if not np.array_equal(ref, cand):
                return f"output '{name}' differs in {int(np.sum(ref != cand))} elements"
            continue
        r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        finite = np.isfinite(r)
        if not np.array_equal(finite, np.isfinite(c)):
            return f"output '{name}' has non-finite values where the reference has none (or the reverse)"
        r, c = r[finite], c[finite]
        if r.size == 0:
            continue
        if tolerance.min_cosine is not None:
            denom = np.linalg.norm(r) * np.linalg.norm(c)
            cos = float(r @ c / denom) if denom > 0 else float(np.array_equal(r, c))
            if cos < tolerance.min_cosine:
                return f"output '{name}' cosine {cos:.6f} < {tolerance.min_cosine}"
            continue
        scale = float(np.max(np.abs(r)))
        err = np.abs(r - c)
        worst = int(np.argmax(err))
        if err[worst] > tolerance.atol + tolerance.rtol * scale:
            return (
                f"output '{name}' max abs error {err[worst]:.3g} at flat index {worst} "
                f"(ref {r[worst]:.6g}, got {c[worst]:.6g}, output scale {scale:.3g}, {tolerance.describe()})"
            )
    return None


# --------------------------------------------------------------------------------------------
# Validation of a candidate model against a reference model on a dataset.

#: SQNR reported when the candidate's outputs equal the reference's exactly (no noise at all);
#: float32 rounding noise alone is typically 120-150 dB, so 200 dB means "identical".
SQNR_CAP_DB = 200.0


@dataclasses.dataclass
class _OutputStats:
    """Streaming sums for one output; memory does not grow with the number of samples."""

    dtype: str
    samples: int = 0
    elements: int = 0
    shape_mismatches: int = 0
    sum_ref2: float = 0.0
    sum_cand2: float = 0.0
    sum_cross: float = 0.0
    sum_err2: float = 0.0
    sum_abs_err: float = 0.0
    max_abs_err: float = 0.0
    nonfinite: int = 0
    equal_elements: int = 0
    top1_agree: int = 0
    top1_total: int = 0

    def update(self, ref: np.ndarray, cand: np.ndarray, *, class_scores: bool) -> None:
        self.samples += 1
        if ref.shape != cand.shape:
            self.shape_mismatches += 1
            return
        self.elements += ref.size
        if not np.issubdtype(ref.dtype, np.floating):
            self.equal_elements += int(np.sum(ref == cand))
            return
        r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        bad = ~(np.isfinite(r) & np.isfinite(c))
        if bad.any():
            self.nonfinite += int(bad.sum())
            r, c = r[~bad], c[~bad]
        err = r - c
        self.sum_ref2 += float(r @ r)
        self.sum_cand2 += float(c @ c)
        self.sum_cross += float(r @ c)
        self.sum_err2 += float(err @ err)
        self.sum_abs_err += float(np.abs(err).sum())
        self.max_abs_err = max(self.max_abs_err, float(np.abs(err).max(initial=0.0)))
        if class_scores:
            agree = np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1)
            self.top1_agree += int(agree.sum())
            self.top1_total += int(agree.size)


@dataclasses.dataclass(frozen=True)
class OutputReport:
    """Per-output comparison; float metrics are ``None`` for non-float outputs."""

    name: str
    dtype: str
    samples: int
    cosine: float | None
    sqnr_db: float | None
    max_abs_error: float | None
    mean_abs_error: float | None
    top1_agreement: float | None
    exact_match: float | None
    shape_mismatches: int
    nonfinite: int


def _finish(name: str, s: _OutputStats) -> OutputReport:
    is_float = s.dtype.startswith("float") or s.dtype.startswith("bfloat")
    if not is_float:
        exact = s.equal_elements / s.elements if s.elements else None
        return OutputReport(name, s.dtype, s.samples, None, None, None, None, None, exact, s.shape_mismatches, 0)
    denom = (s.sum_ref2 * s.sum_cand2) ** 0.5
    if denom > 0:
        cosine = s.sum_cross / denom
    else:
        cosine = 1.0 if s.sum_err2 == 0 else 0.0
    if s.sum_err2 == 0:
        sqnr = SQNR_CAP_DB
    elif s.sum_ref2 == 0:
        sqnr = -SQNR_CAP_DB
    else:
        sqnr = min(SQNR_CAP_DB, 10.0 * float(np.log10(s.sum_ref2 / s.sum_err2)))
    counted = s.elements - s.nonfinite
    return OutputReport(
        name,
        s.dtype,
        s.samples,
        float(min(1.0, cosine)),
        sqnr,
        s.max_abs_err if counted else None,
        s.sum_abs_err / counted if counted else None,
        s.top1_agree / s.top1_total if s.top1_total else None,
        None,
        s.shape_mismatches,
        s.nonfinite,
    )


def _looks_like_class_scores(output: np.ndarray) -> bool:
    """Rank-2 ``[N, C]`` float scores, or any rank ≥ 2 whose last axis is a softmax."""
    if not np.issubdtype(output.dtype, np.floating) or output.ndim < 2 or output.shape[-1] < 2:
        return False
    if output.ndim == 2:
        return True
    if output.size == 0 or not np.all(np.isfinite(output)):
        return False
    in_unit = float(output.min()) >= 0.0 and float(output.max()) <= 1.0
    return in_unit and bool(np.allclose(output.sum(axis=-1), 1.0, atol=1e-3))


@dataclasses.dataclass(frozen=True)
class AccuracyReport:
    """Labeled top-1 accuracy of both models on one class-score output."""

    output: str
    labels: int
    reference: float
    candidate: float
    bound: float | None = None  # upper confidence bound of the drop (``validate(confidence=...)``)

    @property
    def drop(self) -> float:
        """Reference minus candidate accuracy (fraction; 0.01 is one point)."""
        return self.reference - self.candidate


@dataclasses.dataclass(frozen=True)
class MetricReport:
    """A user task metric (higher is better) of both models; ``headline`` is its first key."""

    name: str
    reference: Mapping[str, float]
    candidate: Mapping[str, float]
    bound: float | None = None  # upper confidence bound of the headline's drop

    @property
    def headline(self) -> str:
        """The key gates and drops are judged on."""
        return next(iter(self.reference))

    @property
    def drop(self) -> float:
        """Reference minus candidate on the headline key."""
        return self.reference[self.headline] - self.candidate[self.headline]


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """Everything :func:`validate` measured, the gates asked for and which failed."""

    reference: str
    candidate: str
    data: str
    samples: int
    outputs: tuple[OutputReport, ...]
    accuracy: AccuracyReport | None
    metric: MetricReport | None
    gates: Mapping[str, float]
    failures: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Whether every gate held."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain floats; SQNR of identical outputs is the documented cap)."""
        out = dataclasses.asdict(self)
        if self.accuracy:
            out["accuracy"]["drop"] = self.accuracy.drop
        if self.metric:
            out["metric"] |= {"headline": self.metric.headline, "drop": self.metric.drop}
        out["passed"] = self.passed
        return out

    def render(self) -> str:
        """Markdown: a per-output table, accuracy and metric lines, notes and the verdict."""
        rows = [
            [o.name, o.dtype, _fmt(o.cosine, ".6f"), _fmt(o.sqnr_db, ".2f"), _fmt(o.max_abs_error, ".3g"),
             _fmt(o.mean_abs_error, ".3g"), _fmt(o.top1_agreement, ".2%"), _fmt(o.exact_match, ".2%")]
            for o in self.outputs
        ]
        lines = [
            f"reference: {self.reference}",
            f"candidate: {self.candidate}",
            f"data: {self.data} ({self.samples} samples)",
            "",
            markdown_table(["output", "dtype", "cosine", "SQNR dB", "max abs err", "mean abs err", "top-1 agree", "exact"], rows),
            "",
        ]
        if self.accuracy:
            a = self.accuracy
            lines.append(f"labeled accuracy ({a.output}, {a.labels} labels): reference {a.reference:.2%}, "
                         f"candidate {a.candidate:.2%}, drop {a.drop * 100:+.2f} points"
                         + ("" if a.bound is None else f" (upper bound {a.bound * 100:+.2f})"))
        if self.metric:
            m = self.metric
            for key in m.reference:
                lines.append(f"metric {m.name} [{key}]: reference {m.reference[key]:.4f}, candidate {m.candidate[key]:.4f}")
            lines.append(f"metric drop ({m.headline}): {m.drop:+.4f}"
                         + ("" if m.bound is None else f" (upper bound {m.bound:+.4f})"))
        lines += [f"note: {n}" for n in self.notes]
        if self.gates:
            verdict = "PASS" if self.passed else "FAIL"
            lines.append(f"gates {', '.join(f'{k}={v:g}' for k, v in self.gates.items())}: {verdict}")
            lines += [f"  failed: {f}" for f in self.failures]
        return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """Let MODULE come from the current folder, as ``python -m`` would (a console script's
    ``sys.path`` does not hold it)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_metric(spec: str) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
    """Import ``MODULE:FUNC``; also return the module's optional ``runner``.

    MODULE is imported from the current folder or the installed packages. The metric is called as ``func(candidate_outputs, reference_outputs, dataset)`` where the
    outputs are lists of per-sample dicts in dataset order, and returns a float or a
    ``dict[str, float]`` (higher is better; the first key is the headline). A module may define
    ``runner(run, dataset) -> list[dict]`` for stateful models, where ``run(feeds) -> outputs``
    runs one model once; it then replaces the plain one-run-per-sample loop.

    Raises:
        OnnxSlimError: the spec is malformed, the module cannot be imported, or the function
            does not exist.
    """
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise OnnxSlimError(f"--metric '{spec}' must be MODULE:FUNCTION, e.g. benchmarks.tasks.digits:metric")
    try:
        with _cwd_importable():
            module = importlib.import_module(module_name)
    except ImportError as err:
        raise OnnxSlimError(f"--metric: cannot import module '{module_name}' ({err})") from err
    func = getattr(module, func_name, None)
    if not callable(func):
        raise OnnxSlimError(f"--metric: module '{module_name}' has no function '{func_name}'")
    runner = getattr(module, "runner", None)
    return func, runner if callable(runner) else None


def _as_metric_dict(value: Any, spec: str) -> dict[str, float]:
    if isinstance(value, Mapping):
        if not value:
            raise OnnxSlimError(f"--metric {spec} returned an empty dict")
        return {str(k): float(v) for k, v in value.items()}
    try:
        return {"metric": float(value)}
    except (TypeError, ValueError) as err:
        raise OnnxSlimError(f"--metric {spec} returned {type(value).__name__}, not a number or dict") from err


def _interface(model: onnx.ModelProto) -> tuple[dict[str, str], dict[str, str]]:
    inputs = {s.name: str(s.dtype) for s in input_specs(model)}
    outputs = {
        o.name: str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)))
        if o.type.tensor_type.elem_type else "non-tensor"
        for o in model.graph.output
    }
    return inputs, outputs


def check_same_interface(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> None:
    """Raise a one-line :class:`OnnxSlimError` when inputs/outputs differ in names or dtypes."""
    for kind, ref, cand in zip(("input", "output"), _interface(reference), _interface(candidate)):
        if list(ref) != list(cand):
            only = sorted(set(ref) ^ set(cand))
            detail = f"'{only[0]}' is only in the {'reference' if only[0] in ref else 'candidate'}" if only else "order differs"
            raise OnnxSlimError(f"models have different {kind}s: {detail} (reference {list(ref)}, candidate {list(cand)})")
        for name, dtype in ref.items():
            if cand[name] != dtype:
                raise OnnxSlimError(f"{kind} '{name}' is {dtype} in the reference but {cand[name]} in the candidate")


@dataclasses.dataclass
class _RunResult:
    """What one pass over the data leaves: streaming stats, argmaxes, and kept outputs."""

    stats: dict[str, _OutputStats] = dataclasses.field(default_factory=dict)
    class_outputs: list[str] = dataclasses.field(default_factory=list)
    ref_top1: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    cand_top1: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    classes: dict[str, int] = dataclasses.field(default_factory=dict)
    ref_outputs: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    cand_outputs: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    count: int = 0

    def add(self, ref: dict[str, np.ndarray], cand: dict[str, np.ndarray], *, keep: bool) -> None:
        if not self.stats:
            self.class_outputs = [n for n, v in ref.items() if _looks_like_class_scores(v)]
            self.stats = {n: _OutputStats(str(v.dtype)) for n, v in ref.items()}
        for name, value in ref.items():
            is_class = name in self.class_outputs
            self.stats[name].update(value, cand[name], class_scores=is_class)
            if is_class and value.ndim == 2 and value.shape == cand[name].shape:
                self.classes[name] = value.shape[-1]
                self.ref_top1.setdefault(name, []).append(np.argmax(value, axis=-1))
                self.cand_top1.setdefault(name, []).append(np.argmax(cand[name], axis=-1))
        if keep:
            self.ref_outputs.append(ref)
            self.cand_outputs.append(cand)
        self.count += 1

    def accuracy(self, labels: np.ndarray | None, notes: list[str], *, strict: bool, confidence: float = 0.0,
                 within: float | None = None, resamples: int = RESAMPLES) -> AccuracyReport | None:
        """Top-1 accuracy of the first ``[N, C]`` class output against ``labels``.

        ``labels`` are the dataset's, one per sample; those of the samples run (the first
        ``count``) are checked by :func:`calibration.datasets.check_class_labels` against the
        predictions made and ``C``. With ``strict`` (no task metric to read the labels instead),
        labels that are not one integer class id per prediction within ``[0, C)`` are a
        :class:`DataError` saying what is wrong; otherwise such labels (a metric's boxes or
        intervals) are the metric's, and labeled accuracy is not measured (a note says why).
        With ``confidence`` and a drop no larger than ``within``, the report carries the drop's
        upper bound (:func:`drop_bound`; a drop over ``within`` fails without it).
        """
        if labels is None:
            return None
        usable = [n for n in self.class_outputs if n in self.ref_top1]
        if not usable:
            notes.append("the data has labels but no output is [N, classes] scores; use --metric for this task")
            return None
        name = usable[0]
        ref = np.concatenate(self.ref_top1[name])
        cand = np.concatenate(self.cand_top1[name])
        try:
            given = np.asarray(labels)
            truth = check_class_labels(given[: self.count] if given.ndim else given, count=len(ref),
                                       classes=self.classes[name])
        except DataError as err:
            if strict:
                raise DataError(f"labeled accuracy of '{name}': {err}") from err
            notes.append(f"labels are not class ids of '{name}' ({err}); labeled accuracy not measured")
            return None
        report = AccuracyReport(name, len(truth), float(np.mean(ref == truth)), float(np.mean(cand == truth)))
        if confidence > 0 and within is not None and report.drop <= within:
            right_ref, right_cand = (ref == truth).astype(np.float64), (cand == truth).astype(np.float64)
            report = dataclasses.replace(report, bound=drop_bound(
                lambda idx: float(np.mean(right_ref[idx]) - np.mean(right_cand[idx])), len(truth), confidence,
                resamples=resamples))
        return report


def _run_all(
    run_ref: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    run_cand: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    dataset: Dataset,
    *,
    limit: int,
    keep: bool,
    runner: Callable[..., Any] | None,
    progress: Callable[[int, int], None] | None,
) -> _RunResult:
    """Run both models over the first ``limit`` samples (or through a task's own runner)."""
    result = _RunResult()
    if runner is not None:
        ref_out = list(runner(run_ref, dataset))
        cand_out = list(runner(run_cand, dataset))
        if len(ref_out) != len(cand_out):
            raise OnnxSlimError(f"metric runner gave {len(ref_out)} reference but {len(cand_out)} candidate results")
        for ref, cand in zip(ref_out, cand_out):
            result.add(ref, cand, keep=keep)
        return result
    for i, sample in enumerate(dataset):
        if i >= limit:
            break
        result.add(run_ref(sample), run_cand(sample), keep=keep)
        if progress:
            progress(i + 1, limit)
    return result


def _gate_failures(
    outputs: Sequence[OutputReport],
    accuracy: AccuracyReport | None,
    metric: MetricReport | None,
    gates: Mapping[str, float],
) -> list[str]:
    failures = []
    for out in outputs:
        if out.shape_mismatches:
            failures.append(f"output '{out.name}': shape differs in {out.shape_mismatches} samples")
        if out.nonfinite and gates:
            failures.append(f"output '{out.name}': {out.nonfinite} non-finite values")
        if "min_sqnr" in gates and out.sqnr_db is not None and out.sqnr_db < gates["min_sqnr"]:
            failures.append(f"output '{out.name}': SQNR {out.sqnr_db:.2f} dB < {gates['min_sqnr']:g} dB")
        if "min_cosine" in gates and out.cosine is not None and out.cosine < gates["min_cosine"]:
            failures.append(f"output '{out.name}': cosine {out.cosine:.6f} < {gates['min_cosine']:g}")
    if "max_drop" in gates:
        limit = gates["max_drop"]
        judged = ([(f"labeled accuracy ('{accuracy.output}')", accuracy)] if accuracy else []) + \
                 ([(f"metric {metric.headline}", metric)] if metric else [])
        for what, report in judged:
            if report.drop > limit:
                failures.append(f"{what} dropped {report.drop:.4f} > {limit:g}")
            elif report.bound is not None and report.bound > limit:
                failures.append(f"{what} dropped {report.drop:.4f}, but its {gates.get('confidence', 0):g} upper "
                                f"bound over resamples of the data is {report.bound:.4f} > {limit:g}")
    return failures


def drop_bound(drop_at: Callable[[np.ndarray], float], count: int, confidence: float, *,
               resamples: int = RESAMPLES) -> float:
    """The ``confidence`` quantile of a drop over bootstrap resamples of ``count`` samples.

    A drop measured on N samples is one draw: on other data like them it varies, the more so
    the fewer samples decide it (YOLOv8n's mAP on 120 images moved by 1.5 to 6 points between two
    image sets for the same model). ``drop_at(indices)`` computes the drop on the samples at
    ``indices`` (drawn with replacement, ``count`` of them); the quantile of ``resamples`` such
    drops bounds the drop to expect on other data with that confidence. Seeded, so the same
    outputs give the same bound.
    """
    rng = np.random.default_rng(0)
    drops = [drop_at(rng.integers(0, count, count)) for _ in range(max(1, resamples))]
    return float(np.quantile(np.asarray(drops, dtype=np.float64), confidence))


def _metric_bound(metric_fn: Callable[..., Any], spec: str, headline: str, result: _RunResult, dataset: Dataset,
                  confidence: float, resamples: int) -> float:
    """:func:`drop_bound` of a task metric's headline: the metric re-computed on each resample,
    for both models (the reference's own score can move with the samples too)."""
    ref_all, cand_all = result.ref_outputs, result.cand_outputs

    def drop_at(indices: np.ndarray) -> float:
        sub = Subset(dataset, indices, how="bootstrap resample")
        ref = [ref_all[i] for i in indices]
        cand = [cand_all[i] for i in indices]
        return (_as_metric_dict(metric_fn(ref, ref, sub), spec)[headline]
                - _as_metric_dict(metric_fn(cand, ref, sub), spec)[headline])

    return drop_bound(drop_at, len(ref_all), confidence, resamples=resamples)


def _name(source: str | os.PathLike[str] | onnx.ModelProto, given: str | None, default: str) -> str:
    if given:
        return given
    return default if isinstance(source, onnx.ModelProto) else str(source)


def _model(source: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    return source if isinstance(source, onnx.ModelProto) else load_model(source)


def validate(
    reference: str | os.PathLike[str] | onnx.ModelProto,
    candidate: str | os.PathLike[str] | onnx.ModelProto,
    *,
    data: str | os.PathLike[str] | Dataset | None = None,
    samples: int | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    metric: str | None = None,
    min_sqnr: float | None = None,
    min_cosine: float | None = None,
    max_drop: float | None = None,
    confidence: float = 0.0,
    resamples: int = RESAMPLES,
    graph_opt: str = "all",
    threads: int = 0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    loaded_metric: tuple[Callable[..., Any], Callable[..., Any] | None] | None = None,
    reference_name: str | None = None,
    candidate_name: str | None = None,
) -> ValidationReport:
    """Run ``reference`` and ``candidate`` on the same samples and compare them.

    Args:
        reference: the trusted model (e.g. the fp32 export): a file or a loaded model.
        candidate: the model to judge (e.g. the quantized one), likewise; a model in memory is
            judged before it is ever written.
        data: a ``.npz`` / folder / :class:`Dataset`; ``None`` uses random inputs (``samples``
            of them, default 8) and says so in the notes.
        samples: use at most this many samples of ``data``.
        shapes: dynamic dims for random inputs (``--shape``).
        metric: ``MODULE:FUNC`` task metric (see :func:`load_metric`).
        min_sqnr: gate: every float output's SQNR must reach this many dB.
        min_cosine: gate: every float output's cosine similarity must reach this.
        max_drop: gate: labeled accuracy drop and metric headline drop must not exceed this
            (absolute, e.g. 0.01 = one point of accuracy).
        confidence: with ``max_drop`` and a measured drop within it, also bound the drop from
            above at this confidence over ``resamples`` bootstrap resamples of the samples
            (:func:`drop_bound`); the gate then holds the bound, not only the measured drop.
            0: judge the measured drop. Not computed when a task runner produced the outputs
            (they need not be one per sample; a note says so).
        resamples: bootstrap resamples for ``confidence``.
        graph_opt: onnxruntime graph optimization level for both (as deployed: ``all``).
        threads: intra-op threads (0 = onnxruntime's choice).
        seed: seed of random inputs.
        progress: called with ``(done, total)`` after each sample.
        loaded_metric: ``metric`` already loaded by :func:`load_metric` (so a caller that checked
            it before its own work does not load it twice).
        reference_name, candidate_name: how the report names the two (default: their paths).

    Raises:
        OnnxSlimError: a model cannot be loaded or run, the interfaces differ, the data does not
            fit the models, or the metric fails to load.
    """
    ref_model, cand_model = _model(reference), _model(candidate)
    check_same_interface(ref_model, cand_model)
    specs = input_specs(ref_model)
    notes: list[str] = []
    if data is None:
        count = samples or 8
        feeds, how = runnable_feeds(ref_model, shapes=shapes, samples=count, seed=seed)
        dataset: Dataset = IterableDataset(feeds)
        dataset.source = how
        notes.append(f"no --data: {count} {how} (standard normal floats); task accuracy is not measured")
    else:
        dataset = prepare_dataset(data, specs)
    metric_fn, runner = loaded_metric or (load_metric(metric) if metric else (None, None))
    sessions = [make_session(m, threads=threads, graph_opt=graph_opt) for m in (ref_model, cand_model)]

    def run_ref(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_model(sessions[0], feeds)

    def run_cand(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_model(sessions[1], feeds)

    limit = min(samples, len(dataset)) if samples else len(dataset)
    result = _run_all(run_ref, run_cand, dataset, limit=limit, keep=metric_fn is not None,
                      runner=runner, progress=progress)
    metric_report = None
    if metric_fn is not None:
        ref_value = _as_metric_dict(metric_fn(result.ref_outputs, result.ref_outputs, dataset), metric)
        cand_value = _as_metric_dict(metric_fn(result.cand_outputs, result.ref_outputs, dataset), metric)
        metric_report = MetricReport(metric, ref_value, cand_value)
    bounded = confidence > 0 and max_drop is not None
    accuracy = result.accuracy(dataset.labels, notes, strict=metric_fn is None, confidence=confidence,
                               within=max_drop, resamples=resamples)
    if bounded and metric_report is not None and metric_report.drop <= max_drop:
        if runner is not None:
            notes.append("no confidence bound on the metric's drop: its task runner's results need not be one per "
                         "sample; the measured drop is judged")
        else:
            metric_report = dataclasses.replace(metric_report, bound=_metric_bound(
                metric_fn, metric, metric_report.headline, result, dataset, confidence, resamples))
    gates = {k: v for k, v in (("min_sqnr", min_sqnr), ("min_cosine", min_cosine), ("max_drop", max_drop)) if v is not None}
    if bounded:
        gates["confidence"] = confidence
    outputs = tuple(_finish(name, s) for name, s in result.stats.items())
    failures = _gate_failures(outputs, accuracy, metric_report, gates)
    if max_drop is not None and accuracy is None and metric_report is None:
        failures.append("--max-drop needs labels in the data or a --metric; neither is available")
    if result.count == 0:
        raise DataError(f"{dataset.source}: no samples were run")
    return ValidationReport(
        _name(reference, reference_name, "reference"), _name(candidate, candidate_name, "candidate"), dataset.source, result.count, outputs, accuracy, metric_report,
        gates, tuple(failures), tuple(notes),
    )
