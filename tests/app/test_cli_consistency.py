"""The same rules in every command: a dynamic batch dim is 1 unless given (and the output says
so), other unset dynamic dims are all named with a ``--shape`` that can be pasted back, a dim
below 1 is a usage error (exit 2), and ``calibrate`` checks its output before any work, writes
atomically and speaks JSON with ``--json``."""

from __future__ import annotations

import errno
import json
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper

import calibration.table
import onnxslim.calibrate
from onnxslim.cli import main


def _one_line_error(result: Result, needle: str, *, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _spatial_model(path: Path) -> Path:
    """y = Relu(x), x [N, 3, H, W]: dynamic batch and two other dynamic dims."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "spatial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


# ----------------------------------------------------------------------------- the batch


def test_bench_runs_a_dynamic_batch_model_at_batch_one_and_says_so(lenet_path: Path) -> None:
    args = ["bench", str(lenet_path), "--runs", "3", "--warmup", "1", "--no-isolate"]
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "note: dynamic batch dim set to 1 (input 'input')" in text.stdout
    doc = json.loads(CliRunner().invoke(main, [*args, "--json"]).stdout)
    assert doc["batch"] == 1 and doc["inputs"] == {"input": [1, 1, 32, 32]}
    given = json.loads(CliRunner().invoke(main, [*args, "--json", "--batch", "4"]).stdout)
    assert given["inputs"] == {"input": [4, 1, 32, 32]}
    assert not any("dynamic batch dim" in n for n in given["notes"])


def test_validate_without_data_runs_at_batch_one_and_says_so(lenet_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(lenet_path), str(lenet_path), "--samples", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["samples"] == 2
    assert any("dynamic batch dim set to 1" in n for n in [doc["data"], *doc["notes"]]), doc


# ----------------------------------------------------------------------------- other dynamic dims


def test_other_dynamic_dims_are_all_named_and_the_flag_pastes_back(tmp_path: Path) -> None:
    model = _spatial_model(tmp_path / "spatial.onnx")
    args = ["bench", str(model), "--runs", "1", "--warmup", "0", "--no-isolate"]
    line = _one_line_error(CliRunner().invoke(main, args), "input 'x' has dynamic dims 'H', 'W'")
    assert line.endswith("(shape 1x3xHxW): give --shape x=1x3x224x224")
    pasted = shlex.split(line.split(": give ")[1])
    result = CliRunner().invoke(main, [*args, *pasted, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"] == {"x": [1, 3, 224, 224]}


# ----------------------------------------------------------------------------- dims below 1


@pytest.mark.parametrize("dims", ["0x1x32x32", "1x1x0x32", "-1x1x32x32"])
@pytest.mark.parametrize("command", ["inspect", "bench", "validate", "simplify"])
def test_a_shape_dim_below_one_is_a_usage_error(command: str, dims: str, lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    args = {"inspect": [str(lenet_path)], "bench": [str(lenet_path), "--no-isolate"],
            "validate": [str(lenet_path), str(lenet_path)], "simplify": [str(lenet_path), "-o", str(out)]}[command]
    result = CliRunner().invoke(main, [command, *args, "--shape", f"input={dims}"])
    assert result.exit_code == 2, result.output
    assert "every dim must be at least 1" in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- inspect's hint


def test_inspect_hint_is_pasteable_and_names_the_dynamic_dims(lenet_path: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(lenet_path)])
    assert result.exit_code == 0, result.output
    hint = next(line for line in result.stdout.splitlines() if "--shape" in line)
    assert "with dynamic dims (input 'input': 'batch')" in hint
    pasted = shlex.split(hint.split("e.g.: ")[1])
    assert pasted == ["--shape", "input=1x1x32x32"]
    again = CliRunner().invoke(main, ["inspect", str(lenet_path), *pasted, "--json"])
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert doc["total_macs"] and doc["macs_unknown_nodes"] == 0


# ----------------------------------------------------------------------------- calibrate


def _calibrate(lenet_path: Path, output: Path, *extra: str) -> Result:
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    return CliRunner().invoke(main, ["calibrate", str(lenet_path), "--calib", str(calib), "-o", str(output),
                                     "--samples", "16", *extra])


def test_calibrate_json_is_one_document(lenet_path: Path, tmp_path: Path) -> None:
    table = tmp_path / "table.json"
    result = _calibrate(lenet_path, table, "--json", "--method", "percentile")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # the whole of stdout
    saved = json.loads(table.read_text())
    assert doc["output"] == str(table) and doc["method"] == "percentile" == saved["method"]
    assert doc["samples"] == 16 == saved["samples"] and doc["tensors"] == len(saved["tensors"]) > 0
    assert doc["summary"].startswith(f"calibrated {doc['tensors']} tensors with 'percentile' on 16 samples")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]  # no temporary file left


@pytest.mark.parametrize("where", ["under_a_file", "missing_folder"])
def test_calibrate_refuses_an_unwritable_output_before_any_work(
    where: str, lenet_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibration ran before the output was checked")

    monkeypatch.setattr(onnxslim.calibrate, "collect", never)
    (tmp_path / "a_file").write_text("not a folder")
    output = tmp_path / ("a_file" if where == "under_a_file" else "missing") / "table.json"
    _one_line_error(_calibrate(lenet_path, output), str(output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_calibrate_refuses_to_write_onto_the_model(lenet_path: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(lenet_path.read_bytes())
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    result = CliRunner().invoke(main, ["calibrate", str(model), "--calib", str(calib), "-o", str(model)])
    _one_line_error(result, "refusing to overwrite the input model")
    assert model.read_bytes() == lenet_path.read_bytes()


def test_calibrate_write_failure_is_one_line_and_keeps_the_old_table(
    lenet_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "table.json"
    table.write_text("old")

    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(calibration.table.os, "replace", disk_full)
    _one_line_error(_calibrate(lenet_path, table), "No space left on device")
    assert table.read_text() == "old"  # the rename never happened: the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_calibrate_json_leaves_nothing_on_stdout_on_failure(lenet_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((2, 1, 16, 16), np.float32))
    result = CliRunner().invoke(main, ["calibrate", str(lenet_path), "--calib", str(bad), "-o",
                                       str(tmp_path / "t.json"), "--json"])
    _one_line_error(result, "input")
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]
