"""The command line: every subcommand end to end on the bundled model, and its error contract.

Contract: success exits 0; an onnxslim error exits 1 with one line on stderr and no traceback;
a usage error exits 2; a failed command leaves no output file behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from _helpers import assert_equivalent
from onnxslim.cli import main


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _assert_one_line_error(result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and needle in lines[0]
    assert "Traceback" not in result.output


def test_help_lists_the_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("inspect", "simplify", "validate", "bench", "zoo"):
        assert f"  {command}" in result.stdout


def test_inspect_json_lenet(runner: CliRunner, lenet_path: Path) -> None:
    result = runner.invoke(main, ["inspect", str(lenet_path), "--shape", "input=1x1x32x32", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout holds exactly one JSON document
    # Hand-computed: conv1 6*1*25+6, conv2 16*6*25+16, fc 400*120+120, 120*84+84, 84*10+10.
    assert doc["total_params"] == 156 + 2416 + 48120 + 10164 + 850 == 61706
    # conv1 6*28*28*25, conv2 16*10*10*(6*25), fc 400*120 + 120*84 + 84*10.
    assert doc["total_macs"] == 117600 + 240000 + 48000 + 10080 + 840 == 416520
    assert doc["inputs"][0] == {"name": "input", "dtype": "float32", "shape": ["batch", 1, 32, 32]}
    assert doc["fixed_shapes"] == {"input": [1, 1, 32, 32]}


def test_inspect_text_says_unknown_without_shape(runner: CliRunner, lenet_path: Path) -> None:
    result = runner.invoke(main, ["inspect", str(lenet_path)])
    assert result.exit_code == 0
    assert "unknown" in result.stdout and "--shape input=" in result.stdout


def _conv_bn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal((4, 3, 3, 3)), "scale": rng.uniform(0.5, 2, 4), "bias": rng.standard_normal(4),
        "mean": rng.standard_normal(4), "var": rng.uniform(0.5, 2, 4),
    }
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"]),
            onnx.helper.make_node("Identity", ["b"], ["i"]),
            onnx.helper.make_node("Relu", ["i"], ["y"]),
        ],
        "conv_bn_relu",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4, 8, 8])],
        [onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=8)


def test_simplify_end_to_end(runner: CliRunner, tmp_path: Path) -> None:
    source, out = tmp_path / "conv_bn.onnx", tmp_path / "conv_bn.slim.onnx"
    source.write_bytes(_conv_bn_model().SerializeToString())
    result = runner.invoke(main, ["simplify", str(source), "-o", str(out), "--shape", "x=2x3x8x8"])
    assert result.exit_code == 0, result.output
    assert re.search(r"\| before \|\s+4 \|", result.stdout) and re.search(r"\| after  \|\s+2 \|", result.stdout)
    assert "verification: passed (2 random inputs)" in result.stdout
    slim = onnx.load(out)
    onnx.checker.check_model(slim, full_check=True)
    assert [n.op_type for n in slim.graph.node] == ["Conv", "Relu"]
    assert_equivalent(_conv_bn_model(), slim)


def test_simplify_lenet_keeps_its_outputs(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lenet.slim.onnx"
    result = runner.invoke(main, ["simplify", str(lenet_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "verification: unchanged" in result.stdout  # LeNet has nothing to simplify
    slim = onnx.load(out)
    onnx.checker.check_model(slim, full_check=True)
    original = onnx.load(lenet_path)
    assert len(slim.graph.node) <= len(original.graph.node)
    feeds = {"input": np.load(lenet_path.parent / "lenet5_digits_test.npz")["input"][:16]}
    assert_equivalent(original, slim, feeds)


def test_simplify_json(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    result = runner.invoke(main, ["simplify", str(lenet_path), "-o", str(tmp_path / "o.onnx"), "--json", "--no-onnxsim"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["before"]["params"] == 61706 and doc["steps"][0]["name"] == "simplify"
    assert doc["steps"][0]["stats"]["onnxsim"] == "disabled"


def test_bench_end_to_end(runner: CliRunner, lenet_path: Path) -> None:
    result = runner.invoke(main, ["bench", str(lenet_path), "--batch", "2", "--runs", "5", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["runs"] == 5 and row["p50_ms"] > 0 and row["speedup"] == pytest.approx(1.0)


def test_validate_end_to_end(runner: CliRunner, lenet_path: Path) -> None:
    data = lenet_path.parent / "lenet5_digits_test.npz"
    result = runner.invoke(main, ["validate", str(lenet_path), str(lenet_path), "--data", str(data), "--max-drop", "0"])
    assert result.exit_code == 0, result.output
    assert "labeled accuracy (logits, 540 labels)" in result.stdout and "PASS" in result.stdout


def test_zoo_list(runner: CliRunner) -> None:
    result = runner.invoke(main, ["zoo", "list", "--json"])
    assert result.exit_code == 0
    names = [row["name"] for row in json.loads(result.stdout)]
    assert names == ["ppocr-det", "ppocr-rec", "ppocr-cls", "yolov8n-nudenet", "silero-vad", "silero-vad-if",
                     "picodet-layout-cdla", "lcnet-doc-orientation"]


def test_zoo_fetch_unknown_name(runner: CliRunner) -> None:
    _assert_one_line_error(runner.invoke(main, ["zoo", "fetch", "no-such-model"]), "no-such-model")


# ----------------------------------------------------------------------------- error paths


def _bad_inputs(tmp_path: Path, lenet_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    data = lenet_path.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    return {
        "missing": (tmp_path / "missing.onnx", "no such file"),
        "text": (text, "not an ONNX model"),
        "truncated": (truncated, "truncated"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "truncated"])
@pytest.mark.parametrize("command", ["simplify", "inspect", "validate", "bench"])
def test_bad_model_files(runner: CliRunner, tmp_path: Path, lenet_path: Path, case: str, command: str) -> None:
    path, needle = _bad_inputs(tmp_path, lenet_path)[case]
    out = tmp_path / "out.onnx"
    args = {
        "simplify": ["simplify", str(path), "-o", str(out)],
        "inspect": ["inspect", str(path)],
        "validate": ["validate", str(lenet_path), str(path)],
        "bench": ["bench", str(path), "--batch", "1", "--runs", "1"],
    }[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    _assert_one_line_error(runner.invoke(main, args), needle)
    assert str(path) in runner.invoke(main, args).stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_output_equal_to_input_is_refused(runner: CliRunner, tmp_path: Path, lenet_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(lenet_path, model)
    before = model.read_bytes()
    result = runner.invoke(main, ["simplify", str(model), "-o", str(tmp_path / "." / "m.onnx")])
    _assert_one_line_error(result, "refusing to overwrite the input model")
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_failed_verification_leaves_no_output(runner: CliRunner, tmp_path: Path, lenet_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from passes.simplify import SimplifyPass

    real_apply = SimplifyPass.apply

    def corrupting_apply(self, model, ctx):  # a broken rewrite: scales one weight
        result = real_apply(self, model, ctx)
        init = result.model.graph.initializer[0]
        arr = onnx.numpy_helper.to_array(init) * 1.5
        init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
        return type(result)(result.model, True, result.stats)

    monkeypatch.setattr(SimplifyPass, "apply", corrupting_apply)
    out = tmp_path / "out.onnx"
    result = runner.invoke(main, ["simplify", str(lenet_path), "-o", str(out)])
    _assert_one_line_error(result, "pass 'simplify' changed the outputs")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_usage_errors_exit_2(runner: CliRunner, lenet_path: Path) -> None:
    assert runner.invoke(main, ["simplify", str(lenet_path)]).exit_code == 2  # -o missing
    assert runner.invoke(main, ["inspect", str(lenet_path), "--shape", "garbage"]).exit_code == 2
    assert runner.invoke(main, ["bench", str(lenet_path), "--runs", "0"]).exit_code == 2
    assert runner.invoke(main, ["no-such-command"]).exit_code == 2


def test_verbose_shows_the_traceback(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["-v", "inspect", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 1 and "Traceback" in result.stderr


@pytest.mark.parametrize("extra", [[], ["--weights-only"], ["--no-keep-io-types"]])
def test_fp16_end_to_end(runner: CliRunner, lenet_path: Path, tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "lenet16.onnx"
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    result = runner.invoke(main, ["fp16", str(lenet_path), "-o", str(out), "--calib", str(calib), "--samples", "16", *extra])
    assert result.exit_code == 0, result.output
    assert "verification: passed" in result.stdout and "ranges from 16 calibration samples" in result.stdout
    assert "load s" in result.stdout.splitlines()[2]  # size and session creation time, before and after
    assert out.stat().st_size < 0.6 * lenet_path.stat().st_size  # weights halved
    onnx.checker.check_model(onnx.load(out), full_check=True)
    data = lenet_path.parent / "lenet5_digits_test.npz"
    if not extra or extra == ["--weights-only"]:  # same float32 interface: validate it
        check = runner.invoke(main, ["validate", str(lenet_path), str(out), "--data", str(data), "--max-drop", "0.005"])
        assert check.exit_code == 0, check.output


def test_quantize_static_end_to_end(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lenet.int8.onnx"
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    test = lenet_path.parent / "lenet5_digits_test.npz"
    result = runner.invoke(main, ["quantize", str(lenet_path), "-o", str(out), "--calib", str(calib), "--samples", "64",
                                  "--eval", str(test), "--max-drop", "0.005", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["name"] for s in doc["steps"]] == ["prepare-quantize", "calibrate", "quantize-static"]
    assert "fidelity judged by the --eval metric" in doc["verification"] and doc["written"]
    assert doc["steps"][2]["stats"]["quantized: Conv"] == 2
    assert doc["fusion"]["int8"].get("QLinearConv") == 2  # onnxruntime really runs the convs in int8
    assert doc["latency"]["input_p50_ms"] > 0 and doc["latency"]["output_p50_ms"] > 0
    assert doc["validation"]["accuracy"]["drop"] <= 0.005
    # the budget held at --confidence 0.9 (the default): the written trial's bound is within it too
    written = [t for t in doc["budget_search"]["trials"] if t["passed"]]
    assert written and all(t["bound"] is not None and t["bound"] <= 0.005 for t in written)
    assert doc["validation"]["accuracy"]["bound"] <= 0.005 and doc["validation"]["gates"]["confidence"] == 0.9
    assert any("reduce-range" in note for note in doc["notes"])  # the CPU-dependent choice is stated
    assert out.stat().st_size < 0.4 * lenet_path.stat().st_size


def test_quantize_dynamic_end_to_end(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lenet.dyn.onnx"
    result = runner.invoke(main, ["quantize", str(lenet_path), "-o", str(out), "--mode", "dynamic", "--no-reduce-range",
                                  "--shape", "input=1x1x32x32"])
    assert result.exit_code == 0, result.output
    assert "quantize-dynamic" in result.stdout and "fusion:" in result.stdout and "latency" in result.stdout
    assert "reduce-range as requested" in result.stdout


def test_quantize_errors(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    missing = runner.invoke(main, ["quantize", str(lenet_path), "-o", str(out)])
    assert missing.exit_code == 2 and "needs calibration data" in missing.stderr
    assert not out.exists()
    bad = runner.invoke(main, ["quantize", str(lenet_path), "-o", str(out), "--mode", "dynamic", "--activations", "s8"])
    assert bad.exit_code == 2
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input=np.zeros((4, 1, 28, 28), np.float32))
    _assert_one_line_error(runner.invoke(main, ["quantize", str(lenet_path), "-o", str(out), "--calib", str(wrong)]),
                           "input 'input' has shape 1x1x28x28, the model expects batchx1x32x32")
    assert not out.exists()


def test_calibrate_then_quantize_from_the_table(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    table = tmp_path / "lenet.json"
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    result = runner.invoke(main, ["calibrate", str(lenet_path), "--calib", str(calib), "-o", str(table),
                                  "--method", "percentile", "--samples", "32", "--shuffle"])
    assert result.exit_code == 0, result.output
    assert "with 'percentile' on 32 samples" in result.stdout
    doc = json.loads(table.read_text())
    assert doc["method"] == "percentile" and doc["samples"] == 32 and "input" in doc["tensors"]
    out = tmp_path / "q.onnx"
    quant = runner.invoke(main, ["quantize", str(lenet_path), "-o", str(out), "--table", str(table)])
    assert quant.exit_code == 0, quant.output
    assert "within their calibrated ranges" in quant.stdout and "verification: passed" in quant.stdout


def test_calibrate_errors(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    missing = runner.invoke(main, ["calibrate", str(lenet_path), "--calib", str(tmp_path / "none.npz"), "-o", str(out)])
    _assert_one_line_error(missing, "no such file")
    assert not out.exists()
    other = tmp_path / "other.onnx"
    other.write_bytes(_conv_bn_model().SerializeToString())
    table = tmp_path / "lenet.json"
    runner.invoke(main, ["calibrate", str(lenet_path), "--calib", str(lenet_path.parent / "lenet5_digits_calib.npz"),
                         "-o", str(table), "--samples", "8"])
    wrong = runner.invoke(main, ["quantize", str(other), "-o", str(tmp_path / "q.onnx"), "--table", str(table)])
    assert wrong.exit_code == 1 and "another model" in wrong.stderr


def test_prune_dry_run_lists_groups(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    result = runner.invoke(main, ["prune", str(lenet_path), "--ratio", "0.5", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc and list(tmp_path.iterdir()) == []  # nothing written
    text = runner.invoke(main, ["prune", str(lenet_path), "--dry-run"]).stdout
    assert "graph output ('logits')" in text and "/conv2/Conv" in text


def test_prune_lenet_with_reconstruction(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lenet.pruned.onnx"
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    test = lenet_path.parent / "lenet5_digits_test.npz"
    result = runner.invoke(main, ["prune", str(lenet_path), "-o", str(out), "--ratio", "0.5", "--allocation", "global",
                                  "--calib", str(calib), "--eval", str(test), "--max-drop", "0.04", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    stats = doc["steps"][1]["stats"]
    assert stats["params_after"] < 0.5 * stats["params_before"] == 0.5 * 61706
    assert stats["macs_after"] < stats["macs_before"] == 416520
    assert doc["validation"]["accuracy"]["candidate"] >= 0.95  # the target, calibration data only
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == ["input"] and [o.name for o in pruned.graph.output] == ["logits"]


def test_prune_errors(runner: CliRunner, lenet_path: Path, tmp_path: Path) -> None:
    assert runner.invoke(main, ["prune", str(lenet_path), "--ratio", "0.5"]).exit_code == 2  # no -o
    out = tmp_path / "p.onnx"
    result = runner.invoke(main, ["prune", str(lenet_path), "-o", str(out), "--criterion", "activation"])
    _assert_one_line_error(result, "needs calibration data")
    assert not out.exists()
