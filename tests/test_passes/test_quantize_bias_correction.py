"""Bias correction (passes/quantize/_correct.py): the corrected unit's mean output error per
channel, on the samples it was measured on, is zero up to the int32 bias rounding; the float
input model is untouched; units without a bias slot get one or are left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from test_quantize_static import _feeds, _model, _vi, _w, conv_relu_conv

from calibration.collect import collect
from calibration.datasets import IterableDataset
from passes._base import RunContext
from passes.quantize import QuantizeStaticPass, StaticQuantOptions, quantize_static
from passes.quantize._correct import apply_bias_shifts, bias_targets


def _outputs(model: onnx.ModelProto, samples) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, s)[0] for s in samples])


def _shifted_input(model: onnx.ModelProto, n: int, seed: int):
    """Samples with a large common offset: clipped and rounded inputs then move each channel's mean."""
    samples = _feeds(model, n, seed)
    for s in samples:
        for k in s:
            s[k] = (s[k] * 0.5 + 1.5).astype(np.float32)
    return samples


def _mean_error(before, after, samples, axis: int) -> np.ndarray:
    ref, got = _outputs(before, samples), _outputs(after, samples)
    diff = np.moveaxis((ref - got).astype(np.float64), axis, -1)
    return diff.reshape(-1, diff.shape[-1]).mean(axis=0)


def _quantized(model, samples, *, correct: bool, per_channel: bool = True):
    ctx = RunContext(calibration=collect(model, samples), dataset=IterableDataset(samples))
    options = StaticQuantOptions(bias_correction=correct, per_channel=per_channel, fallback_min_sqnr=None,
                                 correction_samples=len(samples))
    return QuantizeStaticPass(options).apply(model, ctx)


def _with_and_without(model, samples, *, per_channel: bool = True, axis: int = 2):
    """The corrected result and the per-channel |mean output error| without and with correction."""
    plain = _quantized(model, samples, correct=False, per_channel=per_channel)
    fixed = _quantized(model, samples, correct=True, per_channel=per_channel)
    before = np.abs(_mean_error(model, plain.model, samples, axis=axis))
    after = np.abs(_mean_error(model, fixed.model, samples, axis=axis))
    return fixed, before, after


def _bias_step(model: onnx.ModelProto, node_name: str) -> float:
    """The largest int32 bias scale (s_x * s_w) of ``node_name`` in a quantized model."""
    by_out = {n.output[0]: n for n in model.graph.node}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    holder = node
    if len(node.input) < 3:  # MatMul: the Add after it holds the bias (float)
        return 0.0
    dq = by_out[holder.input[2]]
    return float(np.max(inits[dq.input[1]]))


def _one_conv(bias: bool = True) -> onnx.ModelProto:
    inputs = ["x", "W", "B"] if bias else ["x", "W"]
    nodes = [helper.make_node("Conv", inputs, ["y"], name="conv", pads=[1, 1, 1, 1])]
    inits = {"W": _w(5, 3, 3, 3), "B": _w(5, seed=9)} if bias else {"W": _w(5, 3, 3, 3)}
    return _model(nodes, [_vi("x", [1, 3, 6, 6])], [_vi("y", [1, 5, 6, 6])], inits)


@pytest.mark.parametrize("per_channel", [True, False])
def test_one_unit_mean_error_is_zero_up_to_bias_rounding(per_channel: bool) -> None:
    model = _one_conv()
    samples = _shifted_input(model, 16, seed=3)
    fixed, before, after = _with_and_without(model, samples, per_channel=per_channel)
    assert fixed.stats["bias correction: units"].startswith("1 of 1")
    step = _bias_step(fixed.model, "conv")
    assert after.max() <= step / 2 + 1e-6, (after, step)  # half an int32 bias step
    assert before.max() > 4 * step, "the test needs a visible shift to correct"


@pytest.mark.parametrize("per_channel", [True, False])
def test_a_chain_is_corrected_unit_by_unit(per_channel: bool) -> None:
    """Each unit's shift is its own (measured on float inputs): the second Conv does not
    over-correct for the first one's error, so the output's mean error shrinks."""
    model = conv_relu_conv()
    samples = _shifted_input(model, 16, seed=3)
    fixed, before, after = _with_and_without(model, samples, per_channel=per_channel)
    assert fixed.stats["bias correction: units"].startswith("2 of 2")
    assert after.max() < before.max() / 3, (before, after)


def test_the_float_model_is_not_modified_and_the_bias_is_a_new_initializer() -> None:
    model = conv_relu_conv()
    original = model.SerializeToString()
    samples = _shifted_input(model, 8, seed=1)
    fixed = _quantized(model, samples, correct=True)
    assert model.SerializeToString() == original
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    changed = apply_bias_shifts(graph.graph, {"conv1": np.ones(8, np.float32)})
    assert changed == 1
    conv1 = next(n for n in graph.graph.node if n.name == "conv1")
    assert conv1.input[2] != "B1" and any(t.name == "B1" for t in graph.graph.initializer)
    assert fixed.changed


def test_conv_without_bias_gets_one() -> None:
    model = _one_conv(bias=False)
    samples = _shifted_input(model, 12, seed=2)
    fixed, before, after = _with_and_without(model, samples, per_channel=False)
    conv = next(n for n in fixed.model.graph.node if n.name == "conv")
    assert len(conv.input) == 3 and conv.input[2]
    assert after.max() < before.max() / 4 and after.max() <= _bias_step(fixed.model, "conv") / 2 + 1e-6


def test_gemm_and_matmul_add_are_corrected_over_the_last_axis() -> None:
    nodes = [helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], name="gemm", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["m"], name="matmul"),
             helper.make_node("Add", ["m", "B2"], ["y"], name="add")]
    inits = {"W1": _w(16, 12, seed=4), "B1": _w(16, seed=5), "W2": _w(16, 6, seed=6), "B2": _w(6, seed=7)}
    model = _model(nodes, [_vi("x", [4, 12])], [_vi("y", [4, 6])], inits)
    targets = {t.label: t for t in bias_targets(model.graph, ["gemm", "matmul"])}
    assert targets["gemm"].channels == 16 and targets["matmul"].after_add and targets["matmul"].tensor == "m"
    samples = _shifted_input(model, 24, seed=8)
    fixed, before, after = _with_and_without(model, samples, per_channel=False, axis=-1)
    add = next(n for n in fixed.model.graph.node if n.name == "add")
    assert add.input[1] != "B2"
    # each unit's own shift is cancelled; what the MatMul inherits from the Gemm's quantized
    # output through the Relu, and its own output quantizer, are not
    assert after.max() < before.max() / 8, (before, after)


def test_direct_bias_shift_moves_the_output_by_that_much() -> None:
    """quantize_static(bias_shift=) adds the shift to the float bias before quantizing: the
    output of a float-out Conv moves by the shift, up to the int32 rounding."""
    model = conv_relu_conv()
    samples = _feeds(model, 4, seed=0)
    table = collect(model, samples)
    options = StaticQuantOptions(fallback_min_sqnr=None)
    base, _ = quantize_static(model, table, options)
    shift = np.linspace(-0.5, 0.5, 4).astype(np.float32)
    moved, stats = quantize_static(model, table, options, bias_shift={"conv2": shift})
    assert stats["biases corrected"] == 1
    delta = (_outputs(moved, samples) - _outputs(base, samples)).mean(axis=(0, 1, 3, 4))
    np.testing.assert_allclose(delta, shift, atol=_bias_step(moved, "conv2"))
