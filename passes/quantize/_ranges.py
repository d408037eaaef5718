"""Per-tensor choice of the calibration range by the least error of the unit that reads it.

``quantize --method auto``: calibration keeps each tensor's histogram; then, for every activation
tensor ``t`` a weighted unit (Conv, Gemm, MatMul) reads, three ranges are candidates —

- ``minmax``: the observed ``[min, max]`` (no clipping, the widest step),
- ``percentile``: 99.99 % of ``|x|`` kept (as ``--method percentile``),
- ``mse``: the least expected squared quantization + clipping error of ``t`` itself,

— and the one chosen gives the least squared error of the *reader's output*: each reader is
copied beside the float model once per candidate, reading the float ``t`` through that
candidate's quantizer and its int8 weight (:class:`passes.quantize._correct.LocalProbe`), and the
errors, each relative to its reader's output power, are summed over the readers and the samples.
One session measures every candidate of every tensor. A tensor's own error (what ``mse``
minimizes) is not what the model sees: a clipped outlier channel can cost the next layer more
than the coarser step of a wider range, and the reverse.

Tensors no weighted unit reads (inputs of Add, Concat, Sigmoid ...) keep the percentile range.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from calibration.histogram import Histogram, mse_range
from calibration.qparams import quant_params
from passes.quantize._correct import LocalProbe
from passes.quantize._fallback import UnitDetails, probe_session
from passes.quantize._rules import COMPUTE

__all__ = ["CANDIDATES", "candidate_ranges", "choose_ranges"]

CANDIDATES = ("minmax", "percentile", "mse")


def candidate_ranges(entry: Any, *, symmetric: bool) -> dict[str, tuple[float, float]] | None:
    """The candidates of a table entry collected by ``percentile`` with its histogram, or
    ``None`` without a histogram."""
    if getattr(entry, "histogram", None) is None:
        return None
    hist = Histogram.from_state(dict(entry.histogram))
    if not hist.count:
        return None
    return {"minmax": (hist.min, hist.max), "percentile": (float(entry.min), float(entry.max)),
            "mse": mse_range(hist, symmetric=symmetric)}


def choose_ranges(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, details: UnitDetails, table: Any,
                  samples: Sequence[Mapping[str, np.ndarray]], *, activations: str = "u8") -> tuple[Any, dict[str, Any]]:
    """A copy of ``table`` whose weighted units' input ranges are the candidates with the least
    reader error on ``samples`` (module docstring), and stats counting the choices.

    ``quant_model``/``details``: a quantization of ``float_model`` with ``table`` (it supplies
    the units and their int8 weights).
    """
    symmetric = activations == "s8"
    dtype = "int8" if symmetric else "uint8"
    probe = LocalProbe(float_model, quant_model)
    raw = dict(details.raw_outputs)
    quantizers: dict[tuple[str, str], str] = {}
    readers: dict[str, list[tuple[str, str, dict[str, str]]]] = collections.defaultdict(list)
    candidates: dict[str, dict[str, tuple[float, float]]] = {}
    for label, _, _ in details.unit_io:
        node = probe.float_nodes.get(label)
        q = probe.input_quantizer(raw.get(label, ""))
        if node is None or node.op_type not in COMPUTE or q is None:
            continue
        tensor = q.input[0]
        if tensor not in candidates:
            found = candidate_ranges(table.tensors.get(tensor), symmetric=symmetric)
            if found is None:
                continue
            candidates[tensor] = found
        outs: dict[str, str] = {}
        for name, (lo, hi) in candidates[tensor].items():
            if (tensor, name) not in quantizers:
                p = quant_params(lo, hi, dtype=dtype, symmetric=symmetric)
                quantizers[tensor, name] = probe.quantizer(tensor, p.scale, p.zero_point, f"{tensor}_{name}")
            out = probe.unit(label, raw[label], x=quantizers[tensor, name])
            if out is not None:
                outs[name] = out
        if len(outs) == len(CANDIDATES):
            readers[tensor].append((label, node.output[0], outs))
    if not readers:
        return table, {"ranges chosen": "none (no weighted unit with a histogram-calibrated input)"}
    wanted = sorted({ref for rs in readers.values() for _, ref, _ in rs}
                    | {o for rs in readers.values() for _, _, outs in rs for o in outs.values()})
    session = probe_session(probe.finish(), wanted)
    inputs = {i.name for i in session.get_inputs()}
    signal: dict[str, float] = collections.defaultdict(float)
    error: dict[tuple[str, str], float] = collections.defaultdict(float)
    for sample in samples:
        feeds = {k: np.asarray(v) for k, v in sample.items() if k in inputs}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for rs in readers.values():
            for label, ref, outs in rs:
                r = np.asarray(got[ref], np.float64)
                signal[label] += float(np.sum(r * r))
                for name, out in outs.items():
                    error[label, name] += float(np.sum((r - np.asarray(got[out], np.float64)) ** 2))
    tensors = dict(table.tensors)
    chosen: collections.Counter = collections.Counter()
    for tensor, rs in readers.items():
        score = {name: sum(error[label, name] / max(signal[label], 1e-30) for label, _, _ in rs) for name in CANDIDATES}
        best = min(CANDIDATES, key=lambda n: (score[n], n != "percentile"))
        chosen[best] += 1
        lo, hi = candidates[tensor][best]
        tensors[tensor] = dataclasses.replace(tensors[tensor], min=float(lo), max=float(hi))
    stats = {"ranges chosen": ", ".join(f"{name} {chosen[name]}" for name in CANDIDATES),
             "ranges chosen on samples": len(samples)}
    return dataclasses.replace(table, tensors=tensors, method="auto"), stats
