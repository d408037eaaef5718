"""`onnxslim validate`: metrics against independent numpy figures, labels, user metrics, gates."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from onnxslim.cli import main
from onnxslim.validate import SQNR_CAP_DB, load_metric, validate
from passes._errors import OnnxSlimError

RNG = np.random.default_rng(0)
W = RNG.standard_normal((16, 8)).astype(np.float32)
X = RNG.standard_normal((12, 16)).astype(np.float32)  # 12 samples of [16]


def _matmul_model(weight: np.ndarray, *, out_name: str = "y", in_dtype: int = onnx.TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], [out_name])],
        "mm",
        [helper.make_tensor_value_info("x", in_dtype, ["n", 16])],
        [helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path, Path, float]:
    """Reference, candidate with W[3, 5] += 0.25, data, and the SQNR numpy computes for them."""
    perturbed = W.copy()
    perturbed[3, 5] += 0.25
    ref, cand = tmp_path / "ref.onnx", tmp_path / "cand.onnx"
    ref.write_bytes(_matmul_model(W).SerializeToString())
    cand.write_bytes(_matmul_model(perturbed).SerializeToString())
    data = tmp_path / "data.npz"
    np.savez(data, x=X)  # rank 2 = the model's rank: each sample keeps a batch axis of 1
    y_ref, y_cand = X.astype(np.float64) @ W, X.astype(np.float64) @ perturbed
    sqnr = 10 * np.log10(np.sum(y_ref**2) / np.sum((y_ref - y_cand) ** 2))
    return ref, cand, data, float(sqnr)


def test_model_against_itself(pair: tuple) -> None:
    ref, _, data, _ = pair
    report = validate(ref, ref, data=data)
    (out,) = report.outputs
    assert report.samples == 12 and out.samples == 12
    assert out.cosine == pytest.approx(1.0, abs=1e-12)
    assert out.sqnr_db == SQNR_CAP_DB
    assert out.max_abs_error == 0 and out.mean_abs_error == 0
    assert report.passed


def test_sqnr_of_a_known_perturbation_matches_numpy(pair: tuple) -> None:
    ref, cand, data, expected = pair
    report = validate(ref, cand, data=data)
    (out,) = report.outputs
    assert out.sqnr_db == pytest.approx(expected, abs=1e-3)
    assert out.max_abs_error == pytest.approx(0.25 * np.abs(X[:, 3]).max(), rel=1e-5)
    assert out.mean_abs_error == pytest.approx(0.25 * np.abs(X[:, 3]).mean() / 8, rel=1e-5)
    assert 0.99 < out.cosine < 1.0


def test_cli_sqnr_gate(pair: tuple) -> None:
    ref, cand, data, expected = pair
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(ref), str(cand), "--data", str(data), "--min-sqnr", f"{expected - 1:.3f}"])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.stdout
    bad = runner.invoke(main, ["validate", str(ref), str(cand), "--data", str(data), "--min-sqnr", f"{expected + 1:.3f}"])
    assert bad.exit_code == 1
    assert re.search(r"gate not met: output 'y': SQNR [\d.]+ dB < [\d.]+ dB", bad.stderr)
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_json_is_one_document(pair: tuple) -> None:
    ref, cand, data, expected = pair
    result = CliRunner().invoke(main, ["validate", str(ref), str(cand), "--data", str(data), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["outputs"][0]["sqnr_db"] == pytest.approx(expected, abs=1e-3)
    assert doc["passed"] is True


def test_lenet_labeled_accuracy_matches_models_readme(lenet_path: Path, repo_root: Path) -> None:
    report = validate(lenet_path, lenet_path, data=repo_root / "models" / "lenet5_digits_test.npz", max_drop=0.0)
    acc = report.accuracy
    assert acc is not None and acc.output == "logits" and acc.labels == 540
    readme = (repo_root / "models" / "README.md").read_text()
    correct = round(acc.reference * 540)
    assert f"{acc.reference * 100:.2f}% ({correct}/540)" in readme
    assert acc.reference >= 0.95 and acc.drop == 0
    assert report.passed


def test_user_metric(pair: tuple) -> None:
    ref, cand, data, _ = pair
    report = validate(ref, cand, data=data, metric="_toy_metric:mean_output")
    y_ref, y_cand = X @ W, X @ np.where(np.arange(W.size).reshape(W.shape) == 3 * 8 + 5, W + 0.25, W)
    assert report.metric is not None
    assert report.metric.reference["metric"] == pytest.approx(float(y_ref.mean()), rel=1e-5)
    assert report.metric.candidate["metric"] == pytest.approx(float(y_cand.mean()), rel=1e-5)
    two = validate(ref, cand, data=data, metric="_toy_metric:two_keys", max_drop=10.0)
    assert two.metric.headline == "closeness" and two.metric.candidate["count"] == 12.0
    assert two.metric.reference["closeness"] == 0.0 and two.metric.drop > 0
    strict = validate(ref, cand, data=data, metric="_toy_metric:two_keys", max_drop=1e-6)
    assert strict.failures and "metric closeness dropped" in strict.failures[0]


@pytest.mark.parametrize("spec", ["nocolon", "no_such_module_xyz:f", "_toy_metric:missing"])
def test_bad_metric_spec(pair: tuple, spec: str) -> None:
    ref, cand, data, _ = pair
    with pytest.raises(OnnxSlimError, match="--metric"):
        validate(ref, cand, data=data, metric=spec)


def test_mismatched_models_exit_1_with_one_line(tmp_path: Path, pair: tuple) -> None:
    ref, _, data, _ = pair
    other = tmp_path / "other.onnx"
    other.write_bytes(_matmul_model(W, out_name="z").SerializeToString())
    result = CliRunner().invoke(main, ["validate", str(ref), str(other), "--data", str(data)])
    assert result.exit_code == 1
    assert "different outputs: 'y' is only in the reference" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    dtype = tmp_path / "dtype.onnx"
    dtype.write_bytes(_matmul_model(W.astype(np.float64), in_dtype=onnx.TensorProto.DOUBLE).SerializeToString())
    with pytest.raises(OnnxSlimError, match="input 'x' is float32 in the reference but float64"):
        validate(ref, dtype, data=data)


def test_data_that_does_not_fit_is_named(tmp_path: Path, pair: tuple) -> None:
    ref, cand, _, _ = pair
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=X.astype(np.float64))
    with pytest.raises(OnnxSlimError, match="input 'x' is float64, the model expects float32"):
        validate(ref, cand, data=bad)


def test_random_inputs_take_batch_one_unless_given(pair: tuple) -> None:
    ref, cand, _, _ = pair
    report = validate(ref, cand, samples=2)  # the dynamic batch dim 'n' defaults to 1, and the notes say so
    assert report.samples == 2 and "dynamic batch dim set to 1" in report.notes[0]
    report = validate(ref, cand, shapes={"x": (3, 16)}, samples=4)
    assert report.samples == 4 and "random inputs" in report.notes[0]
    assert report.accuracy is None


def test_max_drop_without_labels_or_metric_fails(pair: tuple) -> None:
    ref, _, data, _ = pair
    report = validate(ref, ref, data=data, max_drop=0.01)
    assert not report.passed and "needs labels" in report.failures[0]


def test_metric_module_from_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_task_metric.py").write_text("def score(c, r, d):\n    return {'s': 0.5}\n")
    monkeypatch.chdir(tmp_path)
    func, runner = load_metric("my_task_metric:score")
    assert func(None, None, None) == {"s": 0.5} and runner is None
    assert str(tmp_path) not in sys.path  # the folder is only added for the import
