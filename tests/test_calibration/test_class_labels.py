"""Class labels for labeled accuracy: one integer class id per sample, within the class axis.

:func:`calibration.datasets.check_class_labels` directly, and through
:func:`onnxslim.validate.validate` (``_RunResult.accuracy``), where such labels used to give a
silent "0.00% -> 0.00%".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.datasets import check_class_labels
from onnxslim.validate import validate
from passes._errors import DataError

N, C = 12, 5


@pytest.mark.parametrize(("labels", "message"), [
    (np.eye(C, dtype=np.int64)[np.arange(N) % C], r"labels are 2-D \[12, 5\] \(one-hot\?\): give one integer class id"),
    (np.zeros((N, 2, 2), np.int64), r"labels are 3-D \[12, 2, 2\]: give one integer class id"),
    (np.arange(N, dtype=np.float32) % C, r"labels are float32, not integers \(whole numbers: store them as integers"),
    (np.full(N, 0.5), r"labels are float64, not integers: give one integer"),
    (np.ones(N, bool), r"labels are bool, not integers"),
    (np.array(["cat"] * N), r"labels are <U3, not integers"),
    (np.arange(N - 1) % C, r"labels: 11 labels for 12 predictions"),
    (np.arange(N) % C - 1, r"labels: label -1 of sample 0 is out of range for 5 classes \(ids must be in \[0, 5\); 3 such labels\)"),
    (np.where(np.arange(N) == 7, C, 0), r"label 5 of sample 7 is out of range for 5 classes .*1 such label\)"),
])
def test_bad_labels_say_what_is_wrong(labels: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_class_labels(labels, count=N, classes=C)


def test_good_labels_come_back_one_dimensional() -> None:
    ids = np.arange(N) % C
    for given in (ids, ids.astype(np.int32), ids.astype(np.uint8), ids.reshape(N, 1)):
        out = check_class_labels(given, count=N, classes=C)
        assert out.shape == (N,) and np.array_equal(out, ids)


# -- through validate --------------------------------------------------------------------------


def _classifier(path: Path) -> Path:
    weight = np.random.default_rng(0).standard_normal((4, C)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["scores"])], "cls",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, C])],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def _data(path: Path, labels: np.ndarray) -> tuple[Path, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((N, 1, 4)).astype(np.float32)
    np.savez(path, x=x, labels=labels)
    return path, x


def test_validate_measures_accuracy_with_good_labels(tmp_path: Path) -> None:
    model = _classifier(tmp_path / "m.onnx")
    weight = numpy_helper.to_array(onnx.load(model).graph.initializer[0])
    x = np.random.default_rng(1).standard_normal((N, 1, 4)).astype(np.float32)
    predicted = np.argmax(x[:, 0] @ weight, axis=-1)
    labels = predicted.copy()
    labels[:3] = (labels[:3] + 1) % C  # three wrong: 75 %
    data, _ = _data(tmp_path / "d.npz", labels)
    report = validate(model, model, data=data)
    assert report.accuracy is not None and report.accuracy.labels == N
    assert report.accuracy.reference == pytest.approx(0.75) and report.accuracy.candidate == pytest.approx(0.75)
    small = validate(model, model, data=data, samples=4)  # fewer samples run: their labels are used
    assert small.accuracy is not None and small.accuracy.labels == 4 and small.accuracy.reference == pytest.approx(0.25)


@pytest.mark.parametrize(("labels", "needle"), [
    (np.eye(C, dtype=np.int64)[np.arange(N) % C], "one-hot"),
    (np.arange(N, dtype=np.float32) % C, "float32, not integers"),
    (np.full(N, C + 2, np.int64), "out of range for 5 classes"),
    (np.full(N, -1, np.int64), "label -1 of sample 0"),
])
def test_validate_refuses_labels_that_are_not_class_ids(tmp_path: Path, labels: np.ndarray, needle: str) -> None:
    model = _classifier(tmp_path / "m.onnx")
    data, _ = _data(tmp_path / "d.npz", labels)
    with pytest.raises(DataError, match=rf"labeled accuracy of 'scores': labels.*{needle}"):
        validate(model, model, data=data)
