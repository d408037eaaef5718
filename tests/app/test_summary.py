"""Golden tests of ``onnxslim.summary``: params, MACs by hand, shapes, rendering."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers import run_ort
from onnxslim.report import human_count, render_summary
from onnxslim.runtime import parse_shape_option
from onnxslim.summary import ModelSummary, summarize
from passes._errors import DataError, OnnxSlimError, UsageError

OPSET = 17
LENET_PARAMS = 61_706  # 156 + 2,416 + 48,120 + 10,164 + 850
LENET_MACS = 416_520  # 117,600 + 240,000 + 48,000 + 10,080 + 840 at batch 1


def _weights(rng: np.random.Generator, name: str, *shape: int, dtype=np.float32):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def _model(nodes, inputs, outputs, inits=(), *, opsets=(("", OPSET),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, list(inits))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _one_op(op: str, x_shape, w_shape, y_shape, **attrs) -> onnx.ModelProto:
    w = _weights(np.random.default_rng(0), "w", *w_shape)
    node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    return _model([node], [_float("x", x_shape)], [_float("y", y_shape)], [w])


def lenet(batch: int | str = "batch") -> onnx.ModelProto:
    """LeNet-5 as bundled: input [batch,1,32,32] -> logits [batch,10]."""
    rng = np.random.default_rng(0)
    inits = [
        _weights(rng, "conv1.w", 6, 1, 5, 5), _weights(rng, "conv1.b", 6),
        _weights(rng, "conv2.w", 16, 6, 5, 5), _weights(rng, "conv2.b", 16),
        _weights(rng, "fc1.w", 120, 400), _weights(rng, "fc1.b", 120),
        _weights(rng, "fc2.w", 84, 120), _weights(rng, "fc2.b", 84),
        _weights(rng, "fc3.w", 10, 84), _weights(rng, "fc3.b", 10),
    ]  # fmt: skip
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], **pool),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], **pool),
        helper.make_node("Flatten", ["p2"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc1.w", "fc1.b"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "fc2.w", "fc2.b"], ["g2"], transB=1),
        helper.make_node("Relu", ["g2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "fc3.w", "fc3.b"], ["logits"], transB=1),
    ]
    inputs, outputs = [_float("input", [batch, 1, 32, 32])], [_float("logits", [batch, 10])]
    return _model(nodes, inputs, outputs, inits)


def _macs(summary: ModelSummary) -> dict[str, int | None]:
    return {m.op_type: m.macs for m in summary.macs_by_op}


# ----------------------------------------------------------------------------- MACs by op


def test_conv_group_pad_stride_macs():
    # X [1,4,9,7], W [6,2,3,2] (group=2 -> C_in/group=2), pads (1,0,1,0), strides (2,1):
    # H_out = (9+1+1-3)//2+1 = 5, W_out = (7-2)//1+1 = 6  ->  Y [1,6,5,6].
    # MACs = N·C_out·H_out·W_out·(C_in/group)·kh·kw = 1·6·5·6·2·3·2 = 2,160.
    model = _one_op(
        "Conv", [1, 4, 9, 7], [6, 2, 3, 2], [1, 6, 5, 6], group=2, pads=[1, 0, 1, 0], strides=[2, 1]
    )
    x = np.random.default_rng(1).standard_normal((1, 4, 9, 7)).astype(np.float32)
    assert run_ort(model, {"x": x})["y"].shape == (1, 6, 5, 6)  # the hand-derived shape holds
    summary = summarize(model)
    assert _macs(summary) == {"Conv": 2_160}
    assert summary.total_macs == 2_160 and summary.macs_unknown_nodes == 0


def test_conv_transpose_group_macs():
    # X [1,4,5,5], W [C_in=4, C_out/group=3, 3, 3], group=2 -> C_out = 6; stride 2:
    # Y spatial (5-1)·2+3 = 11.
    # MACs = N·C_in·H_in·W_in·(C_out/group)·kh·kw = 1·4·5·5·3·3·3 = 2,700.
    model = _one_op(
        "ConvTranspose", [1, 4, 5, 5], [4, 3, 3, 3], [1, 6, 11, 11], group=2, strides=[2, 2]
    )
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 5)).astype(np.float32)
    assert run_ort(model, {"x": x})["y"].shape == (1, 6, 11, 11)
    assert _macs(summarize(model)) == {"ConvTranspose": 2_700}


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs"),
    [
        ([3, 5], [7, 5], {"transB": 1}),  # A [M=3,K=5], B [N=7,K=5]
        ([5, 3], [5, 7], {"transA": 1}),  # A [K=5,M=3], B [K=5,N=7]
        ([5, 3], [7, 5], {"transA": 1, "transB": 1}),
    ],
)
def test_gemm_macs_respect_transposes(x_shape, w_shape, attrs):
    # M·K·N = 3·5·7 = 105 whichever way A and B are stored.
    model = _one_op("Gemm", x_shape, w_shape, [3, 7], **attrs)
    assert _macs(summarize(model)) == {"Gemm": 105}


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "y_shape", "macs"),
    [
        ([2, 1, 3, 4], [5, 4, 6], [2, 5, 3, 6], 2 * 5 * 3 * 4 * 6),  # batch [2,1]x[5] -> [2,5]: 720
        ([4], [2, 4, 6], [2, 6], 2 * 4 * 6),  # 1-D A: no M -> 48
        ([2, 3, 4], [4], [2, 3], 2 * 3 * 4),  # 1-D B: no N -> 24
        ([4], [4], [], 4),  # dot product
    ],
)
def test_matmul_macs_broadcast_and_1d(a_shape, b_shape, y_shape, macs):
    model = _one_op("MatMul", a_shape, b_shape, y_shape)
    assert _macs(summarize(model)) == {"MatMul": macs}


def test_matmul_activation_times_activation_with_symbolic_dims():
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"])]
    model = _model(nodes, [_float("q", ["b", "seq", 8]), _float("k", ["b", 8, "seq"])],
                   [_float("s", ["b", "seq", "seq"])])  # fmt: skip
    assert summarize(model).total_macs is None
    fixed = summarize(model, shapes={"q": (2, 10, 8), "k": (2, 8, 10)})
    assert fixed.total_macs == 2 * 10 * 8 * 10


# ----------------------------------------------------------------------------- params


def test_params_by_dtype_over_initializers_and_constants():
    rng = np.random.default_rng(0)
    inits = [
        _weights(rng, "w32", 3, 4),  # float32: 12 params, 48 bytes
        _weights(rng, "h16", 10, dtype=np.float16),  # float16: 10 params, 20 bytes
        numpy_helper.from_array(np.array([2, 2, 3], np.int64), "shape"),  # int64: 3, 24 bytes
    ]
    c32 = helper.make_tensor("c", TensorProto.FLOAT, [2, 2], rng.standard_normal(4).tolist())
    nodes = [
        helper.make_node("Add", ["x", "w32"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["r"]),
        helper.make_node("Cast", ["h16"], ["hc"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["c"], value=c32),  # float32: 4 params, 16 bytes
        helper.make_node("Constant", [], ["ci"], value_ints=[1, 2]),  # int64: 2, 16 bytes
    ]
    outputs = [_float("r", [2, 2, 3]), _float("hc", [10]), _float("c", [2, 2]),
               helper.make_tensor_value_info("ci", TensorProto.INT64, [2])]  # fmt: skip
    summary = summarize(_model(nodes, [_float("x", [3, 4])], outputs, inits))
    by_dtype = {p.dtype: (p.count, p.bytes) for p in summary.params_by_dtype}
    assert by_dtype == {"float32": (16, 64), "float16": (10, 20), "int64": (5, 40)}
    assert (summary.total_params, summary.total_param_bytes) == (31, 124)
    assert summary.to_dict()["params_by_dtype"]["int64"] == {"count": 5, "bytes": 40}


def _if_model() -> onnx.ModelProto:
    def branch(name: str, value: float) -> onnx.GraphProto:
        const = helper.make_tensor(f"{name}_v", TensorProto.FLOAT, [3], [value] * 3)
        nodes = [
            helper.make_node("Constant", [], [f"{name}_c"], value=const),
            helper.make_node("MatMul", ["x", f"{name}_c"], [f"{name}_out"]),
        ]
        return helper.make_graph(nodes, name, [], [_float(f"{name}_out", [2])])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=branch("then", 1.0), else_branch=branch("else", -1.0)
        ),
    ]
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    return _model(nodes, [_float("x", [2, 3])], [_float("y", [2])], [zero])


def test_subgraphs_counted_separately_and_outside_macs():
    summary = summarize(_if_model())
    assert summary.op_counts == {"Greater": 1, "If": 1, "ReduceSum": 1}
    assert summary.node_count == 3 and summary.subgraph_nodes == 4
    assert summary.total_params == 1 + 3 + 3  # "zero" + one Constant per branch
    assert summary.macs_by_op == () and summary.total_macs == 0  # the MatMuls are in subgraphs
    assert summary.to_dict()["macs_scope"] == "main graph"
    assert "not included" in render_summary(summary)


# ----------------------------------------------------------------------------- shapes


def test_dynamic_batch_macs_unknown_then_exact_with_shapes():
    model = lenet("batch")
    unknown = summarize(model)
    assert unknown.total_macs is None
    assert unknown.macs_unknown_nodes == 5 and unknown.known_macs == 0
    assert {m.op_type: m.unknown_nodes for m in unknown.macs_by_op} == {"Conv": 2, "Gemm": 3}
    assert "unknown" in render_summary(unknown)
    one = summarize(model, shapes={"input": (1, 1, 32, 32)})
    four = summarize(model, shapes={"input": (4, 1, 32, 32)})
    assert one.total_macs == LENET_MACS
    assert four.total_macs == 4 * LENET_MACS
    assert four.fixed_shapes == {"input": (4, 1, 32, 32)}


def test_shapes_do_not_modify_the_model():
    model = lenet("batch")
    before = model.SerializeToString()
    summarize(model, shapes={"input": (4, 1, 32, 32)})
    assert model.SerializeToString() == before


@pytest.mark.parametrize("opset", [12, 13, 17])
def test_computed_reshape_resolves_with_fixed_shape(opset):
    # Flatten written as Shape -> Gather -> Concat -> Reshape. Reshape < 14 ignores computed
    # shapes in ONNX shape inference; the summary upgrades its private copy to opset 14.
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([64], np.int64), "c64"),
        _weights(np.random.default_rng(0), "w", 64, 8),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"]),
        helper.make_node("Concat", ["n", "c64"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"]),
    ]
    inputs, outputs = [_float("x", ["batch", 16, 4])], [_float("y", ["batch", 8])]
    model = _model(nodes, inputs, outputs, inits, opsets=(("", opset),))
    assert summarize(model).total_macs is None
    assert summarize(model, shapes={"x": (3, 16, 4)}).total_macs == 3 * 64 * 8


def test_unknown_note_suggests_shapes_for_dynamic_inputs():
    text = render_summary(summarize(lenet("batch")))
    assert "unknown for 5 node(s) with dynamic dims (input 'input': 'batch')" in text
    hint = text.rstrip().splitlines()[-1]
    assert hint.endswith("e.g.: --shape input=1x1x32x32")  # pasteable as printed: nothing after it
    shapes = parse_shape_option([hint.split("--shape ")[1]])
    assert summarize(lenet("batch"), shapes=shapes).total_macs == summarize(lenet(1)).total_macs


def test_unknown_note_names_every_dynamic_dim_and_suggests_a_pasteable_shape():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    w = _weights(np.random.default_rng(0), "w", 4, 3)
    graph = helper.make_graph(nodes, "dyn", [_float("x", ["n", None, "rows", 4])], [_float("y", None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    text = render_summary(summarize(model))
    assert "(input 'x': 'n', axis 1, 'rows')" in text
    flag = text.rstrip().splitlines()[-1].split("e.g.: ")[1]
    assert flag == "--shape x=1x224x224x4"
    assert summarize(model, shapes=parse_shape_option([flag.split(" ")[1]])).total_macs == 224 * 224 * 4 * 3


def test_shape_dims_below_one_are_a_usage_error():
    with pytest.raises(UsageError, match="every dim must be at least 1, got 0"):
        summarize(lenet("batch"), shapes={"input": (0, 1, 32, 32)})


def test_unknown_note_when_inference_cannot_help():
    # A custom op hides the MatMul's input shape even though every input dim is fixed.
    nodes = [
        helper.make_node("Mystery", ["x"], ["t"], domain="com.example"),
        helper.make_node("MatMul", ["t", "w"], ["y"]),
        helper.make_node("MatMul", ["x", "w"], ["z"]),
    ]
    w = _weights(np.random.default_rng(0), "w", 4, 4)
    graph = helper.make_graph(nodes, "custom", [_float("x", [2, 4])],
                              [_float("y", None), _float("z", [2, 4])], [w])  # fmt: skip
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    summary = summarize(model)
    assert (summary.total_macs, summary.known_macs, summary.macs_unknown_nodes) == (None, 32, 1)
    text = render_summary(summary)
    assert "shape inference could not determine their dims" in text
    assert "Known part: 32 (32)." in text


def test_negative_dim_counts_as_dynamic():
    # Some exporters (Paddle) write -1 for a dynamic dim; a --shape may set it.
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    w = _weights(np.random.default_rng(0), "w", 4, 3)
    graph = helper.make_graph(nodes, "neg", [_float("x", [-1, 4])], [_float("y", [-1, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    summary = summarize(model, shapes={"x": (5, 4)})
    assert summary.inputs[0].shape == (None, 4)
    assert summary.total_macs == 5 * 4 * 3


def test_initializers_listed_as_inputs_are_not_inputs():
    model = lenet(1)
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in model.graph.initializer
    )
    summary = summarize(model, shapes={"input": (1, 1, 32, 32)})
    assert [v.name for v in summary.inputs] == ["input"]
    assert summary.total_macs == LENET_MACS
    with pytest.raises(DataError, match="'fc1.w'"):
        summarize(model, shapes={"fc1.w": (120, 400)})


@pytest.mark.parametrize(
    ("shapes", "words"),
    [
        ({"nope": (1, 1, 32, 32)}, ["unknown input", "'nope'", "input"]),
        ({"input": (1, 32, 32)}, ["input", "3 dims", "has 4"]),
        ({"input": (1, 3, 32, 32)}, ["input", "fixed dim 1"]),
    ],
)
def test_bad_shapes_raise_naming_the_input(shapes, words):
    with pytest.raises(DataError) as err:
        summarize(lenet("batch"), shapes=shapes)
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, OnnxSlimError)
    for word in words:
        assert word in message


def test_symbolic_and_unknown_dims_in_listing():
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = _model(nodes, [_float("x", ["batch", None, 8])], [_float("y", ["batch", None, 8])])
    summary = summarize(model)
    assert summary.inputs[0].shape == ("batch", None, 8)
    listed = summary.to_dict()["inputs"]
    assert listed == [{"name": "x", "dtype": "float32", "shape": ["batch", None, 8]}]
    assert "[batch, ?, 8]" in render_summary(summary)


# ----------------------------------------------------------------------------- model facts


def test_ops_opsets_and_custom_domains():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Gelu", ["b"], ["y"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(nodes, "custom", [_float("x", [2])], [_float("y", [2])])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        ir_version=8,
        producer_name="unit",
        producer_version="1.0",
    )
    summary = summarize(model, file_size=1234)
    assert summary.opsets == {"ai.onnx": OPSET, "com.microsoft": 1}
    assert summary.op_counts == {"Relu": 2, "com.microsoft::Gelu": 1}
    assert (summary.producer_name, summary.producer_version) == ("unit", "1.0")
    assert summary.ir_version == 8
    assert summary.file_size == 1234 and "1,234 bytes" in render_summary(summary)


def test_to_dict_keys_are_stable_and_json_ready():
    summary = summarize(lenet("batch"), shapes={"input": (1, 1, 32, 32)}, file_size=10)
    data = json.loads(json.dumps(summary.to_dict()))
    assert list(data) == [
        "graph_name", "ir_version", "producer_name", "producer_version", "opsets", "inputs",
        "outputs", "node_count", "op_counts", "subgraph_nodes", "params_by_dtype",
        "total_params", "total_param_bytes", "macs_by_op", "total_macs", "known_macs",
        "macs_unknown_nodes", "macs_scope", "fixed_shapes", "file_size",
    ]  # fmt: skip
    assert data["macs_by_op"]["Gemm"] == {
        "nodes": 3, "macs": 58_920, "known_macs": 58_920, "unknown_nodes": 0
    }  # fmt: skip
    assert data["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]
    assert data["fixed_shapes"] == {"input": [1, 1, 32, 32]}
    assert data["op_counts"] == {"Relu": 4, "Gemm": 3, "Conv": 2, "MaxPool": 2, "Flatten": 1}


def test_render_shows_human_and_exact_numbers():
    text = render_summary(summarize(lenet(1)))
    for needle in ("## Model", "## Inputs", "## Outputs", "## Ops", "## Parameters", "## MACs",
                   "416.5 K", "416,520", "61.7 K", "61,706", "[1, 1, 32, 32]"):  # fmt: skip
        assert needle in text
    assert "unknown" not in text
    ops = text.split("## Ops")[1].split("##")[0]
    assert ops.index("Relu") < ops.index("Gemm") < ops.index("Conv")  # sorted by count


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (840, "840"),
        (416_520, "416.5 K"),
        (1_234_567_890, "1.23 G"),
        (999_960, "1.00 M"),  # rounds up into the next unit, never "1000.0 K"
        (10**16, "10.0 P"),
    ],
)
def test_human_units(value, text):
    assert human_count(value) == text


# ----------------------------------------------------------------------------- LeNet


def _check_lenet(summary: ModelSummary) -> None:
    assert summary.total_params == LENET_PARAMS
    assert summary.total_param_bytes == 4 * LENET_PARAMS
    # conv1 6·28·28·(1·5·5) = 117,600; conv2 16·10·10·(6·5·5) = 240,000;
    # fc 400·120 + 120·84 + 84·10 = 48,000 + 10,080 + 840 = 58,920.
    assert _macs(summary) == {"Conv": 357_600, "Gemm": 58_920}
    assert summary.total_macs == LENET_MACS


def test_lenet_built_here_params_and_macs():
    _check_lenet(summarize(lenet("batch"), shapes={"input": (1, 1, 32, 32)}))


def test_lenet_params_and_macs(lenet_path: Path):
    if not lenet_path.exists():
        pytest.skip(f"{lenet_path.name} not produced yet (models/ is being built by another task)")
    model = onnx.load(str(lenet_path))
    size = lenet_path.stat().st_size
    summary = summarize(model, shapes={"input": (1, 1, 32, 32)}, file_size=size)
    _check_lenet(summary)
    assert summary.file_size == size
    assert [(v.name, v.shape) for v in summary.inputs] == [("input", ("batch", 1, 32, 32))]
    assert [(v.name, v.shape) for v in summary.outputs] == [("logits", ("batch", 10))]


def test_large_model_is_fast():
    # 1,000 nodes, ~10 MB of weights: well under a second here (~20 ms measured).
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(500):
        inits.append(_weights(rng, f"w{i}", 72, 72))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]  # fmt: skip
        prev = f"r{i}"
    inputs, outputs = [_float("x", ["n", 72])], [_float(prev, ["n", 72])]
    graph = helper.make_graph(nodes, "big", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    start = time.perf_counter()
    summary = summarize(model, shapes={"x": (1, 72)})
    render_summary(summary)
    assert time.perf_counter() - start < 2.0
    assert summary.total_macs == 500 * 72 * 72
