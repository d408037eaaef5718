"""Where int8 loses accuracy: the per-tensor and per-unit error report (``quantize --report-errors``).

For every quantized activation, its SQNR against float, compared like with like: the float
model's tensor against the quantized model's DequantizeLinear output of it (when a Relu was
absorbed into the quantizer's clamp, both sides are post-Relu values, as in the fallback). For
every unit (or fallback group): the SQNR it loses inside the full int8 model (its inputs' SQNR
minus its output's), and its end-to-end effect when it is the *only* unit quantized: the worst
output part's SQNR of that model. Both are summed over the samples.

Memory: tensors are exposed to onnxruntime in chunks of at most ``chunk`` per run (one sample at
a time, running sums only), so the peak stays near one inference's, not all tensors of all
samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from passes.quantize._fallback import UnitDetails, _grouped, _pairs, tensor_sqnr

__all__ = ["error_report", "render_error_report", "CHUNK"]

#: Tensors exposed per onnxruntime run.
CHUNK = 24


def _chunked_sqnr(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, pairs: Mapping[str, str],
                  samples: Sequence[Mapping[str, np.ndarray]], chunk: int) -> dict[str, float]:
    names = sorted(pairs)
    out: dict[str, float] = {}
    for start in range(0, len(names), chunk):
        part = {t: pairs[t] for t in names[start:start + chunk]}
        out.update(tensor_sqnr(float_model, quant_model, part, samples))
    return out


def _db(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 2)


def error_report(
    float_model: onnx.ModelProto,
    quant_model: onnx.ModelProto,
    details: UnitDetails,
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    alone: Callable[[frozenset[str]], onnx.ModelProto] | None = None,
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """The report as JSON-ready data.

    Args:
        float_model: the model quantized (after preparation).
        quant_model: its int8 version.
        details: what the quantization left for judging it.
        samples: calibration samples.
        alone: ``alone(float_labels)`` quantizes ``float_model`` with every unit except those
            *not* in ``float_labels`` kept float, for the one-unit-at-a-time effect; ``None``
            skips that part.
        chunk: tensors exposed per run.
    """
    written = dict(details.unit_tensors)
    pairs = _pairs(quant_model)
    pairs.update({o: o for o in details.output_parts})
    pairs.update({t: t for t in written.values() if t not in pairs})
    sqnr = _chunked_sqnr(float_model, quant_model, pairs, samples, chunk)
    producer = {tensor: label for label, tensor in details.unit_tensors}
    tensors = sorted(({"tensor": t, "sqnr_db": _db(v), "unit": producer.get(t)} for t, v in sqnr.items()
                      if t not in details.output_parts),
                     key=lambda r: (math.inf if r["sqnr_db"] is None else r["sqnr_db"], r["tensor"]))
    units = [(label, acts, out or written.get(label)) for label, acts, out in details.unit_io]
    everyone = frozenset(label for label, _, _ in details.unit_io)
    rows = []
    for names, acts, out in _grouped(units, details.groups):
        before = min(min((sqnr.get(a, math.inf) for a in acts), default=math.inf), 40.0)
        row: dict[str, Any] = {"units": names, "output": out,
                               "loss_db": _db(before - min(sqnr.get(out, math.inf), 40.0)) if out else None}
        if alone is not None:
            only = alone(everyone - set(names))
            parts = tensor_sqnr(float_model, only, {o: o for o in details.output_parts}, samples)
            row["alone_db"] = _db(min(parts.values(), default=math.inf))
        rows.append(row)
    if alone is not None:  # the lowest SQNR alone hurts most
        rows.sort(key=lambda r: math.inf if r["alone_db"] is None else r["alone_db"])
    else:
        rows.sort(key=lambda r: -(r["loss_db"] or 0.0))
    outputs = {o: _db(sqnr.get(o, math.inf)) for o in details.output_parts}
    return {"samples": len(samples), "outputs": outputs, "tensors": tensors, "units": rows}


def render_error_report(report: Mapping[str, Any], *, rows: int = 30) -> str:
    """Markdown: the output parts, the worst tensors, the units that hurt most."""
    lines = [f"# int8 error report ({report['samples']} calibration samples)", "",
             "SQNR in dB against the float model, summed over the samples (higher is better; none = exact).", "",
             "## Outputs", "", "| output | SQNR dB |", "| --- | ---: |"]
    lines += [f"| {name} | {value} |" for name, value in report["outputs"].items()]
    lines += ["", f"## Quantized tensors, worst first ({len(report['tensors'])} in all)", "",
              "| tensor | produced by | SQNR dB |", "| --- | --- | ---: |"]
    lines += [f"| {r['tensor']} | {r['unit'] or '-'} | {r['sqnr_db']} |" for r in report["tensors"][:rows]]
    alone = any("alone_db" in r for r in report["units"])
    lines += ["", f"## Units, most harmful first ({len(report['units'])} in all)", "",
              "loss: SQNR its inputs have minus its output's in the int8 model (each capped at 40 dB, below "
              "which noise matters); alone: the worst output's SQNR when only this unit is int8 (None: nothing "
              "to quantize alone, e.g. data movement).", "",
              "| units | loss dB |" + (" alone dB |" if alone else ""), "| --- | ---: |" + (" ---: |" if alone else "")]
    for r in report["units"][:rows]:
        lines.append(f"| {', '.join(r['units'])} | {r['loss_db']} |" + (f" {r.get('alone_db')} |" if alone else ""))
    return "\n".join(lines) + "\n"
