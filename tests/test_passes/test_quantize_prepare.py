"""Tests of :class:`passes.quantize.PrepareForQuantizationPass` ("prepare-quantize").

Tiny Conv+BatchNormalization models built with ``onnx.helper``; numerics checked in onnxruntime
(graph optimizations off) against the input model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers import assert_equivalent, op_counts
from passes._base import EXACT, RunContext
from passes.quantize import PrepareForQuantizationPass, PrepareOptions
from passes.quantize._prepare import PER_TENSOR_NOTE

F = TensorProto.FLOAT


def _conv_bn(opset: int, *, constant_weight: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    bn = {"g": rng.uniform(0.5, 2.0, 4), "b": rng.standard_normal(4), "m": rng.standard_normal(4) * 0.1,
          "v": rng.uniform(0.5, 2.0, 4)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in bn.items()]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn", epsilon=1e-3)]
    if constant_weight:
        nodes.insert(0, helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(weight, "W")))
    else:
        inits.append(numpy_helper.from_array(weight, "W"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", F, [1, 4, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("constant_weight", [False, True])
def test_opset_11_conv_bn_becomes_opset_13_with_bn_folded(constant_weight):
    model = _conv_bn(11, constant_weight=constant_weight)
    original = model.SerializeToString()
    result = PrepareForQuantizationPass().apply(model, RunContext())
    out = result.model
    assert result.changed
    onnx.checker.check_model(out, full_check=True)
    assert _opset(out) == 13 and op_counts(out) == {"Conv": 1}
    assert out.graph.node[0].input[1] in {t.name for t in out.graph.initializer}  # a constant weight
    stats = result.stats
    assert (stats["opset_before"], stats["opset_after"], stats["bn_folded"]) == (11, 13, 1)
    assert stats["simplified"] == 1 and stats["opset_upgrade_failed"] == 0
    assert (stats["nodes_before"], stats["nodes_after"]) == (len(model.graph.node), 1)
    assert any("1 BatchNorm folded" in n for n in stats["notes"])
    assert any("opset upgraded 11 -> 13" in n for n in stats["notes"])
    assert model.SerializeToString() == original  # the input is never modified
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    assert_equivalent(model, out, feeds, tol=EXACT)


def test_second_run_changes_nothing():
    first = PrepareForQuantizationPass().apply(_conv_bn(11), RunContext())
    second = PrepareForQuantizationPass().apply(first.model, RunContext())
    assert first.changed and not second.changed
    assert second.model is first.model
    assert second.stats["bn_folded"] == 0 and second.stats["notes"] == []
    assert second.stats["opset_before"] == second.stats["opset_after"] == 13


def test_options_are_honoured():
    model = _conv_bn(11)
    no_simplify = PrepareForQuantizationPass(PrepareOptions(simplify=False)).apply(model, RunContext())
    assert no_simplify.changed and _opset(no_simplify.model) == 13
    assert "BatchNormalization" in op_counts(no_simplify.model) and no_simplify.stats["bn_folded"] == 0
    keep_opset = PrepareForQuantizationPass(PrepareOptions(min_opset=11)).apply(model, RunContext())
    assert _opset(keep_opset.model) == 11 and keep_opset.stats["bn_folded"] == 1
    assert not any("opset" in n for n in keep_opset.stats["notes"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        PrepareOptions().min_opset = 12  # type: ignore[misc]


def test_failed_upgrade_is_a_per_tensor_note_not_an_error():
    model = _conv_bn(11)
    result = PrepareForQuantizationPass(PrepareOptions(min_opset=999, simplify=False)).apply(model, RunContext())
    assert not result.changed and result.model is model
    assert result.stats["opset_upgrade_failed"] == 1 and result.stats["opset_after"] == 11
    (note,) = result.stats["notes"]
    assert note.startswith("opset 11 could not be upgraded to 999") and note.endswith(PER_TENSOR_NOTE)


def test_pass_metadata():
    assert PrepareForQuantizationPass.name == "prepare-quantize"
    assert PrepareForQuantizationPass.tolerance == EXACT


def test_dynamic_quantization_refuses_when_the_upgrade_fails(monkeypatch):
    """QuantizeDynamicPass prepares through this pass; an opset left too low is refused, not emitted."""
    from passes._errors import PreconditionError
    from passes.quantize import QuantizeDynamicPass
    from passes.quantize import _prepare

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", F, [2, 8])],
                              [helper.make_tensor_value_info("y", F, [2, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)], ir_version=7)
    assert QuantizeDynamicPass().apply(model, RunContext()).changed  # the upgrade to 11 works

    def broken(model, target):
        raise RuntimeError("no adapter for MatMul")

    monkeypatch.setattr(_prepare.version_converter, "convert_version", broken)
    with pytest.raises(PreconditionError, match=r"need opset 11, and opset 10 could not be upgraded to 11 "
                                                r"\(no adapter for MatMul\)"):
        QuantizeDynamicPass().apply(model, RunContext())


def test_decomposed_hardswish_is_one_activation_before_quantization():
    """paddle2onnx's x * clip(x + 3, 0, 6) / 6 after a Conv becomes x * HardSigmoid(x) (opset 13),
    the self-gate the int8 policy keeps float in one piece (rule (g))."""
    rng = np.random.default_rng(0)
    consts = {"W": (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32), "three": np.array(3.0, np.float32),
              "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "three"], ["a"], name="add"),
             helper.make_node("Clip", ["a", "zero", "six"], ["k"], name="clip"),
             helper.make_node("Mul", ["c", "k"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "six"], ["y"], name="div")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", F, [1, 4, 6, 6])],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    out = PrepareForQuantizationPass().apply(model, RunContext()).model
    assert op_counts(out) == {"Conv": 1, "HardSigmoid": 1, "Mul": 1}
    feeds = {"x": (3 * rng.standard_normal((1, 3, 6, 6))).astype(np.float32)}
    assert_equivalent(model, out, feeds, tol=EXACT)
