"""QuantizeDynamicPass: structure, numerics against fp32, exclusions, Conv, subgraphs, idempotence."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers import op_counts, run_ort
from onnxslim.runtime import make_session, run_model
from passes._base import RunContext
from passes.quantize._dynamic import DynamicQuantOptions, QuantizeDynamicPass

IR_VERSION, OPSET = 8, 13
FLOAT = TensorProto.FLOAT
INTEGER_CHAIN = {"DynamicQuantizeLinear": 1, "MatMulInteger": 1, "Cast": 1, "Mul": 2}


def _weight(rng: np.random.Generator, shape: tuple[int, ...], name: str) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, *, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def matmul_relu(*, opset: int = OPSET) -> onnx.ModelProto:
    """x [4, 32] → MatMul W [32, 16] → Relu → y."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [4, 32])],
                  [helper.make_tensor_value_info("y", FLOAT, [4, 16])], [_weight(rng, (32, 16), "w")], opset=opset)


def gemm(trans_b: int, *, alpha: float = 1.0, beta: float = 1.0) -> onnx.ModelProto:
    """x [3, 24] → Gemm(W, bias, transB, alpha, beta) → y [3, 10]."""
    rng = np.random.default_rng(1)
    w = _weight(rng, (10, 24) if trans_b else (24, 10), "w")
    bias = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "b")
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=trans_b, alpha=alpha, beta=beta)
    return _model([node], [helper.make_tensor_value_info("x", FLOAT, [3, 24])],
                  [helper.make_tensor_value_info("y", FLOAT, [3, 10])], [w, bias])


def two_matmuls_one_input() -> onnx.ModelProto:
    """x feeds two MatMuls (q/k-like projections) that are added."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["a"], name="proj_a"),
             helper.make_node("MatMul", ["x", "wb"], ["b"], name="proj_b"),
             helper.make_node("Add", ["a", "b"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [2, 5, 16])],
                  [helper.make_tensor_value_info("y", FLOAT, [2, 5, 8])],
                  [_weight(rng, (16, 8), "wa"), _weight(rng, (16, 8), "wb")])


def conv_relu() -> onnx.ModelProto:
    """x [1, 3, 8, 8] → Conv 4×3×3×3 (+bias, pads 1) → Relu → y."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", FLOAT, [1, 4, 8, 8])], [w, b])


def if_with_matmul() -> onnx.ModelProto:
    """A main-graph MatMul, then an If whose then-branch has its own MatMul on an outer weight."""
    rng = np.random.default_rng(4)
    then_graph = helper.make_graph([helper.make_node("MatMul", ["h", "w_inner"], ["t"], name="inner_mm")], "then", [],
                                   [helper.make_tensor_value_info("t", FLOAT, [4, 16])])
    else_graph = helper.make_graph([helper.make_node("Identity", ["h"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", FLOAT, [4, 16])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="outer_mm"),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [4, 32]),
                          helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                  [helper.make_tensor_value_info("y", FLOAT, [4, 16])],
                  [_weight(rng, (32, 16), "w"), _weight(rng, (16, 16), "w_inner")])


def _apply(model: onnx.ModelProto, **options) -> tuple[onnx.ModelProto, bool, dict]:
    result = QuantizeDynamicPass(DynamicQuantOptions(**options)).apply(model, RunContext())
    onnx.checker.check_model(result.model, full_check=True)
    return result.model, result.changed, dict(result.stats)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_close(before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict, *, min_cosine: float = 0.99) -> None:
    ref = run_ort(before, feeds)
    for graph_opt in ("disable", "all"):  # unfused chain, and the kernel ORT fuses it into
        got = run_model(make_session(after, graph_opt=graph_opt), feeds)
        for name in ref:
            assert got[name].shape == ref[name].shape
            assert _cosine(ref[name], got[name]) >= min_cosine, (name, graph_opt)


def _feeds(shape: tuple[int, ...], seed: int = 0, **extra) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32), **extra}


def test_matmul_becomes_the_integer_chain() -> None:
    model = matmul_relu()
    out, changed, stats = _apply(model)
    assert changed and stats["quantized: MatMul"] == 1 and stats["form"] == "integer"
    assert op_counts(out) == {**INTEGER_CHAIN, "Relu": 1}
    weights = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert "w" not in weights  # the float weight is gone
    quantized = [v for v in weights.values() if v.dtype == np.int8 and v.ndim == 2]
    assert len(quantized) == 1 and quantized[0].shape == (32, 16)
    assert [v.shape for v in weights.values() if v.dtype == np.float32 and v.ndim == 1] == [(16,)]  # per column
    assert stats["bytes_after"] < stats["bytes_before"]
    _assert_close(model, out, _feeds((4, 32)))


def test_per_tensor_and_reduce_range() -> None:
    model = matmul_relu()
    out, _, _ = _apply(model, per_channel=False, reduce_range=True)
    int8 = [numpy_helper.to_array(t) for t in out.graph.initializer if t.data_type == TensorProto.INT8]
    weight = next(v for v in int8 if v.ndim == 2)
    assert np.abs(weight).max() <= 63  # 7-bit symmetric
    assert all(numpy_helper.to_array(t).ndim == 0 for t in out.graph.initializer if t.data_type == FLOAT)
    _assert_close(model, out, _feeds((4, 32)))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_trans_b(trans_b: int) -> None:
    model = gemm(trans_b, alpha=0.5, beta=2.0)
    out, changed, stats = _apply(model)
    assert changed and stats["quantized: Gemm"] == 1
    assert op_counts(out) == {**INTEGER_CHAIN, "Add": 1}
    _assert_close(model, out, _feeds((3, 24)))


def test_shared_input_is_quantized_once() -> None:
    model = two_matmuls_one_input()
    out, _, stats = _apply(model)
    assert stats["quantized: MatMul"] == 2
    assert op_counts(out)["DynamicQuantizeLinear"] == 1 and op_counts(out)["MatMulInteger"] == 2
    _assert_close(model, out, _feeds((2, 5, 16)))


def test_exclusions_by_op_type_and_name() -> None:
    model = two_matmuls_one_input()
    out, _, stats = _apply(model, exclude_nodes=("proj_b",))
    assert stats["quantized: MatMul"] == 1 and stats["skipped: excluded by name"] == 1
    assert op_counts(out)["MatMul"] == 1
    same, changed, _ = _apply(model, exclude_ops=("MatMul",))
    assert not changed and same is model


def test_conv_left_float_by_default() -> None:
    model = conv_relu()
    result = QuantizeDynamicPass().apply(model, RunContext())
    assert result.changed is False and result.model is model
    assert result.stats["skipped: no eligible node"] == 1


def test_conv_u8u8_when_enabled() -> None:
    model = conv_relu()
    out, changed, stats = _apply(model, conv=True)
    assert changed and stats["quantized: Conv"] == 1
    conv = next(n for n in out.graph.node if n.op_type == "ConvInteger")
    types = {t.name: t.data_type for t in out.graph.initializer}
    assert types[conv.input[1]] == TensorProto.UINT8 and types[conv.input[3]] == TensorProto.UINT8  # never u8×s8
    assert [a.name for a in conv.attribute] == ["pads"]
    _assert_close(model, out, _feeds((1, 3, 8, 8)))


def test_subgraph_left_intact() -> None:
    model = if_with_matmul()
    out, changed, stats = _apply(model)
    assert changed and stats["quantized: MatMul"] == 1
    assert stats["skipped: inside a subgraph (left float)"] == 1
    if_node = next(n for n in out.graph.node if n.op_type == "If")
    original = next(n for n in model.graph.node if n.op_type == "If")
    assert if_node.SerializeToString() == original.SerializeToString()
    assert "w_inner" in {t.name for t in out.graph.initializer}  # still read by the branch
    for cond in (True, False):
        _assert_close(model, out, _feeds((4, 32), cond=np.array(cond)))


def test_idempotent_and_input_untouched() -> None:
    model = gemm(1)
    before = model.SerializeToString()
    out, _, _ = _apply(model)
    assert model.SerializeToString() == before
    again = QuantizeDynamicPass().apply(out, RunContext())
    assert again.changed is False and again.model is out
    assert again.stats["skipped: no eligible node"] == 1


def test_non_constant_weight_is_skipped_with_reason() -> None:
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="act_by_act")]
    model = _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [2, 3]), helper.make_tensor_value_info("w", FLOAT, [3, 4])],
                   [helper.make_tensor_value_info("y", FLOAT, [2, 4])], [])
    result = QuantizeDynamicPass().apply(model, RunContext())
    assert not result.changed and result.stats["skipped: no eligible node"] == 1


def test_weight_only_form() -> None:
    model = matmul_relu()
    out, changed, stats = _apply(model, weight_only=True)
    assert changed and stats["form"] == "weight-only"
    assert op_counts(out) == {"DequantizeLinear": 1, "MatMul": 1, "Relu": 1}
    dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear")
    assert [(a.name, a.i) for a in dq.attribute] == [("axis", 1)]
    _assert_close(model, out, _feeds((4, 32)), min_cosine=0.999)


def test_low_opset_is_raised_before_quantizing() -> None:
    model = matmul_relu(opset=10)
    out, changed, stats = _apply(model)
    assert changed and "prepare" in stats
    assert {o.domain: o.version for o in out.opset_import}[""] >= 11
    _assert_close(model, out, _feeds((4, 32)))


def test_lenet_keeps_its_accuracy(lenet_path) -> None:
    model = onnx.load(str(lenet_path))
    out, changed, stats = _apply(model)
    assert changed and stats["quantized: Gemm"] == 3 and "quantized: Conv" not in stats
    data = np.load(lenet_path.with_name("lenet5_digits_test.npz"))
    feeds = {"input": data["input"]}
    ref = run_ort(model, feeds)["logits"].argmax(1)
    got = run_model(make_session(out, graph_opt="all"), feeds)["logits"].argmax(1)
    assert (got == data["labels"]).mean() >= (ref == data["labels"]).mean() - 0.005
    assert (got == ref).mean() >= 0.99


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["ppocr-rec"])
def test_zoo_dynamic_is_valid_and_close(zoo_model, name: str) -> None:
    model = onnx.load(str(zoo_model(name)))
    out, changed, stats = _apply(model)
    kinds = collections.Counter(k.split(": ")[0] for k in stats if ": " in k)
    assert changed and kinds["quantized"] >= 1, stats
    feeds = _feeds((2, 3, 48, 320))
    feeds["x"] = np.clip(feeds["x"], -1, 1)
    _assert_close(model, out, feeds, min_cosine=0.99)


def test_low_opset_without_prepare_is_refused() -> None:
    from passes._errors import PreconditionError

    with pytest.raises(PreconditionError, match="opset 10 is below 11"):
        QuantizeDynamicPass(DynamicQuantOptions(prepare=False)).apply(matmul_relu(opset=10), RunContext())
