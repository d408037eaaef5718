"""`python -m benchmarks.run_tasks`: data cache, one table per task, end to end through validate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from benchmarks.run_tasks import main
from benchmarks.tasks import load_task, metric_spec, reference_model
from calibration.datasets import NpzDataset, input_specs
from onnxslim.validate import validate

LENET = Path(__file__).resolve().parents[2] / "models" / "lenet5_digits.onnx"


def test_digits_table_and_cache(tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    shutil.copy(LENET, copy)
    args = ["digits", "ref", str(copy), "--data-dir", str(tmp_path / "data"), "--n-eval", "40", "--n-calib", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("task digits:") and "(40 samples)" in lines[0]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "model", "accuracy", "fp32_agreement", "drop (accuracy)", "SQNR dB (logits)", "size"]
    assert "lenet5_digits.onnx (fp32)" in lines[4] and "+0.0000" in lines[5] and "200.00" in lines[5]
    cached = tmp_path / "data" / "digits" / "seed0-eval40-calib8" / "eval.npz"
    stamp = cached.stat().st_mtime_ns
    again = CliRunner().invoke(main, [*args, "--json"])
    assert again.exit_code == 0 and cached.stat().st_mtime_ns == stamp  # reused, not regenerated
    report = json.loads(again.stdout)
    assert [r["drop"] for r in report["rows"]] == [0.0, 0.0] and report["headline"] == "accuracy"


def test_reference_alone_and_bad_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["digits", "--data-dir", str(tmp_path), "--n-eval", "20"])
    assert result.exit_code == 0 and result.stdout.count("lenet5_digits.onnx (fp32)") == 1
    bad = CliRunner().invoke(main, ["digits", str(tmp_path / "missing.onnx"), "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "no such model file" in bad.output
    unknown = CliRunner().invoke(main, ["nope"])
    assert unknown.exit_code == 2


def test_vad_is_skipped_without_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vad = load_task("vad")
    monkeypatch.setattr(vad.shutil, "which", lambda name: None)
    result = CliRunner().invoke(main, ["vad", str(LENET), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and result.stdout.startswith("skipped: task 'vad' needs the espeak-ng program")


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["ocr-rec", "ocr-cls", "ocr-det", "detect", "vad"])
def test_zoo_task_end_to_end(name: str, tmp_path: Path) -> None:
    """Small data through onnxslim.validate: the data fits the model, the reference has no drop."""
    for module in ("PIL", "scipy", "skimage", "sklearn"):
        pytest.importorskip(module)
    task = load_task(name)
    if name == "vad" and not task.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    data = task.generate(tmp_path, seed=0, n_eval=4, n_calib=4)
    model = reference_model(task)
    report = validate(model, model, data=data.eval_path, metric=metric_spec(name))
    assert report.samples == 4 and report.metric is not None and report.metric.drop == 0.0
    assert all(0.0 <= v <= 1.0 for k, v in report.metric.reference.items() if k != "pseudo_gt_boxes")
    if name == "vad":
        with np.load(data.calib_path) as z:
            assert z["input"].shape == (4, 576) and z["state"].shape == (4, 2, 1, 128) and z["sr"].shape == (4,)
        sample = next(iter(NpzDataset(data.calib_path, input_specs(onnx.load(model)))))
        assert isinstance(sample["sr"], np.ndarray) and sample["sr"].shape == ()
    calib = validate(model, model, data=data.calib_path)  # the calibration file fits the model too
    assert calib.samples == 4 and np.isfinite(calib.outputs[0].cosine)
