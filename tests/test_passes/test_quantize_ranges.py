"""Per-tensor range choice (passes/quantize/_ranges.py, ``--method auto``): each weighted unit's
input gets the candidate range whose quantizer gives the least error at that unit's output, and
the quantized model follows the chosen table."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from test_quantize_static import _feeds, conv_relu_conv

from calibration.collect import collect
from calibration.datasets import IterableDataset
from passes._base import RunContext
from passes.quantize import QuantizeStaticPass, StaticQuantOptions, quantize_static
from passes.quantize._fallback import UnitDetails
from passes.quantize._ranges import CANDIDATES, candidate_ranges, choose_ranges


def _outlier_samples(model: onnx.ModelProto, n: int) -> list[dict[str, np.ndarray]]:
    """Heavy-tailed inputs (Student t, 1.5 degrees of freedom): the few largest values set a
    minmax step so coarse that clipping them costs less."""
    rng = np.random.default_rng(6)
    samples = _feeds(model, n, seed=6)
    for s in samples:
        s["x"] = rng.standard_t(1.5, s["x"].shape).astype(np.float32)
    return samples


def _reader_error(model, table, samples, tensor_range, tensor="x") -> float:
    """Output error of the quantized model when ``tensor`` has ``tensor_range`` (others as in ``table``)."""
    import dataclasses
    tensors = dict(table.tensors)
    tensors[tensor] = dataclasses.replace(tensors[tensor], min=tensor_range[0], max=tensor_range[1])
    q, _ = quantize_static(model, dataclasses.replace(table, tensors=tensors), StaticQuantOptions(fallback_min_sqnr=None))
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    return float(sum(np.sum((ref.run(None, s)[0] - got.run(None, s)[0]) ** 2) for s in samples))


def test_each_weighted_input_gets_the_candidate_with_the_least_reader_error() -> None:
    model = conv_relu_conv()
    samples = _outlier_samples(model, 12)
    table = collect(model, samples, method="percentile", keep_histograms=True)
    quant, stats = quantize_static(model, table, StaticQuantOptions(fallback_min_sqnr=None))
    chosen, info = choose_ranges(model, quant, UnitDetails.from_stats(stats), table, samples)
    assert chosen.method == "auto" and sum(int(p.split()[-1]) for p in info["ranges chosen"].split(", ")) == 2
    cands = candidate_ranges(table.tensors["x"], symmetric=False)
    assert set(cands) == set(CANDIDATES) and cands["minmax"][1] > cands["mse"][1]
    picked = (chosen.tensors["x"].min, chosen.tensors["x"].max)
    assert picked in [tuple(map(float, v)) for v in cands.values()]
    # conv1 is the only reader of x and the graph's first layer: its output error ranks the
    # candidates as the end-to-end error of quantizing x alone does here
    errors = {name: _reader_error(model, table, samples, rng) for name, rng in cands.items()}
    best = min(errors, key=errors.get)
    assert picked == tuple(map(float, cands[best])), (picked, errors)
    assert best != "minmax" and errors["minmax"] > errors[best]  # the tail makes the full range worse


def test_the_pass_uses_the_chosen_table_and_says_so() -> None:
    model = conv_relu_conv()
    samples = _outlier_samples(model, 8)
    table = collect(model, samples, method="percentile", keep_histograms=True)
    ctx = RunContext(calibration=table, dataset=IterableDataset(samples))
    result = QuantizeStaticPass(StaticQuantOptions(choose_ranges=True, fallback_min_sqnr=None)).apply(model, ctx)
    assert result.stats["ranges chosen on samples"] == 8 and "minmax" in result.stats["ranges chosen"]
    # without histograms nothing can be chosen, and the table's own ranges are used
    plain = collect(model, samples, method="percentile")
    ctx = RunContext(calibration=plain, dataset=IterableDataset(samples))
    result = QuantizeStaticPass(StaticQuantOptions(choose_ranges=True, fallback_min_sqnr=None)).apply(model, ctx)
    assert result.stats["ranges chosen"].startswith("none")
