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
