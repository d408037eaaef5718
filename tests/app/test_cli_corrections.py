"""The int8 corrections from the command line, on the bundled LeNet-5: each flag reaches the pass
(the report says what it did), the written model is valid and close to fp32, and the
combinations that cannot work are usage errors (exit 2) that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxslim.cli import main

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "models" / "lenet5_digits.onnx"
CALIB = REPO / "models" / "lenet5_digits_calib.npz"
TEST = REPO / "models" / "lenet5_digits_test.npz"


def _accuracy(path: Path) -> float:
    data = np.load(TEST)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = data[name] if name in data else data[next(k for k in data.files if k != "labels")]
    preds = [int(np.argmax(sess.run(None, {name: x[i:i + 1]})[0])) for i in range(len(x))]
    return float(np.mean(np.asarray(preds) == data["labels"]))


@pytest.mark.parametrize("flags, key", [
    (["--bias-correction"], "bias correction: units"),
    (["--method", "auto"], "ranges chosen"),
    (["--equalize"], "pairs"),
    (["--learned-rounding"], "learned rounding: layers"),
])
def test_each_correction_is_applied_and_keeps_accuracy(tmp_path: Path, flags: list[str], key: str) -> None:
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(out), "--calib", str(CALIB), "--json", *flags])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert key in json.dumps(report)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert _accuracy(out) >= _accuracy(LENET) - 0.01


@pytest.mark.parametrize("args, needle", [
    (["--mode", "dynamic", "--bias-correction"], "--bias-correction applies to static mode"),
    (["--mode", "dynamic", "--equalize"], "--equalize applies to static mode"),
    (["--mode", "dynamic", "--learned-rounding"], "--learned-rounding applies to static mode"),
])
def test_corrections_outside_static_mode_are_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(out), *args])
    assert result.exit_code == 2 and needle in result.output and not out.exists()


def test_equalize_with_a_table_is_a_usage_error(tmp_path: Path) -> None:
    table = tmp_path / "t.json"
    assert CliRunner().invoke(main, ["calibrate", str(LENET), "--calib", str(CALIB), "-o", str(table)]).exit_code == 0
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(out), "--table", str(table), "--equalize"])
    assert result.exit_code == 2 and "give --calib instead of --table" in result.output and not out.exists()


def test_a_budget_search_through_the_api_may_skip_the_timing(tmp_path: Path) -> None:
    """``latency_runs=0`` means "not timed" in every flow, the budget search's included."""
    from onnxslim.api import QuantizeSettings, quantize_file
    from onnxslim.flow import EvalRequest, FlowOptions

    out = tmp_path / "q.onnx"
    report = quantize_file(LENET, out, calib=CALIB, settings=QuantizeSettings(latency_runs=0),
                           flow=FlowOptions(evaluation=EvalRequest(TEST, max_drop=0.01)))
    assert out.exists() and report.search and report.base.latency is None


def test_target_sqnr_sets_how_far_the_fallback_goes(tmp_path: Path) -> None:
    """LeNet-5's all-int8 output is near 44 dB: the default 15 dB target floats nothing, an
    unreachable target floats what the unit budget allows and still writes (the 5 dB floor holds)."""
    def run(target: str) -> dict:
        out = tmp_path / f"q{target}.onnx"
        result = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(out), "--calib", str(CALIB), "--samples",
                                           "32", "--target-sqnr", target, "--json"])
        assert result.exit_code == 0, result.output
        assert out.exists()
        return json.loads(result.stdout)["steps"][2]["stats"]

    default, greedy = run("15"), run("300")
    assert default["fallback: nodes kept float"] == [] and default["fallback: output SQNR dB after"] > 15
    assert greedy["fallback: nodes kept float"]
    assert greedy["fallback: output SQNR dB after"] >= default["fallback: output SQNR dB after"]
    for target in ("20", "15"):  # given at all, even at its default value, in the wrong mode
        usage = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(tmp_path / "d.onnx"), "--mode", "dynamic",
                                          "--target-sqnr", target])
        assert usage.exit_code == 2 and "--target-sqnr applies to static mode" in usage.output
