"""The pruning flow: prepare, analyse, score, plan, apply, repair, count.

1. A copy of the model gets its ``Constant``-node tensors as initializers (PaddleOCR exports keep
   weights in Constant nodes), so that every weight is a sliceable parameter.
2. Shapes are inferred (input dims fixed from ``input_shapes`` or the first calibration sample),
   the groups are built (:func:`~passes.prune._groups.build_groups`) and the prunable ones
   scored; with calibration data, one run over it measures ``mean(x)`` and ``mean|x|`` of every
   consumer input.
3. The plan (channels to remove per group) is applied; with calibration data the consumers'
   biases are mean-compensated and, when ``reconstruct`` is on, their weights re-fitted.
4. Parameters and MACs are recounted on the result.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from passes._base import VERIFY_SAMPLES
from passes._graph import topological_sort
from passes._errors import PreconditionError
from passes.prune._allocate import Allocation, allocate
from passes.prune._apply import apply_removal
from passes.prune._collect import Samples, TensorRunner, channel_stats, pick_batch
from passes.prune._context import Dims, GraphContext, infer_dims
from passes.prune._cost import count_params, group_cost, node_macs, total_macs
from passes.prune._groups import GroupSet, build_groups
from passes.prune._importance import group_scores, plan_removal
from passes.prune._options import PruneOptions
from passes.prune._reconstruct import RefitOptions, compensate_means, refit_layers
from passes.prune._sensitivity import MaskedModel, Meter, channel_moments

#: The SQNR reported for outputs that did not change at all.
SQNR_CAP = 200.0

#: ``progress(label, done, total)``: what a long stage has done so far.
Progress = Callable[[str, int, int], None]

__all__ = ["Plan", "lift_constants", "plan_pruning", "prune_model"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything decided before the model is changed.

    Attributes:
        model: the prepared copy (Constant tensors lifted to initializers).
        groups: the channel groups.
        scores: group id -> importance per channel (prunable groups).
        removal: group id -> channels to remove (prunable groups; may be empty).
        notes: counters of fallbacks (e.g. a criterion that fell back to L1).
        dims: inferred dims of the prepared model.
        macs: MACs per node of the prepared model.
        means: ``(tensor, axis)`` -> (mean, mean |x|) of consumer inputs, with calibration data.
        samples: the calibration samples (batched when the model allows), or ``None``.
        allocation: the allocation used (``global``, ``uniform`` or ``sensitivity``).
        allocated: with ``sensitivity``, the chosen counts and what they predict.
        criterion: the importance criterion used.
    """

    model: onnx.ModelProto
    groups: GroupSet
    scores: Mapping[int, np.ndarray]
    removal: Mapping[int, np.ndarray]
    notes: Counter[str]
    dims: Mapping[str, Dims]
    macs: Mapping[int, int | None]
    means: Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray]]
    samples: Samples | None
    allocation: str = "global"
    allocated: Allocation | None = None
    criterion: str = "l1"


def lift_constants(model: onnx.ModelProto) -> int:
    """Turn the main graph's ``Constant`` tensors into initializers of the same name (in place)."""
    if model.ir_version and model.ir_version < 4:
        return 0  # initializers must also be graph inputs before IR 4
    outputs = {v.name for v in model.graph.output}
    lifted, kept = 0, []
    for node in model.graph.node:
        value = _constant_tensor(node) if node.output and node.output[0] not in outputs else None
        if value is None:
            kept.append(node)
            continue
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        lifted += 1
    if lifted:
        names = {t.name for t in model.graph.initializer}
        stale = [v for v in model.graph.value_info if v.name not in names]
        del model.graph.value_info[:]
        model.graph.value_info.extend(stale)
        copies = [onnx.NodeProto() for _ in kept]
        for dst, src in zip(copies, kept):
            dst.CopyFrom(src)
        del model.graph.node[:]
        model.graph.node.extend(copies)
    return lifted


def _constant_tensor(node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    values = {
        "value": lambda: numpy_helper.to_array(attr.t) if attr.t.data_type != onnx.TensorProto.STRING else None,
        "value_float": lambda: np.array(attr.f, np.float32),
        "value_floats": lambda: np.array(list(attr.floats), np.float32),
        "value_int": lambda: np.array(attr.i, np.int64),
        "value_ints": lambda: np.array(list(attr.ints), np.int64),
    }
    return values[attr.name]() if attr.name in values else None


def _input_shapes(model: onnx.ModelProto, options: PruneOptions, samples: Samples | None) -> dict[str, tuple[int, ...]]:
    """``input_shapes``, else the first sample's shapes, else static shapes with a dynamic batch of 1."""
    if options.input_shapes:
        return dict(options.input_shapes)
    if samples is not None:
        return {k: tuple(np.asarray(v).shape) for k, v in samples.first().items()}
    shapes = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        sizes = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        if sizes and None not in sizes[1:]:
            shapes[value.name] = (sizes[0] or 1, *sizes[1:])
    return shapes


def _arrays(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    wanted = set(names)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in wanted}


def plan_pruning(model: onnx.ModelProto, options: PruneOptions, samples: Samples | None, *,
                 progress: Progress | None = None) -> Plan:
    """Prepare a copy of ``model``, build and score its groups and choose the channels to remove."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    lift_constants(work)
    dims = infer_dims(work, _input_shapes(work, options, samples))
    if samples is not None:
        samples = pick_batch(work, samples)
    groups = build_groups(work, GraphContext(work, dims), exclude=options.exclude_nodes)
    prunable = [g for g in groups.groups if g.prunable]
    wanted = sorted({(c.data.tensor, c.data.axis) for g in prunable for c in g.consumers if c.kind != "Depthwise"})
    means = channel_stats(work, samples, wanted) if samples is not None else {}
    arrays = _arrays(work, {p.initializer for g in prunable for p in g.params})
    notes: Counter[str] = Counter()
    scores = {}
    criterion = options.criterion_for(samples is not None)
    for g in prunable:
        scores[g.id], note = group_scores(g, arrays, criterion, {k: v[1] for k, v in means.items()})
        if note:
            notes[note] += 1
    macs = node_macs(work, dims)
    allocation, allocated = options.allocation_for(samples is not None), None
    if allocation == "sensitivity":
        if samples is None:
            raise PreconditionError("the sensitivity allocation needs calibration data (--calib)")
        allocated = _by_sensitivity(work, groups, scores, means, samples, macs, options, progress)
        removal = {g.id: np.sort(np.argsort(scores[g.id], kind="stable")[: g.size - allocated.keep.get(g.id, g.size)])
                   for g in prunable}
    else:
        removal = plan_removal(groups.groups, scores, ratio=options.ratio, per_layer=allocation == "uniform",
                               round_to=options.round_to, max_ratio=options.max_ratio)
    return Plan(work, groups, scores, removal, notes, dims, macs, means, samples, allocation, allocated, criterion)


def _by_sensitivity(
    work: onnx.ModelProto, groups: GroupSet, scores: Mapping[int, np.ndarray],
    means: Mapping[tuple[str, int], tuple[np.ndarray, np.ndarray]], samples: Samples,
    macs: Mapping[int, int | None], options: PruneOptions, progress: Progress | None = None,
) -> Allocation:
    """Probe every prunable group on a few samples, then spend the MAC budget where it hurts least."""
    if not any(macs.values()):
        raise PreconditionError("the sensitivity allocation needs MACs: no Conv/Gemm/MatMul with known shapes")
    prunable = [g for g in groups.groups if g.prunable and g.id in scores]
    probe = samples.head(options.sensitivity_samples)
    fill = options.sensitivity_fill or ("mean" if options.reconstruct is False else "linear")
    if fill == "mean":  # probe the repair that will be made: mean compensation only
        moments = {k: (v[0], None) for k, v in means.items()}
    else:
        wanted = sorted({(c.data.tensor, c.data.axis) for g in prunable for c in g.consumers if c.kind != "Depthwise"})
        moments = channel_moments(work, samples.head(max(16, options.sensitivity_samples)), wanted, seed=options.seed)
    masked = MaskedModel(work, prunable, moments, fill=fill)
    orders = {g.id: np.argsort(scores[g.id], kind="stable") for g in prunable if masked.covers(g)}
    meter = Meter(masked, probe, progress=progress, expected=len(orders) * options.sensitivity_levels)
    return allocate(prunable, orders, macs, meter, ratio=options.ratio, round_to=options.round_to,
                    max_ratio=options.max_ratio, levels=options.sensitivity_levels)


def measured_sqnr(reference: onnx.ModelProto, pruned: onnx.ModelProto, samples: Samples) -> float | None:
    """The pruned model's fidelity: the SQNR (dB) of its outputs against the unpruned model's,
    each float output's energies summed over ``samples``, the worst output counting; ``None``
    when no output is float."""
    outputs = [o.name for o in reference.graph.output]
    ref_run, got_run = TensorRunner(reference, outputs), TensorRunner(pruned, outputs)
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for sample in samples.singles():
        ref, got = ref_run.run(sample), got_run.run(sample)
        for name in outputs:
            r = np.asarray(ref[name])
            if r.dtype.kind != "f":
                continue
            r = r.astype(np.float64)
            signal[name] = signal.get(name, 0.0) + float(np.sum(r * r))
            noise[name] = noise.get(name, 0.0) + float(np.sum((r - np.asarray(got[name], np.float64)) ** 2))
    if not signal:
        return None
    worst = min(10 * math.log10(max(signal[n], 1e-30) / noise[n]) if noise[n] > 0 else SQNR_CAP for n in signal)
    return round(min(worst, SQNR_CAP), 2)


def _why_nothing(plan: Plan) -> dict[str, int]:
    """``skipped: <reason>`` counts for a plan that removes nothing: why each group kept its channels."""
    reasons: dict[str, int] = {}
    for g in plan.groups.groups:
        reason = f"group frozen: {g.frozen}" if g.frozen else "ratio too small for --round-to"
        reasons[f"skipped: {reason}"] = reasons.get(f"skipped: {reason}", 0) + 1
    return reasons or {"skipped: no channel groups (no Conv/Gemm/MatMul with constant weights)": 1}


def _group_rows(plan: Plan) -> list[dict[str, Any]]:
    numel = {t.name: int(np.prod(t.dims)) for t in plan.model.graph.initializer}
    rows = []
    for g in plan.groups.groups:
        if not g.prunable:
            continue
        units = plan.removal.get(g.id, np.zeros(0, np.int64))
        rows.append({"id": g.id, "channels_before": g.size, "channels_after": g.size - len(units),
                     "producers": g.nodes("out"), "consumers": g.nodes("in"),
                     **group_cost(g, units, numel, plan.macs)})
    return rows


def _base_stats(plan: Plan) -> dict[str, Any]:
    groups = plan.groups.groups
    prunable = [g for g in groups if g.prunable]
    removed = sum(len(plan.removal.get(g.id, ())) for g in prunable)
    stats: dict[str, Any] = {
        "groups_total": len(groups),
        "groups_prunable": len(prunable),
        "groups_frozen": len(groups) - len(prunable),
        "groups_pruned": sum(1 for g in prunable if len(plan.removal.get(g.id, ()))),
        "channels_before": sum(g.size for g in prunable),
        "channels_after": sum(g.size for g in prunable) - removed,
        "channels_removed": removed,
        "criterion": plan.criterion,
        "allocation": plan.allocation,
    }
    if plan.allocated is not None:
        noise = plan.allocated.noise
        stats["probe_sqnr_db"] = round(10.0 * np.log10(1.0 / noise), 2) if noise > 0 else None
        stats["sensitivity_probes"] = plan.allocated.probes
        stats["sensitivity_budget_met"] = plan.allocated.budget_met
    stats.update({f"frozen: {k}": v for k, v in sorted(Counter(g.category for g in groups if not g.prunable).items())})
    stats.update({f"note: {k}": v for k, v in sorted(plan.notes.items())})
    return stats


def _repair(
    work: onnx.ModelProto, reference: onnx.ModelProto, plan: Plan, kept: Mapping[Any, np.ndarray],
    consumers: list, originals: Mapping[str, np.ndarray], options: PruneOptions, progress: Progress | None = None,
) -> dict[str, Any]:
    """Mean compensation and (unless switched off) the re-fit, in place; returns their stats."""
    stats: dict[str, Any] = {}
    skipped: Counter[str] = Counter()
    done, reasons = compensate_means(work, consumers, kept, originals, {k: v[0] for k, v in plan.means.items()})
    stats["mean_compensated"] = done
    skipped.update(f"mean compensation: {r}" for r in reasons)
    if options.reconstruct is not False:
        refit = RefitOptions(ridge=options.ridge, rows=options.refit_rows, seed=options.seed,
                             sequential=options.sequential_refit)
        fits, reasons = refit_layers(work, reference, consumers, kept, plan.samples, refit, progress=progress)
        stats["reconstructed"] = len(fits)
        if fits:
            stats["refit_db_min"], stats["refit_db_median"] = round(min(fits), 2), round(float(np.median(fits)), 2)
        skipped.update(f"re-fit: {r}" for r in reasons)
    stats.update({f"skipped: {k}": v for k, v in sorted(skipped.items())})
    return stats


def prune_model(
    model: onnx.ModelProto, options: PruneOptions, *, dataset: Iterable[Mapping[str, np.ndarray]] | None = None,
    progress: Progress | None = None,
) -> tuple[onnx.ModelProto, bool, dict[str, Any]]:
    """Prune a copy of ``model``; returns ``(model, changed, stats)`` (``model`` itself when unchanged).

    Args:
        model: the model (not modified).
        options: what to remove and how to repair.
        dataset: calibration samples (``dict[input name -> array]``), or ``None``.
        progress: ``progress(label, done, total)`` as the sensitivity probes run ("probing channel
            groups"; the total is an estimate and may grow) and as the re-fit goes round by
            round ("re-fitting layers").
    """
    samples = Samples(dataset, options.calib_samples) if dataset is not None else None
    plan = plan_pruning(model, options, samples, progress=progress)
    stats = _base_stats(plan)
    stats["params_before"], stats["macs_before"] = count_params(plan.model), total_macs(plan.macs)
    if not any(len(units) for units in plan.removal.values()):
        stats.update(params_after=stats["params_before"], macs_after=stats["macs_before"], groups=[])
        stats.update(_why_nothing(plan))
        return model, False, stats
    rows = _group_rows(plan)
    work, reference = plan.model, onnx.ModelProto()
    reference.CopyFrom(work)
    # a layer reading a Concat of several pruned groups is listed by each: repair it once
    consumers = list(dict.fromkeys(c for g in plan.groups.groups if len(plan.removal.get(g.id, ())) for c in g.consumers))
    originals = _arrays(work, {c.weight.tensor for c in consumers})
    applied = apply_removal(work, plan.groups, plan.removal)
    stats["shape_constants_rewritten"] = applied.edits
    stats["initializers_split"] = len(set(applied.renamed.values()))
    if samples is not None:
        stats.update(_repair(work, reference, plan, applied.kept, consumers, originals, options, progress))
    topological_sort(work.graph)  # a MatMul may have got its bias Add appended
    if samples is not None:  # the written model's fidelity, measured (not the probes' prediction)
        stats["output_sqnr_db"] = measured_sqnr(reference, work, samples.head(VERIFY_SAMPLES))
        stats["fidelity_samples"] = sum(1 for _ in samples.head(VERIFY_SAMPLES).singles())
    dims_after = infer_dims(work, _input_shapes(work, options, samples))
    stats["params_after"], stats["macs_after"] = count_params(work), total_macs(node_macs(work, dims_after))
    stats["groups"] = rows
    return work, True, stats
