"""Cross-layer equalization (passes/quantize/_equalize.py): exact in float, equal weight ranges
per channel pair afterwards, and no rewrite through ops that are not homogeneous."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from _helpers import run_ort
from onnx import helper
from test_quantize_static import _feeds, _model, _vi

from passes._base import RunContext
from passes.quantize import EqualizePass
from passes.quantize._equalize import conv_pairs


def _uneven(*shape: int, seed: int) -> np.ndarray:
    """Weights whose output channels differ in range by up to 100x (what equalization evens out)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32) * 0.2
    return (w * np.logspace(-1, 1, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))).astype(np.float32)


def _chain(act: str | None, *, depthwise: bool = False) -> onnx.ModelProto:
    """x -> Conv A -> act -> Conv B (-> depthwise -> Conv C) -> y."""
    nodes = [helper.make_node("Conv", ["x", "WA", "BA"], ["a"], name="A", pads=[1, 1, 1, 1])]
    tensor = "a"
    if act == "PRelu":
        nodes.append(helper.make_node("PRelu", ["a", "slope"], ["f"], name="act"))
        tensor = "f"
    elif act is not None:
        kwargs = {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [0, 0, 1, 1]} if act == "MaxPool" else {}
        nodes.append(helper.make_node(act, ["a"], ["f"], name="act", **kwargs))
        tensor = "f"
    inits = {"WA": _uneven(8, 3, 3, 3, seed=0), "BA": np.linspace(-1, 1, 8).astype(np.float32),
             "slope": np.full((8, 1, 1), 0.1, np.float32)}
    if act != "PRelu":
        inits.pop("slope")
    if depthwise:
        nodes += [helper.make_node("Conv", [tensor, "WD", "BD"], ["d"], name="D", group=8, pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["d"], ["dr"], name="relu_d"),
                  helper.make_node("Conv", ["dr", "WB", "BB"], ["y"], name="B")]
        inits.update(WD=_uneven(8, 1, 3, 3, seed=1), BD=np.linspace(0, 1, 8).astype(np.float32))
    else:
        nodes.append(helper.make_node("Conv", [tensor, "WB", "BB"], ["y"], name="B"))
    inits.update(WB=(np.random.default_rng(2).standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32),
                 BB=np.zeros(4, np.float32))
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], inits)


def _ranges(model: onnx.ModelProto, name: str, axis: int) -> np.ndarray:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == name)
    w = np.moveaxis(inits[node.input[1]], axis, 0)
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)


@pytest.mark.parametrize("act", [None, "Relu", "LeakyRelu", "PRelu", "MaxPool"])
def test_equalization_is_exact_and_evens_the_ranges(act: str | None) -> None:
    model = _chain(act)
    original = model.SerializeToString()
    result = EqualizePass().apply(model, RunContext())
    assert result.changed and result.stats["pairs"] == 1
    assert model.SerializeToString() == original  # the input is not modified
    onnx.checker.check_model(result.model, full_check=True)
    for feeds in _feeds(model, 3, seed=4):
        np.testing.assert_allclose(run_ort(result.model, feeds)["y"], run_ort(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    # output channel i of A and input channel i of B now have the same range
    np.testing.assert_allclose(_ranges(result.model, "A", 0), _ranges(result.model, "B", 1), rtol=1e-5)
    spread = _ranges(result.model, "A", 0)
    assert spread.max() / spread.min() < _ranges(model, "A", 0).max() / _ranges(model, "A", 0).min()


def test_a_depthwise_layer_is_equalized_on_both_sides() -> None:
    model = _chain("Relu", depthwise=True)
    assert [(a.name, b.name) for a, b in conv_pairs(model.graph)] == [("A", "D"), ("D", "B")]
    result = EqualizePass().apply(model, RunContext())
    for feeds in _feeds(model, 3, seed=5):
        np.testing.assert_allclose(run_ort(result.model, feeds)["y"], run_ort(model, feeds)["y"], rtol=1e-4, atol=1e-5)
    # converged: both pairs are (nearly) equal at once
    np.testing.assert_allclose(_ranges(result.model, "A", 0), _ranges(result.model, "D", 0), rtol=1e-3)
    np.testing.assert_allclose(_ranges(result.model, "D", 0), _ranges(result.model, "B", 1), rtol=1e-3)


@pytest.mark.parametrize("act", ["Sigmoid", "HardSwish"])
def test_no_rewrite_through_an_activation_that_is_not_homogeneous(act: str) -> None:
    model = _chain(act)
    result = EqualizePass().apply(model, RunContext())
    assert not result.changed and result.model is model


def test_no_rewrite_when_the_first_output_has_another_reader() -> None:
    model = _chain("Relu")
    model.graph.output.append(helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 8, 8, 8]))
    assert conv_pairs(model.graph) == []
