"""Data-driven fallback: return the units that lose the most accuracy to float until outputs hold.

Policy rule (e). With samples of the user's data (``RunContext.dataset``):

1. quantize with the static rules;
2. run the float model and the quantized one (graph optimizations off) on ``fallback_samples``
   samples, exposing every quantized tensor: in the float model the tensor itself, in the
   quantized model its DequantizeLinear output — like with like, so when a Relu was absorbed
   both sides are post-Relu values;
3. if every graph output's SQNR (summed over samples) reaches ``fallback_target_sqnr`` (at least
   ``fallback_min_sqnr``, the floor verification holds), stop;
4. else rank units by the SQNR they *lose*: ``min SQNR of its inputs - SQNR of its output`` (the
   unit's own contribution, not error it inherited; a self-gate group — producer, gate, Mul —
   counts as one unit, policy rule (g)), add the worst few to the float set, and
   go to 1 — at most ``fallback_max_fraction`` of the units, in at most ``_ROUNDS`` rounds.

When the target is not reached, the round whose worst output part came closest is returned
(returning more units does not always raise the SQNR); if even that misses the floor, the
pass's verification refuses it and names the units.

The stats say which nodes fell back and the output SQNR before and after.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import onnx
import onnxruntime as ort

__all__ = ["UnitDetails", "probe_session", "node_times", "quantize_with_fallback", "tensor_sqnr", "measure", "most_damaging", "rank_units", "fidelity_problem"]

log = logging.getLogger(__name__)
_ROUNDS = 6
_CAP = 40.0  # dB: noise below this is negligible; an exact input does not make its unit look bad


def probe_session(model: onnx.ModelProto, outputs: list[str]) -> ort.InferenceSession:
    """A session of ``model`` that also returns ``outputs`` (graph optimizations off, so each
    tensor holds exactly what its node computes)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    have = {o.name for o in work.graph.output}
    work.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs if o not in have)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = False  # exposed tensors come and go: an arena would keep their peak
    return ort.InferenceSession(work.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def node_times(model: onnx.ModelProto, sample: Mapping[str, np.ndarray], runs: int = 5) -> dict[str, float]:
    """Median milliseconds each named node of ``model`` takes on ``sample`` (onnxruntime's
    profiler, graph optimizations off so nodes keep their names, after one warm-up run)."""
    import json
    import os
    import statistics
    import tempfile

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.asarray(sample[i.name]) for i in session.get_inputs() if i.name in sample}
        for _ in range(runs + 1):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            times.setdefault(name[: -len("_kernel_time")], []).append(event.get("dur", 0) / 1000.0)
    return {name: statistics.median(v[1:] or v) for name, v in times.items()}


class _Acc:
    def __init__(self) -> None:
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, name: str, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            return
        r, g = ref.astype(np.float64), got.astype(np.float64)
        self.signal[name] = self.signal.get(name, 0.0) + float(np.sum(r * r))
        self.noise[name] = self.noise.get(name, 0.0) + float(np.sum((r - g) ** 2))

    def sqnr(self, name: str) -> float:
        s, n = self.signal.get(name, 0.0), self.noise.get(name, 0.0)
        if n <= 0:
            return math.inf
        return 10 * math.log10(max(s, 1e-30) / n)


#: tensors exposed per probe session: a few at a time keeps memory near one inference's
_CHUNK = 24


def tensor_sqnr(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, pairs: Mapping[str, str],
                samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """SQNR (dB, summed over ``samples``) of ``quant_model[pairs[t]]`` against ``float_model[t]``,
    ``_CHUNK`` tensors per pass over the samples (exposing every tensor at once held 3.8x the
    memory of one fp32 inference on ppocr-rec)."""
    names = list(pairs)
    samples = list(samples)
    acc = _Acc()
    for start in range(0, max(len(names), 1), _CHUNK):
        chunk = names[start:start + _CHUNK]
        ref_sess = probe_session(float_model, chunk)
        got_sess = probe_session(quant_model, [pairs[t] for t in chunk])
        ref_inputs = {i.name for i in ref_sess.get_inputs()}
        for sample in samples:
            feeds = {k: np.asarray(v) for k, v in sample.items() if k in ref_inputs}
            ref = dict(zip([o.name for o in ref_sess.get_outputs()], ref_sess.run(None, feeds)))
            got = dict(zip([o.name for o in got_sess.get_outputs()], got_sess.run(None, feeds)))
            for t in chunk:
                if t in ref and pairs[t] in got and np.asarray(ref[t]).dtype.kind == "f":
                    acc.add(t, np.asarray(ref[t]), np.asarray(got[pairs[t]]))
            del ref, got
        del ref_sess, got_sess
    return {t: acc.sqnr(t) for t in names}


def _pairs(quant_model: onnx.ModelProto) -> dict[str, str]:
    """tensor -> its DequantizeLinear output in the quantized model (activations only)."""
    q_of = {n.output[0]: n.input[0] for n in quant_model.graph.node if n.op_type == "QuantizeLinear"}
    return {q_of[n.input[0]]: n.output[0] for n in quant_model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in q_of}


def _ancestors(model: onnx.ModelProto, targets: Iterable[str]) -> set[str]:
    """Tensor names upstream of ``targets`` (inclusive)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    seen, stack = set(), list(targets)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        node = producer.get(t)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return seen


def _grouped(units, groups) -> list[tuple[list[str], list[str], str | None]]:
    """Units merged into the policy's fallback groups (rule (g)): ``(labels, inputs, output)``.

    Only quantized members count (a float gate is no unit and must not use up the fallback's
    budget). A group's inputs are its members' inputs produced outside it, its output the output
    of its last member; a unit in no group is a group of one.
    """
    by_label = {name: (acts, out) for name, acts, out in units}
    owner: dict[str, int] = {}
    merged: list[tuple[list[str], list[str], str | None]] = []
    for group in groups:
        members = [m for m in group if m in by_label and m not in owner]
        if not members:
            continue
        produced = {by_label[m][1] for m in members}
        acts = [a for m in members for a in by_label[m][0] if a not in produced]
        owner.update((m, len(merged)) for m in members)
        merged.append((members, acts, by_label[members[-1]][1]))
    for name, acts, out in units:
        if name not in owner:
            merged.append(([name], list(acts), out))
    return merged


def _damage(units, sqnr: Mapping[str, float], upstream: set[str]) -> list[tuple[float, list[str]]]:
    """Units (or groups) upstream of the failing outputs, by the SQNR they lose (capped at _CAP dB)."""
    ranked = []
    for names, acts, out in units:
        if out is None or out not in sqnr or out not in upstream:
            continue
        before = min(min((sqnr.get(a, math.inf) for a in acts), default=math.inf), _CAP)
        ranked.append((before - min(sqnr[out], _CAP), names))
    return sorted(ranked, key=lambda r: r[0], reverse=True)


@dataclasses.dataclass(frozen=True)
class UnitDetails:
    """What a static quantization left for judging it: each unit's ``(label, inputs, output)``,
    the policy's fallback groups, and the output parts (graph outputs, or the tensors a mixed
    output head concatenates) whose SQNR is the fidelity."""

    unit_io: tuple[tuple[str, tuple[str, ...], str | None], ...]
    groups: tuple[tuple[str, ...], ...]
    output_parts: tuple[str, ...]
    unit_tensors: tuple[tuple[str, str], ...] = ()
    raw_outputs: tuple[tuple[str, str], ...] = ()  # label -> the tensor its node writes (before any Q)
    errors: dict | None = None  # the error report, when asked for (passes.quantize._diagnose)

    @classmethod
    def from_stats(cls, stats: dict) -> UnitDetails:
        """Take the planner's entries out of ``stats`` (they are not for the report)."""
        return cls(tuple((n, tuple(a), o) for n, a, o in stats.pop("unit_io", ())),
                   tuple(tuple(g) for g in stats.pop("unit_groups", ())),
                   tuple(stats.pop("output_parts", ())),
                   tuple(stats.pop("unit_tensors", {}).items()),
                   tuple(stats.pop("raw_outputs", {}).items()))


def measure(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, details: UnitDetails,
            samples: Iterable[Mapping[str, np.ndarray]], *, floor: float | None = None) -> dict[str, float]:
    """SQNR (dB, summed over ``samples``) of every output part and every quantized tensor.

    With ``floor``, the output parts are measured first and the tensors only when a part is
    below it (the tensors serve to rank units, which a passing model does not need).
    """
    samples = list(samples)
    parts = {o: o for o in details.output_parts}
    if floor is not None:
        sqnr = tensor_sqnr(float_model, quant_model, parts, samples)
        if all(sqnr.get(o, math.inf) >= floor for o in details.output_parts):
            return sqnr
    pairs = _pairs(quant_model)
    pairs.update(parts)
    return tensor_sqnr(float_model, quant_model, pairs, samples)


def most_damaging(float_model: onnx.ModelProto, details: UnitDetails, sqnr: Mapping[str, float],
                  failing: Iterable[str]) -> list[list[str]]:
    """Units (or fallback groups) upstream of the ``failing`` parts, the most damaging first."""
    units = _grouped(details.unit_io, details.groups)
    return [names for _, names in _damage(units, sqnr, _ancestors(float_model, failing))]


def rank_units(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, details: UnitDetails,
               samples: Iterable[Mapping[str, np.ndarray]]) -> list[tuple[list[str], float]]:
    """Every unit (or fallback group) with the SQNR it loses (dB: its inputs' SQNR minus its
    output's, capped as in the fallback), the most damaging first; ties by name.

    Unlike the fallback's ranking, a unit whose output stays float (a head feeding a graph
    output) is ranked too, by the float tensor it writes: it still computes on int8 inputs and
    weights.
    """
    written = dict(details.unit_tensors)
    pairs = _pairs(quant_model)
    pairs.update({o: o for o in details.output_parts})
    pairs.update({t: t for t in written.values() if t not in pairs})
    sqnr = tensor_sqnr(float_model, quant_model, pairs, samples)
    units = [(label, acts, out or written.get(label)) for label, acts, out in details.unit_io]
    ranked = [(names, loss) for loss, names in _damage(_grouped(units, details.groups), sqnr, set(sqnr) | set(written.values()))]
    return sorted(ranked, key=lambda r: (-r[1], r[0]))


def fidelity_problem(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, details: UnitDetails,
                     samples: list[Mapping[str, np.ndarray]], floor: float) -> str | None:
    """Why ``quant_model`` misses the fidelity floor on ``samples`` (the fallback's own measure:
    each output part's SQNR, summed over the samples, at least ``floor`` dB), naming the worst
    part and what to try; ``None`` when every part reaches it."""
    sqnr = measure(float_model, quant_model, details, samples, floor=floor)
    parts = {o: sqnr.get(o, math.inf) for o in details.output_parts}
    failing = [o for o, v in parts.items() if v < floor]
    if not failing:
        return None
    worst = min(failing, key=parts.__getitem__)
    units = [n for names in most_damaging(float_model, details, sqnr, failing)[:3] for n in names[:1]]
    hint = " ".join(f"--exclude-node '{n}'" for n in units)
    return (f"output '{worst}' SQNR {parts[worst]:.1f} dB < {floor:g} dB on {len(samples)} samples; let the task "
            f"decide with --eval DATA --max-drop X, or keep the most damaging units float"
            + (f": {hint}" if hint else ""))


def quantize_with_fallback(model: onnx.ModelProto, table, options, dataset, *,
                           quantize: Callable[..., tuple[onnx.ModelProto, dict]]
                           ) -> tuple[onnx.ModelProto, dict, UnitDetails]:
    """Quantize with ``quantize`` (``quantize_static``: passed in, so this module does not import
    the one that calls it), then fall back the most damaging units until outputs reach the SQNR
    target."""

    samples = []
    for i, s in enumerate(dataset):
        if i >= options.fallback_samples:
            break
        samples.append({k: np.asarray(v) for k, v in s.items()})
    extra: set[str] = set(options.keep_float)
    floor = options.fallback_min_sqnr
    target = max(floor, options.fallback_target_sqnr if options.fallback_target_sqnr is not None else floor)
    first = best = None
    for _round in range(_ROUNDS):
        quant, stats = quantize(model, table, options, extra_float=frozenset(extra))
        details = UnitDetails.from_stats(stats)
        outputs = details.output_parts
        sqnr = measure(model, quant, details, samples, floor=target)
        failing = [o for o in outputs if sqnr.get(o, math.inf) < target]
        worst = min((sqnr[o] for o in outputs if o in sqnr), default=math.inf)
        stats["fallback: output parts SQNR dB"] = {o: round(sqnr.get(o, math.inf), 2) for o in outputs}
        stats["fallback: nodes kept float"] = sorted(extra)
        first = worst if first is None else first
        if best is None or worst > best[0]:
            best = (worst, quant, stats, details)
        log.debug("fallback round %d: worst output SQNR %.1f dB, %d float", _round, worst, len(extra))
        limit = int(options.fallback_max_fraction * (stats["nodes_quantized"] + len(extra)))
        if worst >= target or len(extra) >= limit:
            break
        step = max(1, min(limit - len(extra), math.ceil(0.05 * len(details.unit_io))))
        ranked = [names for names in most_damaging(model, details, sqnr, failing) if not set(names) <= extra]
        if not ranked:
            break
        for names in ranked[:step]:
            extra.update(names)
    worst, quant, stats, details = best  # the target missed: the round closest to it (more float is not always closer)
    stats["fallback: output SQNR dB before"] = round(first, 2)
    stats["fallback: output SQNR dB after"] = round(worst, 2)
    return quant, stats, details
