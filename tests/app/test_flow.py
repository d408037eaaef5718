"""The flow's report pieces: long lists as counts by op type, and the latency verdict."""

from __future__ import annotations

import onnx

from onnxslim.flow import LatencyCheck, ModelSize, PassReport
from onnxslim.pipeline import PipelineReport, StepReport


def _report(stats: dict) -> PassReport:
    size = ModelSize(1, 1, 4, None)
    pipeline = PipelineReport((StepReport("quantize-static", True, stats, 0.1, "passed"),), onnx.ModelProto())
    ops = {f"conv{i}": "Conv" for i in range(20)} | {f"mul{i}": "Mul" for i in range(5)}
    return PassReport("in.onnx", "out.onnx", size, size, pipeline, "passed", written=True, op_types=ops)


def test_a_long_list_of_node_names_is_counted_by_op_type() -> None:
    names = [f"conv{i}" for i in range(20)] + [f"mul{i}" for i in range(5)] + ["gone"]
    report = _report({"quantized_nodes": names, "quantized: Conv": 20, "skipped: isolated": 3, "weights": "per-channel"})
    text = report.render()
    assert "quantized_nodes: 26 entries (Conv 20, Mul 5, other 1; every entry: --json or -v)" in text
    assert "conv7" not in text
    assert "quantize-static: weights per-channel" in text
    assert "  quantized: Conv 20" in text and "  skipped: isolated 3" in text
    verbose = report.render(verbose=True)
    assert all(f"    - {n}" in verbose for n in names)
    assert report.to_dict()["steps"][0]["stats"]["quantized_nodes"] == names


def test_a_short_list_is_shown_whole() -> None:
    text = _report({"kept_float": ["conv1", "mul2"]}).render()
    assert "    - conv1" in text and "    - mul2" in text


def _latency(p25: float, p50: float, p75: float) -> LatencyCheck:
    return LatencyCheck(10.0, 10.0 * p50, 30, p25, p50, p75)


def test_latency_says_slower_only_beyond_the_spread() -> None:
    assert _latency(1.02, 1.10, 1.20).direction == "slower"
    assert "SLOWER" in _latency(1.02, 1.10, 1.20).verdict()
    assert _latency(0.95, 1.05, 1.15).direction == "same"
    assert "no difference beyond the spread" in _latency(0.95, 1.05, 1.15).verdict()
    assert _latency(0.40, 0.45, 0.50).direction == "faster"
    assert "SLOWER" not in _latency(0.40, 0.45, 0.50).verdict()


def test_latency_measure_pairs_rounds(monkeypatch) -> None:
    import onnxslim.flow

    before = [10.0, 20.0, 10.0, 20.0]
    after = [11.0, 22.0, 11.0, 22.0]  # 10 % slower in every round, though the rounds drift 2x
    monkeypatch.setattr(onnxslim.flow, "side_by_side_runs", lambda models, feeds, **kw: [before, after])
    check = LatencyCheck.measure([onnx.ModelProto(), onnx.ModelProto()], {}, runs=4)
    assert check.ratio_p25 == check.ratio_p75 == check.ratio_p50 == 1.1
    assert check.direction == "slower" and check.runs == 4


def _chain(ops: list[str]) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    names = ["x"] + [f"t{i}" for i in range(len(ops))]
    nodes = [helper.make_node(op, [names[i]], [names[i + 1]], name=f"n{i}") for i, op in enumerate(ops)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
                              [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [64, 256])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_result_that_is_not_faster_says_where_the_time_went() -> None:
    """The kernel types come from onnxruntime's profiler: a type only the result runs grew from
    0, one only the input runs fell to 0; a faster result gets no diagnosis."""
    import numpy as np

    from onnxslim.bench import op_type_times
    from onnxslim.flow import kernel_changes

    before, after = _chain(["Relu"]), _chain(["Relu", "Sin", "Cos", "Sin"])
    feeds = {"x": np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)}
    times = op_type_times(after, feeds, runs=3)
    assert {"Relu", "Sin", "Cos"} <= set(times) and all(v >= 0 for v in times.values())
    changed = {op: (a, b) for op, a, b in kernel_changes(before, after, feeds, runs=3)}
    assert {"Sin", "Cos"} <= set(changed) and changed["Sin"][0] == 0.0 and changed["Sin"][1] > 0
    gone = {op: (a, b) for op, a, b in kernel_changes(after, before, feeds, runs=3)}
    assert gone["Sin"][0] > 0 and gone["Sin"][1] == 0.0  # what the result no longer runs is listed too
    assert kernel_changes(onnx.ModelProto(), after, feeds) == ()  # a model it cannot profile: no diagnosis, no error
    check = LatencyCheck(1.0, 1.5, 30, 1.3, 1.5, 1.7, where=(("Sin", 0.0, 0.31), ("QuantizeLinear", 0.0, 0.2)))
    text = check.verdict()
    assert "SLOWER" in text and "where the time changed" in text and "Sin 0.00 -> 0.31, QuantizeLinear 0.00 -> 0.20" in text
    assert "where the time changed" not in _latency(1.02, 1.10, 1.20).verdict()
    faster = LatencyCheck(1.0, 0.5, 30, 0.4, 0.5, 0.6, where=(("Sin", 0.0, 0.31),))
    assert "where the time changed" not in faster.verdict()
    assert check.to_dict()["where"][0] == ("Sin", 0.0, 0.31)
