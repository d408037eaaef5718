"""Tests of :mod:`passes.simplify`: structure, numbers, skips, idempotence, onnxsim handling."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers import assert_equivalent, op_counts
from passes._base import EXACT, RunContext
from passes.simplify import SimplifyOptions, SimplifyPass

OWN_ONLY = SimplifyOptions(use_onnxsim=False)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 13,
    extra_opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        outputs,
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    imports = [helper.make_opsetid("", opset)]
    imports += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def _float(name: str, shape: list[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _bn_params(rng: np.random.Generator, channels: int, prefix: str = "bn") -> dict:
    return {
        f"{prefix}_s": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        f"{prefix}_b": rng.standard_normal(channels).astype(np.float32),
        f"{prefix}_m": rng.standard_normal(channels).astype(np.float32),
        f"{prefix}_v": rng.uniform(0.5, 2.0, channels).astype(np.float32),
    }


def _bn(x: str, y: str, prefix: str = "bn", **attrs) -> onnx.NodeProto:
    ins = [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"]
    return helper.make_node("BatchNormalization", ins, [y], name=prefix, epsilon=1e-3, **attrs)


def _run(model: onnx.ModelProto, options: SimplifyOptions = OWN_ONLY):
    result = SimplifyPass(options).apply(model, RunContext())
    onnx.checker.check_model(result.model, full_check=True)
    return result


def _check(before: onnx.ModelProto, options: SimplifyOptions, expected_ops: dict, feeds=None):
    result = _run(before, options)
    assert op_counts(result.model) == expected_ops
    assert_equivalent(before, result.model, feeds, tol=EXACT)
    return result


# ---------------------------------------------------------------------------------------------
# BatchNormalization folding


def _conv_bn(*, bias: bool, group: int = 1, channels: int = 4, c_in: int = 4, opset: int = 13):
    rng = _rng()
    inits = {"w": rng.standard_normal((channels, c_in // group, 3, 3)).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(channels).astype(np.float32)
        conv_inputs.append("b")
    inits.update(_bn_params(rng, channels))
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1], group=group),
        _bn("c", "n"),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    inputs, outputs = [_float("x", ["N", c_in, 5, 5])], [_float("y", ["N", channels, 5, 5])]
    return _model(nodes, inputs, outputs, inits, opset=opset)


@pytest.mark.parametrize(
    "bias, group, channels, c_in",
    [(True, 1, 4, 3), (False, 1, 4, 3), (True, 2, 4, 4), (False, 4, 4, 4)],
    ids=["conv_bias", "conv_no_bias", "grouped_conv", "depthwise_conv"],
)
def test_bn_folds_into_conv(bias, group, channels, c_in):
    model = _conv_bn(bias=bias, group=group, channels=channels, c_in=c_in)
    result = _check(model, OWN_ONLY, {"Conv": 1, "Relu": 1})
    assert result.changed
    assert result.stats["bn_folded"] == 1
    conv = result.model.graph.node[0]
    assert len(conv.input) == 3 and conv.output[0] == "n"
    assert {t.name for t in result.model.graph.initializer} == set(conv.input[1:])


def test_bn_folds_at_opset_9():
    model = _conv_bn(bias=True, c_in=3, opset=9)
    result = _check(model, OWN_ONLY, {"Conv": 1, "Relu": 1})
    assert result.stats["bn_folded"] == 1


@pytest.mark.parametrize("group", [1, 2])
def test_bn_folds_into_conv_transpose(group):
    rng = _rng()
    c_in, c_out = 4, 6
    inits = {
        "w": rng.standard_normal((c_in, c_out // group, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(c_out).astype(np.float32),
        **_bn_params(rng, c_out),
    }
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 2], group=group),
        _bn("c", "y"),
    ]
    model = _model(nodes, [_float("x", [1, c_in, 3, 3])], [_float("y", [1, c_out, 7, 7])], inits)
    result = _check(model, OWN_ONLY, {"ConvTranspose": 1})
    assert result.stats["bn_folded"] == 1


@pytest.mark.parametrize(
    "trans_b, alpha, beta, bias_shape",
    [(0, 1.0, 1.0, (5,)), (1, 1.0, 1.0, (5,)), (1, 0.5, 2.0, (1, 5)), (0, 1.5, 1.0, None)],
    ids=["transB0", "transB1", "alpha_beta_bias_1xN", "no_bias"],
)
def test_bn_folds_into_gemm(trans_b, alpha, beta, bias_shape):
    rng = _rng()
    k, n = 3, 5
    inits = {"w": rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)}
    gemm_inputs = ["x", "w"]
    if bias_shape is not None:
        inits["c"] = rng.standard_normal(bias_shape).astype(np.float32)
        gemm_inputs.append("c")
    inits.update(_bn_params(rng, n))
    nodes = [
        helper.make_node("Gemm", gemm_inputs, ["g"], transB=trans_b, alpha=alpha, beta=beta),
        _bn("g", "y"),
    ]
    model = _model(nodes, [_float("x", [2, k])], [_float("y", [2, n])], inits)
    result = _check(model, OWN_ONLY, {"Gemm": 1})
    assert result.stats["bn_folded"] == 1


def test_bn_not_folded_when_conv_output_has_another_consumer():
    model = _conv_bn(bias=True, c_in=3)
    model.graph.node.append(helper.make_node("Sigmoid", ["c"], ["z"]))
    model.graph.output.append(_float("z", ["N", 4, 5, 5]))
    expected = {"Conv": 1, "BatchNormalization": 1, "Relu": 1, "Sigmoid": 1}
    result = _check(model, OWN_ONLY, expected)
    assert result.stats["bn_folded"] == 0
    assert result.stats["skipped: bn producer has other users"] == 1
    assert not result.changed


def test_bn_not_folded_when_conv_output_is_a_graph_output():
    model = _conv_bn(bias=False, c_in=3)
    model.graph.output.append(_float("c", ["N", 4, 5, 5]))
    result = _check(model, OWN_ONLY, {"Conv": 1, "BatchNormalization": 1, "Relu": 1})
    assert result.stats["skipped: bn producer output is a graph output"] == 1
    assert not result.changed


def test_bn_not_folded_when_its_parameters_are_overridable_inputs():
    model = _conv_bn(bias=True, c_in=3)
    model.graph.input.append(_float("bn_s", [4]))
    result = _check(model, OWN_ONLY, {"Conv": 1, "BatchNormalization": 1, "Relu": 1})
    assert result.stats["skipped: bn parameters not constant"] == 1


def test_bn_folds_conv_weight_from_constant_node():
    model = _conv_bn(bias=True, c_in=3)
    weight = next(t for t in model.graph.initializer if t.name == "w")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["w"], value=weight))
    model.graph.initializer.remove(weight)
    result = _check(model, OWN_ONLY, {"Conv": 1, "Relu": 1})
    assert result.stats["bn_folded"] == 1
    assert result.stats["constant_nodes_removed"] == 1


# ---------------------------------------------------------------------------------------------
# Identity and Dropout

IDENTITY_CHAIN = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x) => (float[N,4] y, float[N,4] x_copy) {
  a = Identity(x)
  r = Relu(a)
  y = Identity(r)
  x_copy = Identity(x)
}
"""


def test_identity_removed_and_graph_output_names_kept():
    model = onnx.parser.parse_model(IDENTITY_CHAIN)
    result = _check(model, OWN_ONLY, {"Relu": 1, "Identity": 1})
    assert result.stats["identity_removed"] == 2
    assert [o.name for o in result.model.graph.output] == ["y", "x_copy"]
    relu = next(n for n in result.model.graph.node if n.op_type == "Relu")
    assert list(relu.input) == ["x"] and list(relu.output) == ["y"]
    kept = "skipped: identity from a graph input or initializer to a graph output"
    assert result.stats[kept] == 1


def test_identity_pair_copying_one_value_to_two_outputs_keeps_one():
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x) => (float[N,4] y1, float[N,4] y2) {
  r = Relu(x)
  y1 = Identity(r)
  y2 = Identity(r)
}
""")
    result = _check(model, OWN_ONLY, {"Relu": 1, "Identity": 1})
    assert result.stats["identity_removed"] == 1
    assert result.stats["skipped: identity between two graph outputs"] == 1


@pytest.mark.parametrize("use_onnxsim", [False, True])
def test_dropout_removed_at_opset_10(use_onnxsim):
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 10]>
g (float[N,4] x) => (float[N,4] y) {
  r = Relu(x)
  d = Dropout <ratio: float = 0.3> (r)
  y = Sigmoid(d)
}
""")
    result = _check(model, SimplifyOptions(use_onnxsim=use_onnxsim), {"Relu": 1, "Sigmoid": 1})
    if not use_onnxsim:
        assert result.stats["dropout_removed"] == 1


def test_dropout_removed_at_opset_13_with_constant_false_training_mode():
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x) => (float[N,4] y) {
  ratio = Constant <value: tensor = float {0.5}> ()
  train = Constant <value: tensor = bool {0}> ()
  d, mask = Dropout(x, ratio, train)
  y = Relu(d)
}
""")
    result = _check(model, OWN_ONLY, {"Relu": 1})
    assert result.stats["dropout_removed"] == 1
    assert result.stats["constant_nodes_removed"] == 2


def test_dropout_in_training_mode_kept():
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x) => (float[N,4] y) {
  ratio = Constant <value: tensor = float {0.5}> ()
  train = Constant <value: tensor = bool {1}> ()
  d = Dropout(x, ratio, train)
  y = Relu(d)
}
""")
    result = _run(model)
    assert op_counts(result.model) == {"Constant": 2, "Dropout": 1, "Relu": 1}
    assert result.stats["skipped: dropout training_mode is true"] == 1
    assert not result.changed


# ---------------------------------------------------------------------------------------------
# Initializer deduplication


def test_identical_initializers_deduplicated_different_kept():
    rng = _rng()
    a = rng.standard_normal(4).astype(np.float32)
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x) => (float[N,4] y) {
  p = Mul(x, a)
  q = Add(p, b)
  y = Sub(q, c)
}
""")
    model.graph.initializer.extend([
        numpy_helper.from_array(a, "a"),
        numpy_helper.from_array(a.copy(), "b"),
        numpy_helper.from_array(a + 1, "c"),
    ])
    result = _check(model, OWN_ONLY, {"Mul": 1, "Add": 1, "Sub": 1})
    assert result.stats["initializers_deduplicated"] == 1
    assert sorted(t.name for t in result.model.graph.initializer) == ["a", "c"]


def test_initializer_that_is_a_graph_input_not_deduplicated():
    a = np.arange(4, dtype=np.float32)
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x, float[4] b) => (float[N,4] y) {
  p = Mul(x, a)
  y = Add(p, b)
}
""")
    model.graph.initializer.extend([numpy_helper.from_array(a, n) for n in ("a", "b")])
    result = _run(model)
    assert result.stats["initializers_deduplicated"] == 0
    assert result.stats["skipped: duplicate initializer is a graph input or output"] == 1
    assert not result.changed


# ---------------------------------------------------------------------------------------------
# Subgraphs and custom domains


def _if_model() -> onnx.ModelProto:
    """``xi = Identity(x)``; then: ``xi + w2``, else: ``xi * w1``; ``w1`` and ``w2`` equal."""
    w = _rng().standard_normal(4).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["xi", "w2"], ["t"])], "then", [], [_float("t", ["N", 4])]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Mul", ["xi", "w1"], ["e"])], "else", [], [_float("e", ["N", 4])]
    )
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    inputs = [_float("x", ["N", 4]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    return _model(nodes, inputs, [_float("y", ["N", 4])], {"w1": w, "w2": w.copy()})


@pytest.mark.parametrize("use_onnxsim", [False, True])
def test_if_branches_follow_identity_removal_and_dedup(use_onnxsim):
    model = _if_model()
    result = _run(model, SimplifyOptions(use_onnxsim=use_onnxsim))
    assert op_counts(result.model) == {"If": 1}
    assert len(result.model.graph.initializer) == 1
    x = _rng().standard_normal((3, 4)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        assert_equivalent(model, result.model, feeds, tol=EXACT)


CUSTOM = """
<ir_version: 8, opset_import: ["" : 13, "com.example" : 1]>
g (float[N,4] x) => (float[N,4] y) {
  i = Identity(x)
  t = com.example.Foo <alpha: float = 2.0> (i)
  y = Relu(t)
}
"""


def test_custom_domain_node_kept_and_own_rewrites_run():
    model = onnx.parser.parse_model(CUSTOM)
    result = SimplifyPass().apply(model, RunContext())
    onnx.checker.check_model(result.model)
    assert op_counts(result.model) == {"Foo": 1, "Relu": 1}
    foo = next(n for n in result.model.graph.node if n.op_type == "Foo")
    assert foo.domain == "com.example" and list(foo.input) == ["x"]
    assert foo.attribute[0].f == 2.0
    assert [o.name for o in result.model.graph.output] == ["y"]


def test_onnxsim_failure_recorded_and_own_rewrites_still_run(monkeypatch):
    import onnxsim

    def broken(model, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    model = onnx.parser.parse_model(CUSTOM)
    result = SimplifyPass().apply(model, RunContext())
    assert result.stats["onnxsim"] == "failed: RuntimeError: boom second line"  # the whole message, on one line
    assert result.stats["identity_removed"] == 1
    assert op_counts(result.model) == {"Foo": 1, "Relu": 1}


def test_onnxsim_result_with_more_nodes_rejected(monkeypatch):
    import onnxsim

    def bloating(model, **kwargs):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.node.append(helper.make_node("Relu", ["x"], ["unused"]))
        return out, True

    monkeypatch.setattr(onnxsim, "simplify", bloating)
    result = SimplifyPass().apply(onnx.parser.parse_model(IDENTITY_CHAIN), RunContext())
    assert result.stats["onnxsim"].startswith("rejected: more nodes after onnxsim")
    assert op_counts(result.model) == {"Relu": 1, "Identity": 1}


def test_onnxsim_result_with_other_interface_rejected(monkeypatch):
    import onnxsim

    def renaming(model, **kwargs):
        out = onnx.ModelProto()
        out.CopyFrom(model)
        out.graph.output[0].name = "renamed"
        return out, True

    monkeypatch.setattr(onnxsim, "simplify", renaming)
    result = SimplifyPass().apply(onnx.parser.parse_model(IDENTITY_CHAIN), RunContext())
    assert result.stats["onnxsim"] == "rejected: onnxsim changed the graph outputs"


def test_onnxsim_console_output_is_captured(monkeypatch, capfd, caplog):
    import onnxsim

    real = onnxsim.simplify

    def chatty(model, **kwargs):
        print("python-level chatter")
        os.write(1, b"fd-level chatter\n")
        sys.stderr.write("stderr chatter\n")
        return real(model, **kwargs)

    monkeypatch.setattr(onnxsim, "simplify", chatty)
    caplog.set_level("DEBUG", logger="passes.simplify")
    SimplifyPass().apply(onnx.parser.parse_model(IDENTITY_CHAIN), RunContext())
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "python-level chatter" in logged and "fd-level chatter" in logged


# ---------------------------------------------------------------------------------------------
# The onnxsim path, the interface, and the contract


def _shape_model() -> onnx.ModelProto:
    """A Reshape whose target shape and a Mul whose operand onnxsim can compute."""
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3,4] x) => (float[2,12] y) {
  shape = Shape(x)
  zero = Constant <value: tensor = int64 {0}> ()
  batch = Gather <axis: int = 0> (shape, zero)
  batch1 = Unsqueeze(batch, axes)
  rest = Constant <value: tensor = int64[1] {-1}> ()
  target = Concat <axis: int = 0> (batch1, rest)
  r = Reshape(x, target)
  two = Add(c1, c2)
  y = Mul(r, two)
}
""")
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.full(12, 0.5, np.float32), "c1"),
        numpy_helper.from_array(np.full(12, 1.5, np.float32), "c2"),
    ])
    return model


def test_onnxsim_folds_constant_subgraph():
    model = _shape_model()
    result = _check(model, SimplifyOptions(), {"Reshape": 1, "Mul": 1})
    assert result.stats["onnxsim"] == "ok"
    assert result.stats["nodes_before"] == 9 and result.stats["nodes_after"] == 2


def test_onnxsim_keeps_dynamic_dims_and_overridable_initializers():
    model = _conv_bn(bias=True, c_in=3)
    model.graph.input.append(_float("b", [4]))  # the conv bias may be fed by the caller
    expected = {"Conv": 1, "BatchNormalization": 1, "Relu": 1}
    result = _check(model, SimplifyOptions(), expected)
    assert [v.name for v in result.model.graph.input] == ["x", "b"]
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert result.model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    b = np.ones(4, np.float32)
    feeds = {"x": _rng().standard_normal((2, 3, 5, 5)).astype(np.float32), "b": b}
    assert_equivalent(model, result.model, feeds, tol=EXACT)


def test_onnxsim_and_own_rewrites_together():
    model = _conv_bn(bias=True, c_in=3)
    result = _check(model, SimplifyOptions(), {"Conv": 1, "Relu": 1})
    assert result.stats["onnxsim"] == "ok"


@pytest.mark.parametrize("use_onnxsim", [False, True])
@pytest.mark.parametrize(
    "build",
    [
        lambda: _conv_bn(bias=False, group=2, c_in=4),
        lambda: onnx.parser.parse_model(IDENTITY_CHAIN),
        _if_model,
        _shape_model,
        lambda: onnx.parser.parse_model(CUSTOM),
    ],
    ids=["conv_bn", "identity_chain", "if_model", "shape_model", "custom_domain"],
)
def test_second_run_changes_nothing_and_input_untouched(build, use_onnxsim):
    options = SimplifyOptions(use_onnxsim=use_onnxsim)
    model = build()
    before = model.SerializeToString()
    first = SimplifyPass(options).apply(model, RunContext())
    assert model.SerializeToString() == before
    once = first.model.SerializeToString()
    assert first.changed == (once != before)
    second = SimplifyPass(options).apply(first.model, RunContext())
    assert not second.changed
    assert second.model.SerializeToString() == once


def test_model_without_targets_unchanged():
    model = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 13]>
g (float[N,4] x) => (float[N,4] y) {
  r = Relu(x)
  y = Sigmoid(r)
}
""")
    before = model.SerializeToString()
    result = SimplifyPass().apply(model, RunContext())
    assert not result.changed
    assert result.model.SerializeToString() == before
    assert result.stats["onnxsim"] == "ok: no change"
    assert result.stats["nodes_before"] == result.stats["nodes_after"] == 2


def test_stats_keys():
    result = SimplifyPass().apply(_conv_bn(bias=True, c_in=3), RunContext())
    keys = ("onnxsim", "nodes_before", "nodes_after", "bn_folded", "identity_removed")
    keys += ("dropout_removed", "initializers_deduplicated")
    assert all(key in result.stats for key in keys)
    assert SimplifyPass.name == "simplify" and SimplifyPass.tolerance == EXACT


def test_bn_in_training_mode_kept():
    model = _conv_bn(bias=True, c_in=3, opset=15)
    bn = model.graph.node[1]
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    result = SimplifyPass(OWN_ONLY).apply(model, RunContext())
    assert op_counts(result.model) == {"Conv": 1, "BatchNormalization": 1, "Relu": 1}
    assert result.stats["skipped: bn in training mode"] == 1


def test_gemm_with_per_row_bias_not_folded():
    rng = _rng()
    inits = {
        "w": rng.standard_normal((3, 5)).astype(np.float32),
        "c": rng.standard_normal((2, 5)).astype(np.float32),
        **_bn_params(rng, 5),
    }
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"]), _bn("g", "y")]
    model = _model(nodes, [_float("x", [2, 3])], [_float("y", [2, 5])], inits)
    result = _check(model, OWN_ONLY, {"Gemm": 1, "BatchNormalization": 1})
    assert result.stats["skipped: gemm bias shape not [N] or [1, N]"] == 1


def test_model_over_size_limit_skips_onnxsim_only():
    model = onnx.parser.parse_model(IDENTITY_CHAIN)
    result = _run(model, SimplifyOptions(onnxsim_size_limit_bytes=10))
    assert result.stats["onnxsim"].startswith("skipped: model is ")
    assert result.stats["identity_removed"] == 2


# ---------------------------------------------------------------------------------------------
# HardSwish recomposition (paddle2onnx writes x * clip(x + 3, 0, 6) / 6)


def _hardswish_model(*, opset: int, last: str = "div", swap: bool = False, clip_attrs: bool = False,
                     shared: bool = False, three: float = 3.0, overridable: bool = False) -> onnx.ModelProto:
    rng = _rng()
    inits = {"W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "three": np.array(three, np.float32),
             "six": np.array(6.0, np.float32), "sixth": np.array(1 / 6, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["three", "c"] if swap else ["c", "three"], ["a"], name="add")]
    if clip_attrs:
        nodes.append(helper.make_node("Clip", ["a"], ["k"], name="clip", min=0.0, max=6.0))
    else:
        inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
        nodes.append(helper.make_node("Clip", ["a", "lo", "hi"], ["k"], name="clip"))
    nodes.append(helper.make_node("Mul", ["k", "c"] if swap else ["c", "k"], ["m"], name="mul"))
    nodes.append(helper.make_node("Div", ["m", "six"], ["y"], name="div") if last == "div"
                 else helper.make_node("Mul", ["m", "sixth"], ["y"], name="scale"))
    outputs = [_float("y", [1, 4, 8, 8])] + ([_float("k", [1, 4, 8, 8])] if shared else [])
    inputs = [_float("x", [1, 3, 8, 8])] + ([_float("three", [])] if overridable else [])
    return _model(nodes, inputs, outputs, inits, opset=opset)


def _wide_feeds() -> dict[str, np.ndarray]:
    return {"x": (4 * _rng().standard_normal((1, 3, 8, 8))).astype(np.float32)}  # both clip bounds reached


@pytest.mark.parametrize(("opset", "last", "swap", "clip_attrs", "expected"), [
    (13, "div", False, False, {"Conv": 1, "HardSigmoid": 1, "Mul": 1}),
    (12, "mul", True, False, {"Conv": 1, "HardSigmoid": 1, "Mul": 1}),
    (10, "div", True, True, {"Conv": 1, "HardSigmoid": 1, "Mul": 1}),
    (14, "div", False, False, {"Conv": 1, "HardSwish": 1}),
    (17, "mul", True, False, {"Conv": 1, "HardSwish": 1}),
])
def test_decomposed_hardswish_becomes_one_activation(opset, last, swap, clip_attrs, expected) -> None:
    model = _hardswish_model(opset=opset, last=last, swap=swap, clip_attrs=clip_attrs)
    feeds = _wide_feeds()
    result = _run(model)
    assert op_counts(result.model) == expected
    assert result.stats["hardswish_recomposed"] == 1
    assert [o.name for o in result.model.graph.output] == ["y"]
    assert_equivalent(model, result.model, feeds, tol=EXACT)


@pytest.mark.parametrize("kind", ["shared", "wrong constant", "overridable constant"])
def test_hardswish_lookalikes_are_left_alone(kind) -> None:
    model = _hardswish_model(opset=13, shared=kind == "shared", three=2.5 if kind == "wrong constant" else 3.0,
                             overridable=kind == "overridable constant")
    result = _run(model)
    assert result.stats["hardswish_recomposed"] == 0
    assert op_counts(result.model)["Clip"] == 1
    assert_equivalent(model, result.model, _wide_feeds(), tol=EXACT)
    if kind == "shared":
        assert result.stats["skipped: HardSwish pattern with a shared intermediate"] == 1


def test_hardswish_recomposition_can_be_turned_off() -> None:
    model = _hardswish_model(opset=13)
    result = _run(model, SimplifyOptions(use_onnxsim=False, recompose_hardswish=False))
    assert op_counts(result.model)["Clip"] == 1 and result.stats["hardswish_recomposed"] == 0
