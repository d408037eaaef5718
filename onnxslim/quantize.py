"""``onnxslim quantize``: prepare, calibrate, quantize, verify, then say what it bought.

Static plan, through the one flow (:func:`onnxslim.flow.run_flow`):
:class:`passes.quantize.PrepareForQuantizationPass` (Constant weights to initializers, BatchNorm
folded, opset raised to 13 for per-channel weights) → :class:`onnxslim.calibrate.Calibrate` on the
prepared model (or a ``--table``) → :class:`passes.quantize.QuantizeStaticPass`, each verified
against its input on the calibration samples (or ``--data``). Dynamic plan: the quantize pass
alone. A quantize pass that quantizes nothing is an error (nothing is written): a float copy
named int8 helps nobody.

Before anything is written: which compute nodes onnxruntime actually fused into int8 kernels
(:func:`onnxslim.fusion.fusion_report`), the latency of the input and the result timed side by
side (the verdict says "slower" only beyond the spread of the runs), and with ``--eval`` the task
accuracy of both with the ``--max-drop`` gate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from calibration.datasets import Dataset, IterableDataset
from calibration.table import CalibrationTable
from onnxslim.calibrate import Calibrate
from onnxslim.cpu import detect_cpu
from onnxslim.budget import Trial, bound_of, drop_of, largest_within
from onnxslim.flow import (FlowOptions, LatencyCheck, Outcome, PassReport, Plan, first_samples, open_data, run_flow,
                           write_outcome)
from onnxslim.io import check_output_path, load_model, write_text_atomically
from onnxslim.fusion import FusionReport, fusion_report
from onnxslim.runtime import runnable_feeds
from onnxslim.validate import ValidationReport
from passes.quantize._diagnose import render_error_report
from passes._base import RunContext
from passes._errors import CalibrationError, DataError, UsageError
from passes.quantize import (
    TARGET_SQNR_DB,
    DynamicQuantOptions,
    EqualizePass,
    PrepareForQuantizationPass,
    QuantizeDynamicPass,
    QuantizeStaticPass,
    StaticQuantOptions,
)

__all__ = ["QuantizeSettings", "QuantizeReport", "quantize_file", "default_reduce_range"]

#: ``progress(label, done, total)``: what a long stage has done so far.
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True)
class QuantizeSettings:
    """The user's choices (``None`` = decided here: reduce_range from the CPU)."""

    mode: str = "static"
    method: str = "minmax"
    samples: int | None = None
    per_channel: bool = True
    activations: str = "u8"
    reduce_range: bool | None = None
    exclude_ops: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    latency_runs: int = 30
    report_errors: Path | None = None
    bias_correction: bool = False
    equalize: bool = False
    learned_rounding: bool = False
    target_sqnr: float | None = None  # the fallback's aim per output part (dB; None: TARGET_SQNR_DB); the 5 dB floor holds regardless

    def __post_init__(self) -> None:
        if self.mode not in ("static", "dynamic"):
            raise UsageError(f"--mode must be static or dynamic, not {self.mode!r}")
        if self.report_errors is not None and self.mode != "static":
            raise UsageError("--report-errors applies to static mode (dynamic activations have no fixed ranges)")
        if self.bias_correction and self.mode != "static":
            raise UsageError("--bias-correction applies to static mode (it measures on --calib)")
        if self.target_sqnr is not None and self.mode != "static":
            raise UsageError("--target-sqnr applies to static mode (the fallback measures on --calib)")
        if self.learned_rounding and self.mode != "static":
            raise UsageError("--learned-rounding applies to static mode (it measures on --calib)")
        if self.equalize and self.mode != "static":
            raise UsageError("--equalize applies to static mode (dynamic int8 has per-channel weights and no fixed ranges)")


def default_reduce_range() -> tuple[bool, str]:
    """7-bit weights unless the CPU has VNNI (u8·s8 products saturate in AVX2's 16-bit sums)."""
    cpu = detect_cpu()
    if cpu.has_vnni:
        return False, "reduce-range off: the CPU has VNNI (no u8·s8 saturation)"
    if cpu.has_vnni is None:
        return True, "reduce-range on (7-bit weights): CPU features unknown, assuming no VNNI"
    return True, "reduce-range on (7-bit weights): the CPU has no VNNI, where u8·s8 sums saturate"


@dataclasses.dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize`` did (sizes, passes, verification, latency, evaluation) and what
    onnxruntime fused."""

    base: PassReport
    fusion: FusionReport
    search: tuple[Trial, ...] = ()
    float_units: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether the ``--eval`` gates (if any) held (and so the output was written)."""
        return self.base.passed and self.base.written if self.search else self.base.passed

    @property
    def validation(self) -> ValidationReport | None:
        """The ``--eval`` evaluation, if any."""
        return self.base.validation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = self.base.to_dict() | {"fusion": self.fusion.to_dict()}
        if self.search:
            out["budget_search"] = {"trials": [dataclasses.asdict(t) for t in self.search],
                                    "float_units": list(self.float_units)}
        return out

    def render(self, *, verbose: bool = False) -> str:
        """The pass report, then what onnxruntime fused, then the budget search."""
        lines = [self.base.render(verbose=verbose), f"fusion: {self.fusion.verdict()}"]
        if self.search:
            tried = ", ".join(f"{t.label}: {t.describe()} ({t.seconds:.0f} s)" for t in self.search)
            kept = (f"kept {len(self.float_units)} units float" if self.base.written
                    else "no float set tried met --max-drop, nothing written")
            lines.append(f"budget search ({len(self.search)} evaluations; the eval data chose the float set, so "
                         f"report accuracy on other data): {tried}; {kept}")
            if self.float_units and (verbose or len(self.float_units) <= 12):
                lines.append("  float units: " + ", ".join(self.float_units))
        return "\n".join(lines)


def _table_feeds(model: onnx.ModelProto, table: CalibrationTable, flow: FlowOptions) -> Dataset:
    """With only a table: random inputs with each float input drawn uniformly within its
    calibrated range (standard-normal noise would leave the ranges the scales were made for)."""
    try:
        feeds, how = runnable_feeds(model, shapes=flow.shapes, samples=2)
    except DataError as err:
        raise DataError(f"cannot verify the result: {err}; give real inputs with --data DATA (or --no-verify)") from err
    rng = np.random.default_rng(0)
    for feed in feeds:
        for name, value in feed.items():
            if np.issubdtype(value.dtype, np.floating) and name in table:
                low, high = table.range(name)
                feed[name] = rng.uniform(low, high, value.shape).astype(value.dtype)
    dataset = IterableDataset(feeds)
    dataset.source = how + ", floats uniform within their calibrated ranges"
    return dataset


def _quantize_pass(settings: QuantizeSettings, reduce_range: bool, **static: Any) -> QuantizeDynamicPass | QuantizeStaticPass:
    if settings.mode == "dynamic":
        return QuantizeDynamicPass(options=DynamicQuantOptions(
            per_channel=settings.per_channel, reduce_range=reduce_range,
            exclude_ops=settings.exclude_ops, exclude_nodes=settings.exclude_nodes))
    return QuantizeStaticPass(options=StaticQuantOptions(
        per_channel=settings.per_channel, activations=settings.activations, reduce_range=reduce_range,
        exclude_ops=settings.exclude_ops, exclude_nodes=settings.exclude_nodes,
        bias_correction=settings.bias_correction, choose_ranges=settings.method == "auto",
        learned_rounding=settings.learned_rounding, fallback_target_sqnr=TARGET_SQNR_DB if settings.target_sqnr is None else settings.target_sqnr, **static))


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every plan of one ``quantize`` call shares (a budget search makes several plans)."""

    settings: QuantizeSettings
    calib: str | os.PathLike[str] | Dataset | None
    table: str | os.PathLike[str] | None
    flow: FlowOptions
    notes: tuple[str, ...]
    progress: Progress | None
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def plan(self, quantize: QuantizeDynamicPass | QuantizeStaticPass) -> Callable[[onnx.ModelProto], Plan]:
        """The plan of one quantization of the loaded model."""
        settings, flow = self.settings, self.flow

        def plan(model: onnx.ModelProto) -> Plan:
            data = None
            if self.calib is not None:
                data = open_data(self.calib, model, flag="--calib", limit=settings.samples,
                                 skip_nonfinite=flow.skip_nonfinite)
            common = dict(notes=list(self.notes), must_change=quantize.name, describe=fusion_report)
            if settings.mode == "dynamic":
                return Plan([quantize], verify_data=data, **common)
            if self.table is None:
                tick = None if self.progress is None else functools.partial(self.progress, "calibrating")
                auto = settings.method == "auto"
                steps = [PrepareForQuantizationPass(), *([EqualizePass()] if settings.equalize else []),
                         Calibrate(data, method="percentile" if auto else settings.method, progress=tick,
                                   cache=self.cache, histograms=auto), quantize]
                return Plan(steps, verify_data=data, **common)
            loaded = CalibrationTable.load(self.table, model=model)  # made for this model, as given
            common["notes"].append(f"ranges from {self.table} ({loaded.method})")
            return Plan([PrepareForQuantizationPass(), quantize], RunContext(calibration=loaded),
                        verify_data=_table_feeds(model, loaded, flow) if flow.verify and flow.data is None else None,
                        **common)

        return plan


def quantize_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    settings: QuantizeSettings = QuantizeSettings(),
    calib: str | os.PathLike[str] | Dataset | None = None,
    table: str | os.PathLike[str] | None = None,
    flow: FlowOptions = FlowOptions(),
    progress: Progress | None = None,
) -> QuantizeReport:
    """Quantize the model at ``input_path`` to int8 and write it to ``output_path``.

    In static mode with ``flow.evaluation`` and its ``max_drop``, the result is the one an
    accuracy-budget search picks (:func:`_within_budget`); otherwise the default quantization,
    with the gate (if any) deciding whether it is written. ``progress(label, done, total)``
    reports calibration and the search's trials.

    Raises:
        UsageError: static mode without ``calib`` or ``table``, or both given.
        OnnxSlimError: as :func:`onnxslim.flow.run_flow`; nothing is written then.
    """
    if settings.mode == "static" and calib is None and table is None:
        raise UsageError("static quantization needs calibration data (--calib DATA) or a table (--table TABLE.json)")
    if calib is not None and table is not None:
        raise UsageError("give --calib or --table, not both")
    if settings.equalize and table is not None:
        raise UsageError("--equalize changes the weights the table's ranges were measured on: give --calib instead of --table")
    reduce_range, why = (settings.reduce_range, "reduce-range as requested") if settings.reduce_range is not None \
        else default_reduce_range()
    flow = dataclasses.replace(flow, latency_runs=settings.latency_runs,
                               names={"--exclude-node": settings.exclude_nodes}, ops={"--exclude-op": settings.exclude_ops})
    job = _Job(settings, calib, table, flow, (why,), progress)
    if settings.report_errors is not None:
        check_output_path(Path(settings.report_errors))  # before any work
    evaluation = flow.evaluation
    if settings.mode == "static" and evaluation is not None and evaluation.max_drop is not None:
        return _within_budget(input_path, output_path, job, reduce_range)
    diagnose = {"report_errors": True} if settings.report_errors is not None else {}
    outcome = run_flow(input_path, output_path, job.plan(_quantize_pass(settings, reduce_range, **diagnose)), flow)
    _write_error_report(outcome, settings.report_errors)
    return QuantizeReport(outcome.report, outcome.extra)


def _error_report(outcome: Outcome) -> dict | None:
    """The static pass's error report in ``outcome`` (``report_errors``), if it built one."""
    step = next((s for s in outcome.report.pipeline.steps if s.name == QuantizeStaticPass.name), None)
    return getattr(step.details, "errors", None) if step is not None else None


def _write_error_report(outcome: Outcome, path: Path | None) -> None:
    """Write the error report (JSON at ``path``, Markdown beside it) when one was asked for.

    It is written whether or not a gate let the model be written: it says where int8 loses.
    """
    if path is None:
        return
    errors = _error_report(outcome)
    if errors is None:
        raise CalibrationError("--report-errors needs calibration samples (--calib): the table alone has none")
    path = Path(path)
    markdown = path.with_suffix(".md") if path.suffix == ".json" else path.with_name(path.name + ".md")
    write_text_atomically(path, json.dumps(errors, indent=2) + "\n")
    write_text_atomically(markdown, render_error_report(errors))


#: SQNR losses within this many dB count as equal when ordering units for the budget search
LOSS_BUCKET_DB = 1.0


def return_order(sensitivity: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order the budget search returns units to float: the most damaging first; among units
    whose losses fall in the same ``LOSS_BUCKET_DB`` band, the cheapest in float first, so a
    unit whose float version costs the most time is the last to go back (ties keep the ranking's
    order)."""
    return sorted(sensitivity, key=lambda u: (-math.floor(u["loss_db"] / LOSS_BUCKET_DB), u.get("float_ms", 0.0)))


def _by_effect_alone(outcome: Outcome) -> list[dict[str, Any]]:
    """The first trial's units with ``loss_db`` = how far each alone in int8 lowers the worst
    output part's SQNR below the cap (the error report's ``alone_db``), their float time kept.

    A unit's own SQNR loss misses units that break a task through a nonlinear output: YOLOv8n's
    class-logit Conv loses nothing by its own measure (its logits are large) yet alone in int8
    takes the class scores to 11 dB and cost 3.9 mAP points; ranked by its own loss it went back
    to float last.
    """
    sensitivity = outcome.report.step_stats(QuantizeStaticPass.name).get("sensitivity", [])
    errors = _error_report(outcome)
    alone = {tuple(u["units"]): u.get("alone_db") for u in (errors or {}).get("units", [])}
    out = []
    for entry in sensitivity:
        key = tuple(entry["units"])
        if key in alone:  # None: alone in int8 it changes no output measurably
            db = _ALONE_CAP_DB if alone[key] is None else min(alone[key], _ALONE_CAP_DB)
            entry = {**entry, "loss_db": round(_ALONE_CAP_DB - db, 2)}
        out.append(entry)
    return out


_ALONE_CAP_DB = 80.0


def _within_budget(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], job: _Job,
                   reduce_range: bool) -> QuantizeReport:
    """The most units in int8 whose metric drop stays within ``max_drop`` on the eval data.

    1. Quantize every unit the policy allows (no SQNR fallback: the metric judges) and rank the
       units by how far each, alone in int8, lowers the output parts' SQNR on the calibration
       samples (the error report's "alone" measure, one quantization per unit;
       :func:`_by_effect_alone`), cheaper float units first among equal effects
       (:func:`return_order`); evaluate. Within budget: done, one evaluation.
    2. Else bisect the number of the most damaging units returned to float
       (:func:`onnxslim.budget.largest_within` over the count left in int8): about
       ``log2(units)`` evaluations, calibration collected once and reused.
    3. Time the chosen model against the input and write it; when no count held, write nothing.

    The eval data chose the float set, so its drop is optimistic: report accuracy on other data.
    """
    check_output_path(Path(output_path), Path(input_path))  # before any work
    trial_flow = dataclasses.replace(job.flow, latency_runs=0)

    def run(keep: tuple[str, ...], rank: bool) -> Outcome:
        quantize = _quantize_pass(job.settings, reduce_range, fallback_min_sqnr=None, keep_float=keep, rank_units=rank,
                                  report_errors=rank)
        return run_flow(input_path, None, job.plan(quantize), trial_flow)

    started = time.perf_counter()
    first = run((), True)
    _write_error_report(first, job.settings.report_errors)  # where the all-int8 model loses
    first_seconds = time.perf_counter() - started
    ranking = [tuple(u["units"]) for u in return_order(_by_effect_alone(first))]
    total = len(ranking)
    outcomes: dict[int, Outcome] = {total: first}

    def floats(in_int8: float) -> tuple[str, ...]:
        return tuple(label for names in ranking[: total - int(in_int8)] for label in names)

    def evaluate(in_int8: float) -> Outcome:
        if int(in_int8) not in outcomes:
            outcomes[int(in_int8)] = run(floats(in_int8), False)
        return outcomes[int(in_int8)]

    def said(trial: Trial, done: int, most: int) -> None:
        if job.progress is not None:
            job.progress(f"budget: {trial.label}, {trial.describe()}", done, most)

    search = largest_within(evaluate, lambda o: (drop_of(o.report.validation), o.report.passed), total,
                            steps=max(1, math.ceil(math.log2(total + 1))) + 1, integer=True,
                            label=lambda k: f"{total - int(k)} of {total} units float", progress=said,
                            bound=lambda o: bound_of(o.report.validation))
    trials = (dataclasses.replace(search.trials[0], seconds=first_seconds), *search.trials[1:])  # run before the search
    if search.best is None:
        last = outcomes[int(trials[-1].setting)]
        return QuantizeReport(last.report, last.extra, trials, ())
    best = search.best
    latency = None
    if job.settings.latency_runs > 0:  # 0: not timed, as everywhere in the flow
        original = load_model(input_path)
        feed = first_samples(open_data(job.calib, original, flag="--calib", limit=1), 1)[0] if job.calib is not None \
            else runnable_feeds(original, shapes=job.flow.shapes, samples=1)[0][0]
        latency = LatencyCheck.measure([original, best.model], feed, runs=job.settings.latency_runs)
    written = write_outcome(dataclasses.replace(best, report=dataclasses.replace(best.report, latency=latency)), output_path)
    return QuantizeReport(written.report, best.extra, trials, floats(search.best_setting))
