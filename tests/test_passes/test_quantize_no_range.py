"""Static quantization never skips silently for want of a calibrated range.

A float activation that a quantized node needs and the table lacks (an empty table, one made for
another graph, a tensor the data never gave a finite value) is a :class:`CalibrationError` naming
that tensor; tensors calibration does not measure (integer shape arithmetic) only leave their
node float, as before.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers import op_counts
from calibration.collect import collect
from calibration.table import CalibrationTable
from passes._base import RunContext
from passes._errors import CalibrationError
from passes.quantize import QuantizeStaticPass, StaticQuantOptions

F = TensorProto.FLOAT
NO_FALLBACK = StaticQuantOptions(fallback_min_sqnr=None)


def _model(nodes, outputs, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, 3, 6, 6])], outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _weights(*shape: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(np.float32)


def _two_convs() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    return _model(nodes, [helper.make_tensor_value_info("y", F, [1, 4, 6, 6])],
                  {"W1": _weights(8, 3, 3, 3), "W2": _weights(4, 8, 3, 3, seed=1)})


def _samples(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(count)]


def _without(table: CalibrationTable, *names: str) -> CalibrationTable:
    return dataclasses.replace(table, tensors={k: v for k, v in table.tensors.items() if k not in names})


def test_full_table_quantizes_both_convs() -> None:
    model = _two_convs()
    result = QuantizeStaticPass(NO_FALLBACK).apply(model, RunContext(calibration=collect(model, _samples())))
    assert result.changed and result.stats["quantized: Conv"] == 2


def test_empty_table_is_an_error_naming_the_first_needed_tensor() -> None:
    empty = CalibrationTable("sha", "minmax", 0, {})
    with pytest.raises(CalibrationError, match=r"no range for tensor 'x', the input of Conv 'conv1'.*\(it is empty\)"):
        QuantizeStaticPass(NO_FALLBACK).apply(_two_convs(), RunContext(calibration=empty))


@pytest.mark.parametrize(("missing", "message"), [
    ("r", r"no range for tensor 'r', the input of Conv 'conv2'.*ranges for 3 other tensors"),
    ("c1", r"no range for tensor 'c1', the output of Conv 'conv1'"),
])
def test_a_table_lacking_a_needed_tensor_is_an_error(missing: str, message: str) -> None:
    model = _two_convs()
    table = _without(collect(model, _samples()), missing)
    with pytest.raises(CalibrationError, match=message):
        QuantizeStaticPass(NO_FALLBACK).apply(model, RunContext(calibration=table))


def test_the_fallback_path_raises_too() -> None:
    model = _two_convs()
    table = _without(collect(model, _samples()), "r")
    with pytest.raises(CalibrationError, match="'r'"):
        QuantizeStaticPass().apply(model, RunContext(calibration=table, dataset=_samples()))


def test_a_tensor_the_data_never_made_finite_is_named() -> None:
    """sqrt(-|x| - 1) is NaN everywhere: calibration leaves it out, the Conv reading it needs it."""
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
             helper.make_node("Sub", ["n", "one"], ["s"]), helper.make_node("Sqrt", ["s"], ["nan"]),
             helper.make_node("Conv", ["nan", "W"], ["y"], name="conv")]
    model = _model(nodes, [helper.make_tensor_value_info("y", F, [1, 4, 4, 4])],
                   {"one": np.ones((), np.float32), "W": _weights(4, 3, 3, 3)})
    table = collect(model, _samples())
    assert "nan" not in table and table.stats["skipped"]["no finite values"] >= 1
    with pytest.raises(CalibrationError, match=r"no range for tensor 'nan', the input of Conv 'conv'"):
        QuantizeStaticPass(NO_FALLBACK).apply(model, RunContext(calibration=table))


def test_integer_shape_arithmetic_without_ranges_only_stays_float() -> None:
    """A Concat of two int64 shape pieces has no range (calibration measures floats only): the
    node stays float, which is no error."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["head"], end=2), helper.make_node("Shape", ["c"], ["tail"], start=2),
             helper.make_node("Concat", ["head", "tail"], ["shape"], name="cat", axis=0),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    model = _model(nodes, [helper.make_tensor_value_info("y", F, [1, 4, 6, 6])], {"W": _weights(4, 3, 3, 3)})
    table = collect(model, _samples())
    assert "shape" not in table and "head" not in table
    result = QuantizeStaticPass(NO_FALLBACK).apply(model, RunContext(calibration=table))
    assert result.stats["quantized: Conv"] == 1 and op_counts(result.model)["Concat"] == 1
    assert result.stats["float_nodes"]["cat"] == "no calibrated range for an input (not a float activation)"
