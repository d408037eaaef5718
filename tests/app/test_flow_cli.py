"""The one flow, from the command line: nothing is written unless every check passed.

Every case asserts the exit code, one line on stderr naming the problem, no traceback, the input
model's bytes unchanged, and no output or temporary file left in the output folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper, numpy_helper

import onnxslim.calibrate
import onnxslim.flow
from onnxslim.cli import main

REPO = Path(__file__).resolve().parents[2]
LENET = REPO / "models" / "lenet5_digits.onnx"
CALIB = REPO / "models" / "lenet5_digits_calib.npz"
TEST = REPO / "models" / "lenet5_digits_test.npz"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invoke(args: list[str], out_dir: Path, *, model: Path, code: int, needle: str) -> Result:
    """Run the CLI and check the failure contract; returns the result."""
    before = _sha(model)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert _sha(model) == before
    assert [p.name for p in out_dir.iterdir() if p != model and p.suffix != ".npz"] == []
    return result


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list = ()) -> Path:
    """Write a tiny opset-13 model built from ``nodes`` to ``path``."""
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def _vi(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# ----------------------------------------------------------------------------- gates before writing


def test_prune_gate_not_met_writes_nothing(out_dir: Path) -> None:
    out = out_dir / "gate.onnx"
    result = _invoke(["prune", str(LENET), "-o", str(out), "--ratio", "0.5", "--per-layer", "--calib", str(CALIB),
                      "--no-reconstruct", "--eval", str(TEST), "--max-drop", "0.001"],
                     out_dir, model=LENET, code=1, needle="gate not met")
    assert "nothing written" in result.stderr and "(nothing written)" in result.stdout


def test_quantize_gate_not_met_writes_nothing(out_dir: Path) -> None:
    # _toy_metric.closeness is 0 for the reference and below 0 for any changed result: a budget of
    # 0 cannot hold, one of 1e9 always does, so the same command writes or not only by the gate.
    args = ["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB), "--eval", str(TEST),
            "--metric", "_toy_metric:closeness"]
    result = CliRunner().invoke(main, [*args, "--max-drop", "1e9"])
    assert result.exit_code == 0, result.output
    (out_dir / "q.onnx").unlink()
    # with --max-drop the budget search tries float sets too; none reaches a drop of 0
    _invoke([*args, "--max-drop", "0"], out_dir, model=LENET, code=1, needle="nothing written")


def test_quantize_missing_eval_fails_before_any_work(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibration ran before --eval was checked")

    monkeypatch.setattr(onnxslim.calibrate, "collect", never)
    _invoke(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB), "--eval",
             str(out_dir / "nonexistent.npz")], out_dir, model=LENET, code=1, needle="--eval")


def test_metric_without_eval_is_a_usage_error(out_dir: Path) -> None:
    result = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB),
                                       "--max-drop", "0.01"])
    assert result.exit_code == 2 and "--eval" in result.stderr
    assert list(out_dir.iterdir()) == []


# ----------------------------------------------------------------------------- Ctrl-C


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def _check_interrupted(args: list[str], out_dir: Path) -> None:
    before = _sha(LENET)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == "Interrupted: nothing written"
    assert list(out_dir.iterdir()) == [] and _sha(LENET) == before


def test_ctrl_c_during_calibration(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = onnxslim.calibrate.collect

    def collect(model: onnx.ModelProto, dataset: object, **kwargs: object) -> object:
        def progress(done: int, total: int) -> None:
            if done == 2:
                raise KeyboardInterrupt

        return real(model, dataset, **{**kwargs, "progress": progress})

    monkeypatch.setattr(onnxslim.calibrate, "collect", collect)
    _check_interrupted(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB)], out_dir)


def test_ctrl_c_during_latency(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxslim.flow, "side_by_side_runs", _interrupt)
    _check_interrupted(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB)], out_dir)


def test_ctrl_c_during_writing(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxslim.io

    real = os.replace

    def replace(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(onnxslim.io.os, "replace", replace)
    try:
        _check_interrupted(["simplify", str(LENET), "-o", str(out_dir / "s.onnx")], out_dir)
    finally:
        monkeypatch.setattr(onnxslim.io.os, "replace", real)


_SIGINT_DRIVER = """
import importlib, sys, time
from pathlib import Path
from onnxslim.cli import main

marker, target = Path(sys.argv[1]), sys.argv[2]
module, _, attr = target.partition(":")
owner = importlib.import_module(module)
for part in attr.split(".")[:-1]:
    owner = getattr(owner, part)

def slow(*args, **kwargs):
    marker.write_text("entered")
    time.sleep(60)
    raise SystemExit("not interrupted")

setattr(owner, attr.split(".")[-1], slow)
main(sys.argv[3:])
"""


@pytest.mark.parametrize(("target", "command"), [
    ("onnxslim.calibrate:collect", ["quantize", "--calib", str(CALIB)]),
    ("passes.prune._sensitivity:Meter.__call__", ["prune", "--calib", str(CALIB)]),
    ("onnxslim.flow:side_by_side_runs", ["quantize", "--calib", str(CALIB)]),
], ids=["calibration", "prune-probe", "latency"])
def test_real_sigint_exits_130_and_leaves_nothing(target: str, command: list[str], out_dir: Path, tmp_path: Path) -> None:
    """A real SIGINT, sent once the command has entered the phase (the phase is replaced by a
    sleep that marks its entry), exits 130 with one line and leaves no file."""
    marker = tmp_path / "entered"
    args = [command[0], str(LENET), "-o", str(out_dir / "o.onnx"), *command[1:]]
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_DRIVER, str(marker), target, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == "Interrupted: nothing written"
    assert list(out_dir.iterdir()) == []


# ----------------------------------------------------------------------------- models random data cannot drive


def _gated_model() -> onnx.ModelProto:
    """``y = x @ W`` when ``sr == 16000``; any other ``sr`` reaches a Gather whose indices are out
    of range, which onnxruntime refuses at run time (as Silero VAD's ``If`` refuses sample rates
    it was not trained for)."""
    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 8])])
    far = numpy_helper.from_array(np.full(8, 100, np.int64), "far")
    other = helper.make_graph([helper.make_node("Gather", ["x", "far"], ["e"], axis=1)], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 8])], [far])
    nodes = [
        helper.make_node("Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))),
        helper.make_node("Equal", ["sr", "rate"], ["ok"]),
        helper.make_node("If", ["ok"], ["y"], then_branch=then, else_branch=other),
    ]
    graph = helper.make_graph(
        nodes, "gated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8)


@pytest.fixture()
def gated(out_dir: Path) -> tuple[Path, Path]:
    model = out_dir / "gated.onnx"
    onnx.save(_gated_model(), model)
    data = out_dir / "gated_data.npz"
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.standard_normal((3, 1, 16)).astype(np.float32), sr=np.full(3, 16000, np.int64))
    return model, data


@pytest.mark.parametrize("command", [["simplify"], ["fp16"], ["fp16", "--weights-only"]])
def test_random_inputs_that_cannot_drive_the_model_name_the_fix(command: list[str], out_dir: Path,
                                                                gated: tuple[Path, Path]) -> None:
    model, _ = gated
    result = _invoke([*command, str(model), "-o", str(out_dir / "o.onnx")], out_dir, model=model, code=1,
                     needle="--data")
    assert "onnxruntime" in result.stderr


@pytest.mark.parametrize("command", [["fp16"], ["fp16", "--weights-only"]])
def test_user_data_drives_and_verifies_the_model(command: list[str], out_dir: Path, gated: tuple[Path, Path]) -> None:
    model, data = gated
    out = out_dir / "o.onnx"
    result = CliRunner().invoke(main, [*command, str(model), "-o", str(out), "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "verification: passed (3 samples of --data" in result.stdout
    onnx.checker.check_model(onnx.load(out), full_check=True)


def _slice_model() -> onnx.ModelProto:
    """``y = Slice(x, starts, ends, axes) @ W``: the ``axes`` input must hold a valid axis, which
    random integers (0..7) rarely are for a rank-2 input."""
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"])],
        "slice_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("starts", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("ends", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_dynamic_quantize_of_a_model_random_inputs_cannot_drive(out_dir: Path) -> None:
    model = out_dir / "slice.onnx"
    onnx.save(_slice_model(), model)
    _invoke(["quantize", str(model), "-o", str(out_dir / "q.onnx"), "--mode", "dynamic", "--shape", "x=2x8",
             "--shape", "starts=1", "--shape", "ends=1", "--shape", "axes=1"], out_dir, model=model, code=1,
            needle="--data")
    data = out_dir / "slice_data.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((2, 2, 8)).astype(np.float32),
             starts=np.array([[2], [0]], np.int64), ends=np.array([[6], [4]], np.int64), axes=np.array([[1], [1]], np.int64))
    result = CliRunner().invoke(main, ["quantize", str(model), "-o", str(out_dir / "q.onnx"), "--mode", "dynamic",
                                       "--data", str(data)])
    assert result.exit_code == 0, result.output
    assert "verification: passed (2 samples of --data" in result.stdout
    assert "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(out_dir / "q.onnx").graph.node}


def test_fp16_calibration_with_nan_data_is_refused(out_dir: Path) -> None:
    calib = _lenet_data(out_dir / "nan.npz", poison=lambda x: x.fill(np.nan))
    _invoke(["fp16", str(LENET), "-o", str(out_dir / "h.onnx"), "--calib", str(calib)], out_dir, model=LENET, code=1,
            needle="NaN")


def test_quantize_with_nothing_eligible_writes_nothing(out_dir: Path, gated: tuple[Path, Path]) -> None:
    model, data = gated  # the only MatMul sits inside the If
    result = _invoke(["quantize", str(model), "-o", str(out_dir / "q.onnx"), "--mode", "dynamic", "--data", str(data)],
                     out_dir, model=model, code=1, needle="nothing to do")
    assert "subgraph" in result.stderr


def test_simplify_with_nothing_to_do_says_unchanged(out_dir: Path, tmp_path: Path) -> None:
    model = _save(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2, 3])], [_vi("y", [2, 3])])
    result = CliRunner().invoke(main, ["simplify", str(model), "-o", str(out_dir / "s.onnx")])
    assert result.exit_code == 0, result.output
    assert "UNCHANGED" in result.stdout and "UNCHANGED" in result.stderr


# ----------------------------------------------------------------------------- bad data


def _lenet_data(path: Path, *, labels: np.ndarray | None = None, poison: Callable[[np.ndarray], None] | None = None) -> Path:
    with np.load(TEST) as archive:
        inputs = archive["input"][:20].copy()
        truth = archive["labels"][:20]
    if poison is not None:
        poison(inputs)
    arrays = {"input": inputs, "labels": truth if labels is None else labels}
    np.savez(path, **arrays)
    return path


def _nan_at_3(x: np.ndarray) -> None:
    x[3, 0, 5, 5] = np.nan


def test_nan_in_calibration_data_names_input_and_sample(out_dir: Path) -> None:
    calib = _lenet_data(out_dir / "nan.npz", poison=_nan_at_3)
    _invoke(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(calib)], out_dir, model=LENET,
            code=1, needle="sample 3")


def test_all_nan_calibration_data_is_refused(out_dir: Path) -> None:
    calib = _lenet_data(out_dir / "nan.npz", poison=lambda x: x.fill(np.nan))
    _invoke(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(calib)], out_dir, model=LENET,
            code=1, needle="'input'")


def test_inf_in_eval_data_names_it(out_dir: Path) -> None:
    data = _lenet_data(out_dir / "inf.npz", poison=lambda x: x.__setitem__((7, 0, 0, 0), np.inf))
    _invoke(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB), "--eval", str(data)],
            out_dir, model=LENET, code=1, needle="sample 7")


def test_skip_nonfinite_drops_and_counts(out_dir: Path) -> None:
    calib = _lenet_data(out_dir / "nan.npz", poison=_nan_at_3)
    out = out_dir / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(LENET), "-o", str(out), "--calib", str(calib), "--skip-nonfinite",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert "19" in " ".join(str(s["stats"].get("samples")) for s in __import__("json").loads(result.stdout)["steps"])


@pytest.mark.parametrize(("labels", "needle"), [
    (np.eye(10, dtype=np.int64)[np.arange(20) % 10], "one-hot"),
    (np.arange(20, dtype=np.float32) % 10, "float"),
    (np.full(20, 12, np.int64), "range"),
])
def test_bad_labels_are_refused(labels: np.ndarray, needle: str, out_dir: Path) -> None:
    data = _lenet_data(out_dir / "labels.npz", labels=labels)
    _invoke(["quantize", str(LENET), "-o", str(out_dir / "q.onnx"), "--calib", str(CALIB), "--eval", str(data)],
            out_dir, model=LENET, code=1, needle=needle)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("args", [
    ["quantize", "--calib", str(CALIB), "--exclude-node", "/conv1/Convv"],
    ["quantize", "--calib", str(CALIB), "--exclude-op", "Convv"],
    ["fp16", "--block-op", "Convv"],
    ["fp16", "--block-node", "nope"],
    ["prune", "--exclude-node", "nope"],
])
def test_unknown_names_are_usage_errors(args: list[str], out_dir: Path) -> None:
    command, *rest = args
    result = _invoke([command, str(LENET), "-o", str(out_dir / "o.onnx"), *rest], out_dir, model=LENET, code=2,
                     needle="not")
    assert rest[-1] in result.stderr


def test_ctrl_c_during_a_prune_probe(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from passes.prune import _sensitivity

    real = _sensitivity.Meter.__call__
    calls = []

    def probe(self: object, removal: object) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, removal)

    monkeypatch.setattr(_sensitivity.Meter, "__call__", probe)
    _check_interrupted(["prune", str(LENET), "-o", str(out_dir / "p.onnx"), "--calib", str(CALIB)], out_dir)
    assert len(calls) == 3


def test_prune_progress_reports_the_probes() -> None:
    from onnxslim.prune import prune_file
    from passes.prune import PruneOptions

    seen: list[tuple[str, int, int]] = []
    with pytest.raises(Exception):  # noqa: B017 - only the progress calls matter; the target folder is missing
        prune_file(LENET, Path("/nonexistent-folder/p.onnx"), options=PruneOptions(ratio=0.3), calib=CALIB,
                   progress=lambda *a: seen.append(a))
    assert seen == []  # the output folder is refused before any work
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        prune_file(LENET, Path(tmp) / "p.onnx", options=PruneOptions(ratio=0.3), calib=CALIB,
                   progress=lambda *a: seen.append(a))
    dones = [done for label, done, _ in seen if label == "probing channel groups"]
    assert len(dones) >= 2 and dones == sorted(dones) and dones[0] == 1
    assert all(done <= total for _, done, total in seen)


def test_prune_with_nothing_prunable_names_why(out_dir: Path) -> None:
    model = _save(out_dir / "one_conv.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], [_vi("x", [1, 3, 8, 8])],
                  [_vi("y", [1, 4, 6, 6])], [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    _invoke(["prune", str(model), "-o", str(out_dir / "p.onnx")], out_dir, model=model, code=1, needle="graph output")


def test_sequence_outputs_are_compared_not_crashed_on(out_dir: Path) -> None:
    """An output that is a sequence of tensors (SequenceConstruct) is verified element by element."""
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Relu", ["i"], ["r"]),
             helper.make_node("SequenceConstruct", ["r", "x"], ["seq"])]
    model = _save(out_dir / "seq.onnx", nodes, [_vi("x", [2, 3])],
                  [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2, 3])])
    result = CliRunner().invoke(main, ["simplify", str(model), "-o", str(out_dir / "s.onnx")])
    assert result.exit_code == 0, result.output
    assert "verification: passed" in result.stdout


def test_a_static_zero_dim_is_not_blamed_on_shape() -> None:
    from onnxslim.runtime import synthesize_feeds

    graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "empty_axes",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("axes", TensorProto.INT64, [0])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    feeds = synthesize_feeds(model, rng=np.random.default_rng(0))
    assert feeds["axes"].shape == (0,)


def test_dynamic_quantize_with_nothing_eligible_says_why(out_dir: Path) -> None:
    model = _save(out_dir / "mm.onnx", [helper.make_node("MatMul", ["x", "y"], ["z"])],
                  [_vi("x", [2, 3]), _vi("y", [3, 2])], [_vi("z", [2, 2])])
    result = _invoke(["quantize", str(model), "-o", str(out_dir / "q.onnx"), "--mode", "dynamic"], out_dir, model=model,
                     code=1, needle="nothing to do")
    assert "MatMul" in result.stderr and "weight" in result.stderr
