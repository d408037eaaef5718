"""Static int8 quantization in QDQ form, laid out so onnxruntime's CPU fusions fire.

Rewrite (per node unit chosen by the rules table and the accuracy policy)::

    y = op(x, W, b)   ->   y' = DQ(Q(op(DQ(Q(x)), DQ(W_q), DQ(b_q))))

with ``x`` u8 asymmetric (or s8 symmetric) from its calibrated range, ``W_q`` int8 symmetric per
channel (7-bit with ``reduce_range``), ``b_q`` int32 with scale ``s_x·s_w`` and zero point 0.
One Q/DQ pair per activation tensor; data-movement ops share their input's scale; Relu/Clip
after a unit are absorbed by the u8 clamp; graph outputs stay float (no fused node produces one).

Modules: ``_rules`` (the op table), ``_policy`` (what stays float for accuracy), ``_plan``
(units and scales), ``_emit`` (graph rewrite), ``_fallback`` (data-driven fallback),
``_prepare`` (constant/BN folding, opset upgrade; run it before calibrating).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx

from calibration.collect import observed_tensors
from passes._base import VERIFY_SAMPLES, Pass, PassResult, RunContext, Tolerance
from passes._errors import PreconditionError
from passes._graph import GraphIndex, NameAllocator, opset_version
from passes.quantize._correct import apply_bias_shifts, bias_targets, measure_shifts
from passes.quantize._emit import emit
from passes.quantize._diagnose import error_report
from passes.quantize._fallback import UnitDetails, fidelity_problem, node_times, quantize_with_fallback, rank_units
from passes.quantize._plan import make_plan
from passes.quantize._ranges import choose_ranges
from passes.quantize._rounding import learned_weights, rounding_targets
from passes.quantize._rules import node_label
from passes.quantize._policy import PolicyDecision, PolicyOptions, decide

__all__ = ["StaticQuantOptions", "QuantizeStaticPass", "quantize_static", "TARGET_SQNR_DB"]

log = logging.getLogger(__name__)

#: the fallback's default aim per output part (``StaticQuantOptions.fallback_target_sqnr``)
TARGET_SQNR_DB = 15.0


@dataclasses.dataclass(frozen=True)
class StaticQuantOptions:
    """What :class:`QuantizeStaticPass` does; each field is one ``onnxslim quantize`` flag.

    Attributes:
        per_channel: per-channel weights (``--per-channel/--per-tensor``); needs opset >= 13.
        activations: ``"u8"`` (asymmetric, default) or ``"s8"`` (symmetric) (``--activations``).
        reduce_range: 7-bit weights, for CPUs without VNNI (``--reduce-range``); the app decides
            the default from the CPU.
        exclude_ops: op types never quantized (``--exclude-op``).
        exclude_nodes: node names never quantized (``--exclude-node``).
        policy: the default accuracy policy (:mod:`passes.quantize._policy`).
        fallback_min_sqnr: with data in the context (``RunContext.dataset``), fall back the units
            that lose the most SQNR to float until every output part (see
            :mod:`passes.quantize._fallback`) reaches this many dB vs float; ``None`` disables it.
            5 dB is a guard against a broken model, not a tuning target: output SQNR does not
            predict task metrics well (measured 2026-11-28 without fallback, every target held:
            ppocr-det 6.7 dB at F1 +0.4 points, ppocr-rec 13.1 dB at -0.5 points, YOLOv8n scores
            14.8 dB at mAP 0.965 — and Percentile ranges gave it 9.5 dB at mAP 0.985, Silero
            16.3 dB, ppocr-cls 29 dB, LeNet 44 dB), while broken int8 models measured below it
            (onnxruntime's: YOLOv8n scores 0.2 dB at mAP 0.057, ppocr-rec 3.7 dB at 0.13). The
            former 25 dB floated up to a quarter of the units (YOLOv8n's early convs: 1.4x the
            latency of onnxruntime's int8) and on ppocr-det lowered F1.
        fallback_target_sqnr: what the fallback aims at, while the verification holds only
            ``fallback_min_sqnr``: it returns units to float until every output part reaches
            this, or its unit budget is spent, and then returns the round closest to it (so a
            target int8 cannot reach costs latency, never a refusal). 15 dB was measured on data
            nothing was tuned on (seeds 1 and 2, 2026-12-03; benchmarks/README.md "Unseen
            data"): without it YOLOv8n's all-int8 class scores sat at 12 and 8 dB (mAP vs fp32
            0.93, 0.94) and PicoDet-layout's lost 8-14 mAP points; aiming at 15 dB brought them to
            0.96-1.00 and 0.98 at 0.7-0.84x fp32 latency, and ppocr-det (7 dB all-int8, no metric
            loss) stays within 0.1 point at 0.55-0.69x. Models already above it (ppocr-cls,
            Silero, LeNet, the doc-orientation classifier) are unchanged.
        fallback_samples: samples of the context's dataset used by the fallback.
        fallback_max_fraction: at most this fraction of the units may fall back.
        keep_float: unit labels (node name, or ``op:output``) kept float from the start (an
            accuracy-budget search chooses them).
        rank_units: with data in the context, measure on its first ``fallback_samples`` samples
            the SQNR each unit loses and list every unit, most damaging first, in the stats
            (``sensitivity``, with each unit's measured float time ``float_ms``): what an
            accuracy-budget search orders the units by.
        report_errors: with data in the context, build the per-tensor and per-unit error report
            (:mod:`passes.quantize._diagnose`, one extra quantization per unit) into the
            result's ``details.errors``.
        bias_correction: with data in the context, measure each weighted unit's mean output
            shift on ``correction_samples`` samples and add it to the unit's bias
            (:mod:`passes.quantize._correct`; ``--bias-correction``).
        choose_ranges: with data in the context and a table holding histograms, choose each
            weighted unit's input range among minmax/percentile/mse by the least error of that
            unit's output (:mod:`passes.quantize._ranges`; ``--method auto``).
        learned_rounding: with data in the context, round each weighted unit's weights to keep
            its output close on the calibration samples (:mod:`passes.quantize._rounding`;
            ``--learned-rounding``).
        correction_samples: samples of the context's dataset the corrections measure on.
    """

    per_channel: bool = True
    activations: str = "u8"
    reduce_range: bool = False
    exclude_ops: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    policy: PolicyOptions = PolicyOptions()
    fallback_min_sqnr: float | None = 5.0
    fallback_target_sqnr: float | None = TARGET_SQNR_DB
    fallback_samples: int = VERIFY_SAMPLES
    fallback_max_fraction: float = 0.25
    keep_float: tuple[str, ...] = ()
    rank_units: bool = False
    report_errors: bool = False
    bias_correction: bool = False
    choose_ranges: bool = False
    learned_rounding: bool = False
    correction_samples: int = 32

    def __post_init__(self) -> None:
        if self.activations not in ("u8", "s8"):
            raise ValueError(f"activations must be 'u8' or 's8', got {self.activations!r}")
        object.__setattr__(self, "exclude_ops", tuple(self.exclude_ops))
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))


def quantize_static(model: onnx.ModelProto, table: Any, options: StaticQuantOptions,
                    *, extra_float: frozenset[str] = frozenset(),
                    bias_shift: Mapping[str, np.ndarray] | None = None,
                    weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Quantize a copy of ``model`` with ranges from ``table``; returns ``(model, stats)``.

    Args:
        model: the prepared float model (not modified).
        table: a :class:`calibration.table.CalibrationTable` of that model.
        options: what to do.
        extra_float: node labels (name, or ``op:output``) kept float by the data-driven fallback.
        bias_shift: node label -> a per-channel shift added to that unit's float bias before
            quantizing (bias correction, :mod:`passes.quantize._correct`).
        weights: node label -> ``(weight on its int8 grid, grid scale)`` replacing that unit's
            weight (learned rounding, :mod:`passes.quantize._rounding`).

    Raises:
        CalibrationError: ``table`` has no range for a float activation a quantized node needs
            (an empty table, one made for another graph, or a tensor the data never gave a
            finite value).
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    graph = work.graph
    opset = opset_version(work) or 0
    if opset < 10:
        raise PreconditionError(f"QuantizeLinear needs opset >= 10, the model has {opset}")
    per_channel = options.per_channel and opset >= 13
    corrected = apply_bias_shifts(graph, bias_shift or {})
    weight_scales = _set_weights(graph, weights or {})
    index = GraphIndex.build(graph)
    decision = decide(graph, index, table, options.policy) if options.policy else PolicyDecision()
    opts = options
    plan = make_plan(graph, index, table, opts, decision, fallback=extra_float, expected=observed_tensors(work))
    unit_io = [(node_label(u.node), list(u.acts), u.output) for u in plan.units]
    # a unit whose output stays float is judged by the float tensor it writes (same name in both)
    unit_tensors = {node_label(u.node): u.output or u.node.output[0] for u in plan.units}
    bytes_before = work.ByteSize()
    emitted = (emit(graph, index, plan, opts, per_channel=per_channel, weight_scales=weight_scales) if plan.units
               else collections.Counter())
    raw_outputs = {label: u.node.output[0] for (label, _, _), u in zip(unit_io, plan.units)}
    stats: dict[str, Any] = {
        "nodes_quantized": len(plan.units),
        "bytes_before": bytes_before,
        "bytes_after": work.ByteSize(),
        "weights": "per-channel" if per_channel else "per-tensor",
        "reduce_range": bool(options.reduce_range),
        "activations": options.activations,
    }
    if options.per_channel and not per_channel:
        stats["note: per-tensor weights"] = f"opset {opset} < 13"
    stats.update(emitted)
    if corrected:
        stats["biases corrected"] = corrected
    if weight_scales:
        stats["weights rounded by data"] = len(weight_scales)
    for op, n in sorted(collections.Counter(u.node.op_type for u in plan.units).items()):
        stats[f"quantized: {op}"] = n
    for reason, n in sorted(plan.skipped.items()):
        stats[f"skipped: {reason}"] = n
    stats["float_nodes"] = dict(plan.float_nodes)
    stats["quantized_nodes"] = [name for name, _, _ in unit_io]
    stats["unit_io"] = unit_io
    stats["unit_tensors"] = unit_tensors
    stats["raw_outputs"] = raw_outputs
    stats["output_parts"] = list(decision.output_parts) or [o.name for o in graph.output]
    stats["unit_groups"] = [list(g) for g in decision.groups]
    for name, reason in plan.float_nodes.items():
        log.debug("kept float: %s (%s)", name, reason)
    return (work if plan.units else model), stats


def _set_weights(graph: onnx.GraphProto, weights: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Give each labelled node its new weight (a fresh initializer); returns initializer name ->
    the scale its values were chosen on."""
    if not weights:
        return {}
    names = NameAllocator(graph)
    scales = {}
    for node in graph.node:
        given = weights.get(node_label(node))
        if given is None or len(node.input) < 2:
            continue
        name = names.fresh(f"{node.input[1]}_rounded")
        graph.initializer.append(onnx.numpy_helper.from_array(given[0], name))
        node.input[1] = name
        scales[name] = given[1]
    return scales


class QuantizeStaticPass(Pass):
    """Static QDQ int8 quantization from a calibration table (``ctx.calibration``).

    Promise (:meth:`verify`): every output part reaches ``fallback_min_sqnr`` dB against the
    float model, the same measure on the same samples the fallback uses, so the fallback's result
    always passes. ``tolerance`` (cosine >= 0.98 per output) applies only without a floor. With a
    task-metric gate (``--eval --max-drop``) the metric judges instead.
    """

    name: ClassVar[str] = "quantize-static"
    tolerance: ClassVar[Tolerance] = Tolerance(min_cosine=0.98)

    def __init__(self, options: StaticQuantOptions | None = None) -> None:
        self.options = options or StaticQuantOptions()

    def __repr__(self) -> str:
        return f"QuantizeStaticPass({self.options})"

    def check_input(self, model: onnx.ModelProto) -> None:
        """Refuse models already quantized (QDQ nodes present)."""
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
            raise PreconditionError("the model already has QuantizeLinear/DequantizeLinear nodes")

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Quantize ``model``; needs ``ctx.calibration`` (a CalibrationTable of this model).

        Raises:
            PreconditionError: no calibration table.
            CalibrationError: the table has no range for a float activation a quantized node
                needs (see :func:`quantize_static`): an error, never a silent float node.
        """
        if ctx.calibration is None:
            raise PreconditionError("static quantization needs a calibration table (--calib or --table)")
        if any(n.op_type == "DequantizeLinear" for n in model.graph.node):
            return PassResult(model, False, {"skipped: already quantized": 1})
        opts = self.options
        chosen: dict[str, Any] = {}
        qs = quantize_static
        if opts.learned_rounding and ctx.dataset is not None:
            qs, chosen = self._rounded(model, ctx)
        if opts.choose_ranges and ctx.dataset is not None:
            table, ranges = self._chosen_ranges(model, ctx, qs)
            ctx = dataclasses.replace(ctx, calibration=table)
            chosen.update(ranges)
        if opts.fallback_min_sqnr is not None and ctx.dataset is not None:
            out, stats, details = quantize_with_fallback(model, ctx.calibration, opts, ctx.dataset, quantize=qs)
        else:
            out, stats = qs(model, ctx.calibration, opts, extra_float=frozenset(opts.keep_float))
            details = UnitDetails.from_stats(stats)
        if opts.bias_correction and ctx.dataset is not None and stats["nodes_quantized"]:
            out, stats, details = self._bias_corrected(model, ctx, out, stats, details, qs)
        stats.update(chosen)
        samples = [] if ctx.dataset is None else list(itertools.islice(ctx.dataset, opts.fallback_samples))
        if opts.report_errors and samples and stats["nodes_quantized"]:
            alone = dataclasses.replace(opts, fallback_min_sqnr=None, keep_float=())

            def only(floats: frozenset[str]) -> onnx.ModelProto:
                return qs(model, ctx.calibration, alone, extra_float=floats)[0]

            details = dataclasses.replace(details, errors=error_report(model, out, details, samples, alone=only))
        if opts.rank_units and samples and stats["nodes_quantized"]:
            times = node_times(model, samples[0])
            if details.errors is not None:  # the report measured the same losses on the same samples
                ranked = sorted(((r["units"], r["loss_db"]) for r in details.errors["units"] if r["loss_db"] is not None),
                                key=lambda r: (-r[1], r[0]))
            else:
                ranked = rank_units(model, out, details, samples)
            stats["sensitivity"] = [{"units": names, "loss_db": round(loss, 2),
                                     "float_ms": round(sum(times.get(n, 0.0) for n in names), 4)}
                                    for names, loss in ranked]
        return PassResult(out, stats["nodes_quantized"] > 0, stats, details)

    def _samples(self, ctx: RunContext) -> list[dict[str, np.ndarray]]:
        return [{k: np.asarray(v) for k, v in s.items()}
                for s in itertools.islice(ctx.dataset, max(self.options.correction_samples, 1))]

    def _rounded(self, model: onnx.ModelProto, ctx: RunContext) -> tuple[Any, dict[str, Any]]:
        """``quantize_static`` with every weighted unit's weights rounded by the calibration data
        (:mod:`passes.quantize._rounding`), and what it did."""
        opts = self.options
        per_channel = opts.per_channel and (opset_version(model) or 0) >= 13
        if ctx.progress is not None:
            ctx.progress("rounding weights", 0, 1)
        labels = [node_label(n) for n in model.graph.node]
        samples = self._samples(ctx)
        learned = learned_weights(model, rounding_targets(model.graph, labels), samples,
                                  per_channel=per_channel, reduce_range=opts.reduce_range)
        return (functools.partial(quantize_static, weights=learned),
                {"learned rounding: layers": f"{len(learned)} on {len(samples)} samples"})

    def _chosen_ranges(self, model: onnx.ModelProto, ctx: RunContext, qs=quantize_static) -> tuple[Any, dict[str, Any]]:
        """The context's table with each weighted unit's input range chosen by its reader's
        error (one plain quantization supplies the units and int8 weights)."""
        opts = self.options
        plain = dataclasses.replace(opts, fallback_min_sqnr=None)
        quant, stats = qs(model, ctx.calibration, plain, extra_float=frozenset(opts.keep_float))
        if not stats["nodes_quantized"]:
            return ctx.calibration, {}
        if ctx.progress is not None:
            ctx.progress("choosing ranges", 0, 1)
        return choose_ranges(model, quant, UnitDetails.from_stats(stats), ctx.calibration, self._samples(ctx),
                             activations=opts.activations)

    def _bias_corrected(self, model: onnx.ModelProto, ctx: RunContext, out: onnx.ModelProto, stats: dict[str, Any],
                        details: UnitDetails, qs=quantize_static) -> tuple[onnx.ModelProto, dict[str, Any], UnitDetails]:
        """``out`` again with bias correction (same float units); the uncorrected result when
        correcting would miss the fidelity floor it met."""
        opts = self.options
        floats = frozenset(stats.get("fallback: nodes kept float", ())) | frozenset(opts.keep_float)
        samples = self._samples(ctx)
        targets = bias_targets(model.graph, [label for label, _, _ in details.unit_io])
        if ctx.progress is not None:
            ctx.progress("bias correction", 0, 1)
        shifts = measure_shifts(model, out, targets, dict(details.raw_outputs), samples)
        current, new_stats = qs(model, ctx.calibration, opts, extra_float=floats, bias_shift=shifts)
        new_details = UnitDetails.from_stats(new_stats)
        floor = opts.fallback_min_sqnr
        if floor is not None:
            check = samples[:opts.fallback_samples]
            if (fidelity_problem(model, current, new_details, check, floor) is not None
                    and fidelity_problem(model, out, details, check, floor) is None):
                stats["bias correction"] = f"not kept: the corrected model misses the {floor:g} dB floor"
                return out, stats, details
        new_stats.update({k: v for k, v in stats.items() if k.startswith("fallback")})
        new_stats["bias correction: units"] = f"{len(shifts)} of {len(details.unit_io)} on {len(samples)} samples"
        return current, new_stats, new_details

    def verify(self, before: onnx.ModelProto, after: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
               result: PassResult) -> str | None:
        """The fallback's own criterion on ``feeds``: every output part reaches
        ``fallback_min_sqnr`` dB (so what the fallback returns, measured on the same first
        samples of the same data, passes); without a floor, the cosine tolerance."""
        floor = self.options.fallback_min_sqnr
        if floor is None or not isinstance(result.details, UnitDetails):
            return NotImplemented
        return fidelity_problem(before, after, result.details, list(feeds), floor)
