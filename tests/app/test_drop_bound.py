"""The drop's upper confidence bound (``--confidence``): bootstrap over the eval samples.

A drop decided by one sample of forty passes a budget on the point estimate and fails it at
90 % confidence; a drop spread evenly over every sample has a bound equal to the drop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from onnxslim.budget import Trial, bound_of
from onnxslim.cli import main
from onnxslim.validate import drop_bound, validate

N = 40


def _shift_model(shift: np.ndarray) -> onnx.ModelProto:
    """``y = x + shift``: class scores [n, 4]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "s"], ["y"])], "shift",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(shift.astype(np.float32), "s")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture()
def one_flip(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Reference, a candidate wrong on exactly one of N samples (accuracy drop 1/N), data with labels."""
    rng = np.random.default_rng(3)
    x = np.zeros((N, 1, 4), np.float32)
    classes = rng.integers(0, 4, N)
    x[np.arange(N), 0, classes] = 1.0  # a wide margin ...
    x[0, 0, :] = 0.0
    x[0, 0, 0], x[0, 0, 1] = 1.0, 0.99  # ... except sample 0: class 0 by 0.01
    classes[0] = 0
    ref, cand = tmp_path / "ref.onnx", tmp_path / "cand.onnx"
    ref.write_bytes(_shift_model(np.zeros(4)).SerializeToString())
    cand.write_bytes(_shift_model(np.array([0.0, 0.02, 0.0, 0.0])).SerializeToString())
    data = tmp_path / "data.npz"
    np.savez(data, x=x, labels=classes)
    return ref, cand, data


def test_bound_of_an_even_drop_is_the_drop() -> None:
    assert drop_bound(lambda idx: 0.25, N, 0.9) == 0.25
    per_sample = np.full(N, 0.1)
    assert drop_bound(lambda idx: float(per_sample[idx].mean()), N, 0.9) == pytest.approx(0.1)


def test_bound_of_one_sample_is_above_the_drop_and_seeded() -> None:
    per_sample = np.zeros(N)
    per_sample[7] = 1.0  # the whole drop (1/N) comes from one sample
    bound = drop_bound(lambda idx: float(per_sample[idx].mean()), N, 0.9)
    assert bound > 1.0 / N
    assert bound == drop_bound(lambda idx: float(per_sample[idx].mean()), N, 0.9)  # deterministic
    assert drop_bound(lambda idx: float(per_sample[idx].mean()), N, 0.5) <= bound


def test_gate_holds_the_bound_not_only_the_drop(one_flip: tuple) -> None:
    ref, cand, data = one_flip
    budget = 1.5 / N  # the measured drop (1/N) is within it
    point = validate(ref, cand, data=data, max_drop=budget)
    assert point.accuracy.drop == pytest.approx(1.0 / N) and point.accuracy.bound is None and point.passed
    bounded = validate(ref, cand, data=data, max_drop=budget, confidence=0.9)
    assert bounded.accuracy.bound > budget
    assert not bounded.passed and "upper bound" in bounded.failures[0]
    assert bound_of(bounded) == bounded.accuracy.bound
    # over the budget already: no resampling, the plain failure
    over = validate(ref, cand, data=data, max_drop=0.5 / N, confidence=0.9)
    assert over.accuracy.bound is None and "dropped 0.0250 >" in over.failures[0]


def test_metric_bound_follows_the_resample(one_flip: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task metric that is labeled accuracy gets the same bound as labeled accuracy: the
    resample is handed to the metric with its labels."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    ref, cand, data = one_flip
    report = validate(ref, cand, data=data, metric="_toy_metric:labeled_accuracy", max_drop=1.5 / N, confidence=0.9)
    assert report.metric.drop == pytest.approx(1.0 / N)
    assert report.metric.bound == pytest.approx(report.accuracy.bound)
    assert bound_of(report) == report.metric.bound and not report.passed


def test_cli_confidence_option(one_flip: tuple) -> None:
    ref, cand, data = one_flip
    args = ["validate", str(ref), str(cand), "--data", str(data), "--max-drop", str(1.5 / N)]
    strict = CliRunner().invoke(main, args)
    assert strict.exit_code == 1 and "upper bound" in strict.output
    loose = CliRunner().invoke(main, [*args, "--confidence", "0"])
    assert loose.exit_code == 0, loose.output
    bad = CliRunner().invoke(main, [*args, "--confidence", "1"])
    assert bad.exit_code == 2


def test_trial_says_its_bound() -> None:
    assert Trial(1.0, 0.004, True, 1.0, "x", 0.012).describe() == "drop +0.0040 (bound +0.0120) within"
    assert Trial(1.0, 0.05, False, 1.0).describe() == "drop +0.0500 over"
