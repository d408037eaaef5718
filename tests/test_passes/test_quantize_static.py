"""Tests of :mod:`passes.quantize` (static QDQ): placement per rule, numerics, options, policy.

Tiny models are built with ``onnx.helper`` (IR 8, opset 17 unless said), seeded, calibrated with
:func:`calibration.collect.collect` on seeded random data, quantized, then checked for:
structure (op counts and edges), ``onnx.checker``, numerics in onnxruntime against the float
model (cosine >= 0.99 and an SQNR floor, STYLE §8d), and where it matters the fused graph
onnxruntime builds (``ORT_ENABLE_ALL`` + ``optimized_model_filepath``).
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers import op_counts, run_ort
from calibration.collect import collect
from passes._base import RunContext
from passes._errors import PreconditionError
from passes.quantize import RULES, PolicyOptions, QuantizeStaticPass, StaticQuantOptions

F = TensorProto.FLOAT
SQNR_FLOOR_DB = 20.0


# -- helpers -----------------------------------------------------------------------------------
def _w(*shape: int, seed: int = 0, scale: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred_graph = onnx.shape_inference.infer_shapes(model).graph
    inferred = {v.name: v for v in list(inferred_graph.value_info) + list(inferred_graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in inferred:
            out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model)
    return model


def _feeds(model: onnx.ModelProto, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sample = {}
        for v in model.graph.input:
            shape = [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
            sample[v.name] = rng.standard_normal(shape).astype(np.float32)
        out.append(sample)
    return out


def _quantize(model: onnx.ModelProto, options: StaticQuantOptions | None = None):
    table = collect(model, _feeds(model, 8, seed=1))
    result = QuantizeStaticPass(options).apply(model, RunContext(calibration=table))
    onnx.checker.check_model(result.model, full_check=True)
    return result


def _sqnr_cos(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    ref, got = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    noise = np.sum((ref - got) ** 2)
    sqnr = 10 * np.log10(np.sum(ref ** 2) / max(noise, 1e-30))
    cos = float(ref @ got / max(np.linalg.norm(ref) * np.linalg.norm(got), 1e-30))
    return float(sqnr), cos


def _assert_close(before: onnx.ModelProto, after: onnx.ModelProto, floor: float = SQNR_FLOOR_DB) -> None:
    """Cosine and SQNR on samples of the calibration distribution (the first 4 calibration samples:
    with 8 random samples a fresh draw often leaves the calibrated range, which tests coverage,
    not the quantizer)."""
    for feeds in _feeds(before, 4, seed=1):
        ref, got = run_ort(before, feeds), run_ort(after, feeds)
        for name in ref:
            sqnr, cos = _sqnr_cos(ref[name], got[name])
            assert cos >= 0.99 and sqnr >= floor, f"{name}: cosine {cos:.4f}, SQNR {sqnr:.1f} dB"


def _fused(model: onnx.ModelProto, tmp_path) -> dict[str, int]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return op_counts(onnx.load(opts.optimized_model_filepath))


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _dq_of(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == tensor)


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, F, shape)


def conv_relu_conv() -> onnx.ModelProto:
    """x -> Conv(W1,B1) -> Relu -> Conv(W2,B2) -> y  (the output comes straight from a Conv)."""
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    inits = {"W1": _w(8, 3, 3, 3), "B1": _w(8, seed=1), "W2": _w(4, 8, 3, 3, seed=2), "B2": _w(4, seed=3)}
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], inits)


# -- structure and numerics --------------------------------------------------------------------
def test_conv_chain_placement_numerics_and_fusion(tmp_path):
    model = conv_relu_conv()
    result = _quantize(model)
    q = result.model
    assert result.changed and result.stats["quantized: Conv"] == 2
    # Relu absorbed by the u8 clamp; x and r1 quantized; y (a graph output) stays float
    assert op_counts(q) == {"QuantizeLinear": 2, "DequantizeLinear": 6, "Conv": 2}
    assert result.stats["activations_absorbed"] == 1
    producer = {o: n for n in q.graph.node for o in n.output}
    assert producer["y"].op_type == "Conv"  # no Q/DQ on the graph output
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    assert conv1.output[0] == "r1" and producer[conv1.input[0]].op_type == "DequantizeLinear"
    _assert_close(model, q)
    fused = _fused(q, tmp_path)
    assert fused.get("QLinearConv") == 1  # conv2 runs float on dequantized values (output stays float)


def test_bias_is_int32_with_scale_sx_times_sw():
    q = _quantize(conv_relu_conv()).model
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    x_dq, w_dq, b_dq = (_dq_of(q, t) for t in conv1.input)
    s_x, s_w, s_b = (_init(q, n.input[1]) for n in (x_dq, w_dq, b_dq))
    assert _init(q, b_dq.input[0]).dtype == np.int32
    assert not _init(q, b_dq.input[2]).any() and _init(q, b_dq.input[2]).dtype == np.int32
    np.testing.assert_array_equal(s_b, (np.float32(s_x) * s_w).astype(np.float32))
    assert _init(q, w_dq.input[0]).dtype == np.int8
    b = np.asarray(_init(q, b_dq.input[0]), np.float64) * s_b
    np.testing.assert_allclose(b, _w(8, seed=1), atol=float(s_b.max()))


@pytest.mark.parametrize(("op", "trans_b", "w_shape", "axis"), [
    ("Conv", None, (8, 3, 3, 3), 0),
    ("Gemm", 1, (6, 12), 0),
    ("Gemm", 0, (12, 6), 1),
    ("MatMul", None, (12, 6), 1),
])
def test_per_channel_axis(op, trans_b, w_shape, axis):
    if op == "Conv":
        node = helper.make_node("Conv", ["x", "W"], ["h"], name="n")
        x, h = [1, 3, 5, 5], [1, 8, 3, 3]
    else:
        attrs = {"transB": trans_b} if op == "Gemm" else {}
        node = helper.make_node(op, ["x", "W"], ["h"], name="n", **attrs)
        x, h = [2, 12], [2, 6]
    model = _model([node, helper.make_node("Sigmoid", ["h"], ["y"])], [_vi("x", x)], [_vi("y", h)], {"W": _w(*w_shape)})
    q = _quantize(model).model
    n = next(n for n in q.graph.node if n.name == "n")
    w_dq = _dq_of(q, n.input[1])
    assert next(a.i for a in w_dq.attribute if a.name == "axis") == axis
    assert _init(q, w_dq.input[1]).shape == (w_shape[axis],)
    _assert_close(model, q)


def test_per_tensor_reduce_range_and_s8_options():
    model = conv_relu_conv()
    q = _quantize(model, StaticQuantOptions(per_channel=False, reduce_range=True, activations="s8")).model
    conv1 = next(n for n in q.graph.node if n.name == "conv1")
    w_dq = _dq_of(q, conv1.input[1])
    assert _init(q, w_dq.input[1]).shape == () and not any(a.name == "axis" for a in w_dq.attribute)
    assert np.abs(_init(q, w_dq.input[0])).max() <= 63  # 7-bit weights
    x_dq = _dq_of(q, conv1.input[0])
    assert _init(q, x_dq.input[2]).dtype == np.int8 and _init(q, x_dq.input[2]) == 0
    assert op_counts(q)["Relu"] == 1  # s8 symmetric cannot absorb the Relu
    _assert_close(model, q, floor=15.0)


# -- one test per op rule: conv -> OP -> conv --------------------------------------------------
UNARY = {
    "MaxPool": ({"kernel_shape": [2, 2]}, "MaxPool"),
    "AveragePool": ({"kernel_shape": [2, 2]}, "QLinearAveragePool"),
    "GlobalAveragePool": ({}, "QLinearGlobalAveragePool"),
    "Sigmoid": ({}, "QLinearSigmoid"),
    "LeakyRelu": ({"alpha": 0.1}, "QLinearLeakyRelu"),
    "Transpose": ({"perm": [0, 1, 3, 2]}, "Transpose"),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_rule_between_convs(op, tmp_path):
    attrs, fused_op = UNARY[op]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
             helper.make_node(op, ["a"], ["b"], name="op", **attrs),
             helper.make_node("Conv", ["b", "W2"], ["c"], name="conv2"),
             helper.make_node("Tanh", ["c"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], {"W1": _w(4, 3, 1, 1), "W2": _w(4, 4, 1, 1, seed=1)})
    result = _quantize(model)
    assert result.stats[f"quantized: {op}"] == 1
    q = result.model
    op_node = next(n for n in q.graph.node if n.name == "op")
    producer = {o: n for n in q.graph.node for o in n.output}
    assert producer[op_node.input[0]].op_type == "DequantizeLinear"
    assert {n.op_type for n, _ in _readers(q, op_node.output[0])} == {"QuantizeLinear"}
    if RULES[op].same_scale:  # input and output share scale and zero point
        out_q = next(n for n, _ in _readers(q, op_node.output[0]))
        in_dq = producer[op_node.input[0]]
        assert _init(q, out_q.input[1]) == _init(q, in_dq.input[1])
    fused = _fused(q, tmp_path)
    assert sum(n for o, n in fused.items() if fused_op in o) >= 1 and fused.get("QLinearConv") == 2, fused
    _assert_close(model, q, floor=15.0)


def _readers(model, tensor):
    return [(n, i) for n in model.graph.node for i, t in enumerate(n.input) if t == tensor]


@pytest.mark.parametrize(("op", "fused_op"), [("Add", "QLinearAdd"), ("Mul", "QLinearMul"), ("Concat", "QLinearConcat")])
def test_binary_rule_residual(op, fused_op, tmp_path):
    attrs = {"axis": 1} if op == "Concat" else {}
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
             helper.make_node("Conv", ["x", "W2"], ["b"], name="conv2"),
             helper.make_node(op, ["a", "b"], ["s"], name="op", **attrs),
             helper.make_node("Conv", ["s", "W3"], ["c"], name="conv3"),
             helper.make_node("Tanh", ["c"], ["y"])]
    c = 8 if op == "Concat" else 4
    model = _model(nodes, [_vi("x", [1, 3, 6, 6])], [_vi("y", None)],
                   {"W1": _w(4, 3, 1, 1), "W2": _w(4, 3, 1, 1, seed=1), "W3": _w(4, c, 1, 1, seed=2)})
    result = _quantize(model)
    assert result.stats[f"quantized: {op}"] == 1
    fused = _fused(result.model, tmp_path)
    assert fused.get(fused_op) == 1 and fused.get("QLinearConv") == 3, fused
    _assert_close(model, result.model, floor=15.0)


def test_reshape_flatten_share_scale_and_gemm_fuses(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "B2"], ["g"], transB=1, name="fc"),
             helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("Gemm", ["r", "W3"], ["y"], transB=1, name="out")]
    model = _model(nodes, [_vi("x", [1, 1, 8, 8])], [_vi("y", [1, 3])],
                   {"W1": _w(4, 1, 3, 3), "W2": _w(10, 36, seed=1), "B2": _w(10, seed=2), "W3": _w(3, 10, seed=3)})
    result = _quantize(model)
    assert result.stats["quantized: Flatten"] == 1 and result.stats["quantized: Gemm"] == 2
    fused = _fused(result.model, tmp_path)
    assert fused.get("QGemm", 0) >= 1 and fused.get("QLinearConv") == 1, fused
    _assert_close(model, result.model, floor=15.0)


def test_softmax_is_no_unit_and_runs_float(tmp_path):
    """QLinearSoftmax is slower than float Softmax on Q/DQ'd values, so Softmax has no rule: after a
    quantized Conv it reads the DQ output and runs in float (no Q is added behind it)."""
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
             helper.make_node("Softmax", ["a"], ["b"], name="op", axis=1),
             helper.make_node("Tanh", ["b"], ["t"]),
             helper.make_node("Conv", ["t", "W2"], ["y"], name="conv2")]
    model = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], {"W1": _w(4, 3, 1, 1), "W2": _w(4, 4, 1, 1, seed=1)})
    result = _quantize(model)
    assert "Softmax" not in RULES and "quantized: Softmax" not in result.stats
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] == "b" for n in result.model.graph.node)
    fused = _fused(result.model, tmp_path)
    assert fused.get("QLinearConv") == 1 and fused.get("Softmax") == 1 and "QLinearSoftmax" not in fused, fused
    _assert_close(model, result.model)


def test_split_outputs_share_the_input_scale_and_run_on_uint8(tmp_path):
    """Conv -> Split(2) -> two Convs -> Concat (a C2f block): every Split output reuses the input's
    scale and zero point, so onnxruntime runs the Split on uint8 with no Q/DQ around it."""
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="conv1"),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Split", ["r", "sizes"], ["s0", "s1"], name="split", axis=1),
             helper.make_node("Conv", ["s0", "W2"], ["c0"], name="conv2"),
             helper.make_node("Conv", ["s1", "W3"], ["c1"], name="conv3"),
             helper.make_node("Concat", ["c0", "c1", "s1"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "W4"], ["y"], name="conv4")]
    inits = {"W1": _w(8, 3, 1, 1), "B1": _w(8, seed=1), "sizes": np.array([4, 4], np.int64),
             "W2": _w(4, 4, 1, 1, seed=2), "W3": _w(4, 4, 1, 1, seed=3), "W4": _w(2, 12, 1, 1, seed=4)}
    model = _model(nodes, [_vi("x", [1, 3, 6, 6])], [_vi("y", [1, 2, 6, 6])], inits)
    result = _quantize(model)
    q = result.model
    assert result.stats["quantized: Split"] == 1
    split = next(n for n in q.graph.node if n.op_type == "Split")
    producer = {o: n for n in q.graph.node for o in n.output}
    assert producer[split.input[0]].op_type == "DequantizeLinear"
    params = {_init(q, _dq_of(q, t).input[1]).item() for t in
              [split.input[0]] + [_dq_of_reader(q, o) for o in split.output]}
    assert len(params) == 1, params  # one scale for the input and both outputs
    fused = _fused(q, tmp_path)
    assert fused.get("QLinearConv") == 3 and fused.get("QuantizeLinear") == 1, fused  # only x is quantized
    # the only DequantizeLinears left feed conv4, which writes the graph output in float
    assert fused.get("DequantizeLinear") == 2 and fused.get("Conv") == 1 and fused.get("Split") == 1, fused
    _assert_close(model, q, floor=15.0)


def _dq_of_reader(model: onnx.ModelProto, tensor: str) -> str:
    """The DequantizeLinear output that reads ``tensor``'s QuantizeLinear."""
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return next(n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])


def test_activation_matmul_stays_float():
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"], name="proj"),
             helper.make_node("Transpose", ["a"], ["at"], perm=[1, 0]),
             helper.make_node("MatMul", ["a", "at"], ["s"], name="attn"),
             helper.make_node("Softmax", ["s"], ["y"])]
    model = _model(nodes, [_vi("x", [4, 8])], [_vi("y", [4, 4])], {"W": _w(8, 8)})
    result = _quantize(model)
    assert result.stats["quantized: MatMul"] == 1
    assert result.stats["skipped: activation x activation MatMul"] == 1
    assert "attn" in result.stats["float_nodes"]
    _assert_close(model, result.model)


# -- options -----------------------------------------------------------------------------------
def test_exclude_op_and_exclude_node():
    model = conv_relu_conv()
    r1 = _quantize(model, StaticQuantOptions(exclude_nodes=("conv1",)))
    assert r1.stats["quantized: Conv"] == 1 and r1.stats["skipped: excluded node"] == 1
    assert r1.stats["float_nodes"]["conv1"] == "excluded node"
    r2 = _quantize(model, StaticQuantOptions(exclude_ops=("Conv",)))
    assert not r2.changed and r2.model is model and r2.stats["skipped: excluded op type"] == 2


def test_needs_calibration_and_is_idempotent():
    model = conv_relu_conv()
    with pytest.raises(PreconditionError):
        QuantizeStaticPass().apply(model, RunContext())
    q = _quantize(model).model
    again = QuantizeStaticPass().apply(q, RunContext(calibration=collect(model, _feeds(model, 2, 1))))
    assert not again.changed and again.model is q


# -- policy ------------------------------------------------------------------------------------
def test_concat_of_different_ranges_feeding_output_stays_float():
    """Boxes (0-320) concatenated with scores (0-1) into the one graph output."""
    nodes = [helper.make_node("Conv", ["x", "Wb"], ["b0"], name="box_conv"),
             helper.make_node("Mul", ["b0", "k"], ["boxes"], name="scale"),
             helper.make_node("Conv", ["x", "Ws"], ["s0"], name="score_conv"),
             helper.make_node("Sigmoid", ["s0"], ["scores"], name="sig"),
             helper.make_node("Concat", ["boxes", "scores"], ["cat"], axis=1, name="cat"),
             helper.make_node("Reshape", ["cat", "shape"], ["y"], name="flat")]
    inits = {"Wb": _w(4, 3, 1, 1), "Ws": _w(6, 3, 1, 1, seed=1), "k": np.array(100.0, np.float32),
             "shape": np.array([1, 10, -1], np.int64)}
    model = _model(nodes, [_vi("x", [1, 3, 5, 5])], [_vi("y", [1, 10, 25])], inits)
    result = _quantize(model)
    floats = result.stats["float_nodes"]
    assert {"cat", "flat", "sig"} <= set(floats), floats
    producer = {o: n for n in result.model.graph.node for o in n.output}
    assert producer["boxes"].op_type == "Mul" and producer["scores"].op_type == "Sigmoid"
    ref = run_ort(model, _feeds(model, 1, 1)[0])["y"]
    got = run_ort(result.model, _feeds(model, 1, 1)[0])["y"]
    scores_ref, scores_got = ref[:, 4:], got[:, 4:]
    # one u8 scale over 0..~300 would give errors ~0.6 on the scores; their own range gives ~0.01
    assert np.abs(scores_ref - scores_got).max() < 0.05
    _assert_close(model, result.model)


def test_state_path_stays_float():
    """state -> Gemm -> Tanh -> stateN (same shape as the input): a recurrent state path."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="enc"),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["state", "Ws"], ["h"], transB=1, name="state_fc"),
             helper.make_node("Gemm", ["f", "Wf"], ["g"], transB=1, name="in_fc"),
             helper.make_node("Add", ["h", "g"], ["a"], name="mix"),
             helper.make_node("Tanh", ["a"], ["stateN"]),
             helper.make_node("Gemm", ["stateN", "Wo"], ["y"], transB=1, name="out_fc")]
    inits = {"W": _w(2, 3, 1, 1), "Ws": _w(8, 8, seed=1), "Wf": _w(8, 18, seed=2), "Wo": _w(1, 8, seed=3)}
    model = _model(nodes, [_vi("x", [1, 3, 3, 3]), _vi("state", [1, 8])], [_vi("y", [1, 1]), _vi("stateN", [1, 8])], inits)
    result = _quantize(model)
    floats = result.stats["float_nodes"]
    assert floats["state_fc"].startswith("recurrent state path") and floats["mix"].startswith("recurrent")
    assert "enc" in result.stats["quantized_nodes"]
    _assert_close(model, result.model)


def test_weight_outlier_layer_stays_float():
    w = _w(8, 16, 3, 3)
    w[0, 0, 0, 0] = 60.0
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="outlier"),
             helper.make_node("Conv", ["c", "W2"], ["d"], name="normal"),
             helper.make_node("Tanh", ["d"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 16, 5, 5])], [_vi("y", None)], {"W": w, "W2": _w(4, 8, 1, 1, seed=1)})
    result = _quantize(model)
    assert result.stats["float_nodes"]["outlier"].startswith("weight outliers")
    off = _quantize(model, StaticQuantOptions(policy=PolicyOptions(weight_outlier_ratio=None)))
    assert off.stats["quantized: Conv"] == 2


# -- subgraphs, custom domains, preparation ----------------------------------------------------
def test_if_subgraph_left_intact_main_graph_quantized():
    then_g = helper.make_graph([helper.make_node("Relu", ["c"], ["t"])], "then", [], [_vi("t", None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["c"], ["e"])], "else", [], [_vi("e", None)])
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["i"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Conv", ["c", "W2"], ["y"], name="conv2")]
    inits = {"W": _w(4, 3, 1, 1), "W2": _w(2, 4, 1, 1, seed=1), "zero": np.array(0.0, np.float32)}
    model = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y", None), _vi("i", None)], inits)
    result = _quantize(model)
    q = result.model
    assert result.stats["quantized: Conv"] == 2
    if_node = next(n for n in q.graph.node if n.op_type == "If")
    assert [n.input[0] for a in if_node.attribute for n in a.g.node] == ["c", "c"]
    producer = {o: n for n in q.graph.node for o in n.output}
    assert producer["c"].op_type == "Conv"  # the subgraph still reads the exact float tensor
    _assert_close(model, q)


def test_custom_domain_node_left_intact():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("MyOp", ["c"], ["d"], domain="my.domain", name="custom"),
             helper.make_node("Conv", ["d", "W2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [_vi("x", [1, 3, 4, 4])], [_vi("y", [1, 2, 4, 4])],
                              [numpy_helper.from_array(_w(4, 3, 1, 1), "W"), numpy_helper.from_array(_w(2, 4, 1, 1), "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    model.ir_version = 8
    from calibration.table import CalibrationTable, TensorRange  # ORT cannot run the custom op

    table = CalibrationTable("x", "minmax", 1, {n: TensorRange(-1.0, 1.0) for n in ("x", "c", "d", "y")})
    result = QuantizeStaticPass().apply(model, RunContext(calibration=table))
    onnx.checker.check_model(result.model)
    custom = next(n for n in result.model.graph.node if n.domain == "my.domain")
    assert custom.op_type == "MyOp" and custom.output[0] == "d" and not custom.attribute  # untouched node
    producer = {o: n for n in result.model.graph.node for o in n.output}
    assert producer[custom.input[0]].op_type == "DequantizeLinear"  # reads c through its one Q/DQ pair
    assert result.stats["skipped: custom-domain op"] == 1 and result.stats["quantized: Conv"] == 2


def test_rules_table_names_what_ort_fuses():
    assert RULES["Conv"].ort_fused == "QLinearConv" and RULES["Gemm"].ort_fused == "QGemm"
    assert all(r.same_scale for op, r in RULES.items() if r.kind == "drop")
    assert "ConvTranspose" not in RULES  # onnxruntime 1.32 CPU does not fuse it (probed)
    kinds = collections.Counter(r.kind for r in RULES.values())
    assert set(kinds) == {"compute", "binary", "unary", "concat", "drop"}


@pytest.mark.parametrize("gate, policy", [
    ("HardSigmoid", PolicyOptions()),  # default: no int8 kernel for the gate -> float
    ("Sigmoid", PolicyOptions(float_self_gates=True)),  # asked: every gate float
])
def test_self_gated_activation_stays_float_and_conv_still_fuses(gate, policy, tmp_path):
    """x*gate(x) between two convs: gate and Mul float, both convs QLinearConv."""
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
             helper.make_node(gate, ["a"], ["g"], name="gate"),
             helper.make_node("Mul", ["a", "g"], ["s"], name="silu"),
             helper.make_node("Conv", ["s", "W2"], ["c"], name="conv2"),
             helper.make_node("Tanh", ["c"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 3, 6, 6])], [_vi("y", None)], {"W1": _w(4, 3, 1, 1), "W2": _w(4, 4, 1, 1, seed=1)})
    result = _quantize(model, StaticQuantOptions(policy=policy))
    floats = result.stats["float_nodes"]
    assert floats["silu"].startswith("self-gated")  # HardSigmoid has no rule at all: never listed
    assert gate == "HardSigmoid" or floats["gate"].startswith("self-gated")
    assert _fused(result.model, tmp_path).get("QLinearConv") == 2
    _assert_close(model, result.model)


def _silu_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], name="conv1"),
             helper.make_node("Sigmoid", ["a"], ["g"], name="gate"),
             helper.make_node("Mul", ["a", "g"], ["s"], name="silu"),
             helper.make_node("Conv", ["s", "W2"], ["c"], name="conv2"),
             helper.make_node("Tanh", ["c"], ["y"])]
    return _model(nodes, [_vi("x", [1, 3, 6, 6])], [_vi("y", None)],
                  {"W1": _w(4, 3, 1, 1), "W2": _w(4, 4, 1, 1, seed=1)})


@pytest.mark.parametrize("policy", [PolicyOptions(), PolicyOptions(float_self_gates=False)])
def test_sigmoid_self_gates_quantized_fuse_to_qlinear_sigmoid_and_mul(policy, tmp_path):
    """A lone Sigmoid gate has an int8 kernel: quantized by default (and when asked)."""
    model = _silu_model()
    result = _quantize(model, StaticQuantOptions(policy=policy))
    assert "gate" not in result.stats["float_nodes"] and "silu" not in result.stats["float_nodes"]
    fused = _fused(result.model, tmp_path)
    assert fused.get("QLinearConv") == 2 and fused.get("QLinearSigmoid") == 1 and fused.get("QLinearMul") == 1
    _assert_close(model, result.model)


def test_fallback_returns_a_self_gate_group_as_a_whole():
    """With quantized gates, the fallback floats producer, gate and Mul together (rule (g))."""
    model = _silu_model()
    table = collect(model, _feeds(model, 8, seed=1))
    opts = StaticQuantOptions(policy=PolicyOptions(float_self_gates=False), fallback_min_sqnr=200.0,
                              fallback_max_fraction=0.5)
    result = QuantizeStaticPass(opts).apply(model, RunContext(calibration=table, dataset=_feeds(model, 4, seed=1)))
    kept = result.stats["fallback: nodes kept float"]
    group = {"conv1", "gate", "silu"}
    assert group <= set(kept) or not group & set(kept), kept  # never a part of the group alone
    assert kept


def test_fallback_returns_units_to_float_with_data():
    model = conv_relu_conv()
    table = collect(model, _feeds(model, 8, seed=1))
    data = _feeds(model, 4, seed=1)
    strict = StaticQuantOptions(fallback_min_sqnr=200.0, fallback_max_fraction=0.5)
    result = QuantizeStaticPass(strict).apply(model, RunContext(calibration=table, dataset=data))
    assert result.stats["fallback: nodes kept float"] == ["conv1"]  # at most half of the 2 units
    assert result.stats["skipped: fallback (largest measured error)"] == 1
    easy = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=10.0)).apply(
        model, RunContext(calibration=table, dataset=data))
    assert easy.stats["fallback: nodes kept float"] == [] and easy.stats["fallback: output SQNR dB after"] > 10
