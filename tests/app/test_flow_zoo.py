"""The one flow on Silero VAD's If-wrapped export (``silero-vad-if``), which random inputs cannot
drive: with its own data every command verifies it, or declines with the reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from _helpers import run_ort
from onnxslim.cli import main

pytestmark = pytest.mark.zoo


def _data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, input=(0.1 * rng.standard_normal((3, 1, 576))).astype(np.float32),
             state=np.zeros((3, 2, 1, 128), np.float32), sr=np.full(3, 16000, np.int64))
    return path


@pytest.mark.parametrize("extra", [[], ["--weights-only"]])
def test_silero_fp16_with_its_data(extra: list[str], zoo_model, tmp_path: Path) -> None:
    source = zoo_model("silero-vad-if")
    data = _data(tmp_path / "data.npz")
    out = tmp_path / "fp16.onnx"
    result = CliRunner().invoke(main, ["fp16", str(source), "-o", str(out), "--data", str(data), *extra])
    assert result.exit_code == 0, result.output
    assert "verification: passed (3 samples of --data" in result.stdout
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    feeds = {k: np.asarray(v[0]) for k, v in np.load(data).items()}
    ref, got = run_ort(onnx.load(source), feeds), run_ort(model, feeds)
    assert np.allclose(ref["output"], got["output"], atol=2e-3)


@pytest.mark.parametrize(("command", "needle"), [
    (["quantize", "--mode", "dynamic"], "nothing to do"),
    (["prune", "--calib"], "prune"),
    (["simplify"], "--data"),
])
def test_silero_declines_cleanly(command: list[str], needle: str, zoo_model, tmp_path: Path) -> None:
    source = zoo_model("silero-vad-if")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    data = _data(tmp_path / "data.npz")
    args = [command[0], str(source), "-o", str(tmp_path / "o.onnx"), *command[1:]]
    args += [str(data)] if command[-1] == "--calib" else ([] if command == ["simplify"] else ["--data", str(data)])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
    assert not (tmp_path / "o.onnx").exists()
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
