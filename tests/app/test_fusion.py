"""fusion_report: what onnxruntime fused into int8 kernels, counted in its optimized graph."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxslim.fusion import FusionReport, count_ops, fusion_report
from passes._base import RunContext
from passes.quantize._dynamic import QuantizeDynamicPass

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _q(name: str, value: float) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array(value, np.float32), f"{name}_s"),
            numpy_helper.from_array(np.array(128, np.uint8), f"{name}_z")]


def qdq_conv(*, output_q: bool = True) -> onnx.ModelProto:
    """Q→DQ(x), DQ(int8 W), DQ(int32 bias) → Conv → [Q→DQ] → Relu-free output: the QLinearConv unit.

    With ``output_q=False`` the Conv writes the graph output directly (no output Q), which
    onnxruntime's selector refuses to fuse.
    """
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    inits = [*_q("x", 0.02), *_q("y", 0.05),
             numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_z"),
             numpy_helper.from_array(rng.integers(-50, 50, 4).astype(np.int32), "b_q"),
             numpy_helper.from_array(np.array(0.0002, np.float32), "b_s"),
             numpy_helper.from_array(np.array(0, np.int32), "b_z")]
    conv_out = "c" if output_q else "y"
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_d"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_d"]),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["b_d"]),
             helper.make_node("Conv", ["x_d", "w_d", "b_d"], [conv_out], pads=[1, 1, 1, 1])]
    if output_q:
        nodes += [helper.make_node("QuantizeLinear", ["c", "y_s", "y_z"], ["c_q"]),
                  helper.make_node("DequantizeLinear", ["c_q", "y_s", "y_z"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", FLOAT, [1, 4, 8, 8])], inits)


def float_conv_matmul() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "m")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MatMul", ["r", "m"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", FLOAT, [1, 4, 8, 5])], inits)


def test_qdq_conv_fuses_into_qlinearconv() -> None:
    report = fusion_report(qdq_conv())
    assert report.int8 == {"QLinearConv": 1}
    assert report.float_compute == {} and report.quantizable == 1
    assert report.verdict().startswith("1 of 1 quantizable compute nodes run in int8")


def test_float_model_has_no_int8() -> None:
    report = fusion_report(float_conv_matmul())
    assert report.int8 == {} and report.int8_compute == 0 and report.qdq == {}
    assert sum(report.float_compute.values()) == 2  # Conv (maybe FusedConv with Relu) and MatMul
    assert report.verdict() == "0 of 2 quantizable compute nodes run in int8"


def test_conv_writing_the_graph_output_is_not_fused() -> None:
    report = fusion_report(qdq_conv(output_q=False))
    assert report.int8_compute == 0
    assert sum(report.float_compute.values()) == 1
    assert report.qdq.get("DequantizeLinear", 0) >= 2  # weight/bias DQ left in front of a float Conv
    assert "Q/DQ nodes left unfused" in report.verdict()


def test_dynamic_chain_fuses_into_dynamic_quantize_matmul(tmp_path) -> None:
    quantized = QuantizeDynamicPass().apply(float_conv_matmul(), RunContext()).model
    path = tmp_path / "dyn.onnx"
    onnx.save(quantized, path)
    report = fusion_report(path)  # from a path too
    assert report.int8 == {"DynamicQuantizeMatMul": 1}
    assert report.qdq == {} and report.int8_compute == 1 and report.quantizable == 2


def test_report_is_data_and_renders() -> None:
    report = FusionReport(int8={"QLinearConv": 2}, weight_only={}, qdq={"DequantizeLinear": 1},
                          float_compute={"Gemm": 1}, total_nodes=9)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["int8_compute"] == 2 and data["quantizable"] == 3
    assert data["verdict"] == "2 of 3 quantizable compute nodes run in int8; 1 Q/DQ nodes left unfused"
    text = report.render()
    assert "QLinearConv 2" in text and "Gemm 1" in text and "9 nodes" in text


def test_count_ops_includes_subgraphs() -> None:
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "b", [],
                               [helper.make_tensor_value_info("t", FLOAT, [2])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    model = _model([node], [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                            helper.make_tensor_value_info("x", FLOAT, [2])],
                   [helper.make_tensor_value_info("y", FLOAT, [2])], [])
    assert count_ops(model) == {"If": 1, "Relu": 2}
