"""Learned weight rounding (passes/quantize/_rounding.py): the rounded weights stay on the int8
grid of the float weight's own scale, and the layer's output error on the calibration inputs is
at most that of rounding to nearest (exactly nearest rounding when the inputs are uncorrelated)."""

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
from passes.quantize import QuantizeStaticPass, StaticQuantOptions
from passes.quantize._rounding import round_weights


def _nearest(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    return np.clip(np.round(w / s[:, None]), -127, 127) * s[:, None]


def test_identity_gram_is_rounding_to_nearest() -> None:
    w = np.random.default_rng(0).standard_normal((6, 20))
    s = np.abs(w).max(axis=1) / 127
    # with H = I the error of one column says nothing about the others: nothing is spread
    np.testing.assert_allclose(round_weights(w, np.eye(20) * 1e6, s, 127), _nearest(w, s), atol=1e-12)


@pytest.mark.parametrize("per_row_scale", [True, False])
def test_correlated_inputs_lower_the_output_error_on_the_grid(per_row_scale: bool) -> None:
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((4, 32))
    x = rng.standard_normal((2000, 4)) @ basis + 0.05 * rng.standard_normal((2000, 32))  # correlated features
    w = rng.standard_normal((8, 32)) * 0.1
    s = np.abs(w).max(axis=1) / 127 if per_row_scale else np.full(8, np.abs(w).max() / 127)
    q = round_weights(w, x.T @ x, s, 127)
    grid = q / s[:, None]
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-9)  # on the grid of the given scales
    assert np.abs(np.round(grid)).max() <= 127
    err_learned = np.sum((x @ (w - q).T) ** 2)
    err_nearest = np.sum((x @ (w - _nearest(w, s)).T) ** 2)
    assert err_learned < 0.7 * err_nearest, (err_learned, err_nearest)


def _outputs(model: onnx.ModelProto, samples) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, s)[0] for s in samples])


def _correlated_inputs(model: onnx.ModelProto, n: int) -> list[dict[str, np.ndarray]]:
    """Smooth images (neighbouring pixels and channels alike), as real inputs are."""
    rng = np.random.default_rng(3)
    samples = _feeds(model, n, seed=3)
    for s in samples:
        base = rng.standard_normal((1, 1) + s["x"].shape[2:])
        base = (base + np.roll(base, 1, axis=2) + np.roll(base, 1, axis=3)) / 3
        s["x"] = (base + 0.1 * rng.standard_normal(s["x"].shape)).astype(np.float32)
    return samples


@pytest.mark.parametrize("per_channel", [True, False])
def test_the_pass_keeps_the_scales_and_lowers_the_error(per_channel: bool) -> None:
    model = conv_relu_conv()
    samples = _correlated_inputs(model, 16)
    ctx = RunContext(calibration=collect(model, samples), dataset=IterableDataset(samples))
    base = StaticQuantOptions(fallback_min_sqnr=None, per_channel=per_channel, correction_samples=16)
    plain = QuantizeStaticPass(base).apply(model, ctx)
    learned = QuantizeStaticPass(StaticQuantOptions(**{**base.__dict__, "learned_rounding": True})).apply(model, ctx)
    assert learned.stats["learned rounding: layers"].startswith("2 on 16")
    assert learned.stats["weights rounded by data"] == 2
    # the weight scales are those of the float weights (the emission kept the grid)
    def scales(m):
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
        return [inits[n.input[1]] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                and inits[n.input[0]].dtype == np.int8]
    for a, b in zip(scales(plain.model), scales(learned.model)):
        np.testing.assert_array_equal(a, b)
    ref = _outputs(model, samples)
    err_plain = np.sum((ref - _outputs(plain.model, samples)) ** 2)
    err_learned = np.sum((ref - _outputs(learned.model, samples)) ** 2)
    assert err_learned < err_plain, (err_learned, err_plain)


def test_depthwise_and_gemm_are_rounded() -> None:
    nodes = [helper.make_node("Conv", ["x", "WD"], ["d"], name="dw", group=4, pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["d"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "WG", "BG"], ["y"], name="gemm", transB=1)]
    inits = {"WD": _w(4, 1, 3, 3, seed=1), "WG": _w(5, 64, seed=2), "BG": _w(5, seed=3)}
    model = _model(nodes, [_vi("x", [1, 4, 4, 4])], [_vi("y", [1, 5])], inits)
    samples = _correlated_inputs(model, 8)
    ctx = RunContext(calibration=collect(model, samples), dataset=IterableDataset(samples))
    result = QuantizeStaticPass(StaticQuantOptions(learned_rounding=True, fallback_min_sqnr=None)).apply(model, ctx)
    assert result.stats["learned rounding: layers"].startswith("2 on")
    onnx.checker.check_model(result.model, full_check=True)
