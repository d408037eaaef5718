"""Shared task helpers: scoring counts, IoU, matching, edit distance, disjointness, RNG streams."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.tasks import TASKS, load_task
from benchmarks.tasks._common import (CALIB_STREAM, EVAL_STREAM, assert_disjoint, count_matches, edit_distance,
                                      f1_score, iou_matrix, sample_digests, stream, write_task)
from passes._errors import DataError, OnnxSlimError


def test_f1_known_counts() -> None:
    # tp=3, fp=1, fn=2: precision 3/4, recall 3/5, F1 = 2*0.75*0.6/1.35 = 2/3
    assert f1_score(3, 1, 2) == pytest.approx({"f1": 2 / 3, "precision": 0.75, "recall": 0.6})
    assert f1_score(5, 0, 0)["f1"] == 1.0
    assert f1_score(0, 4, 3)["f1"] == 0.0
    assert f1_score(0, 0, 0) == {"f1": 1.0, "precision": 1.0, "recall": 1.0}  # nothing to find, nothing found


def test_iou_and_matching() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    b = np.array([[0, 0, 10, 20], [100, 100, 110, 110]], dtype=np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(0.5)  # 100 / (100 + 200 - 100)
    assert iou[1, 1] == 0.0 and iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)
    assert count_matches(iou, 0.5) == 1
    # one prediction cannot match two truths
    assert count_matches(np.array([[0.9, 0.8]]), 0.5) == 1
    assert count_matches(np.zeros((0, 3)), 0.5) == 0


def test_edit_distance() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0


def test_streams_differ_and_repeat() -> None:
    assert np.array_equal(stream(0, EVAL_STREAM).random(4), stream(0, EVAL_STREAM).random(4))
    assert not np.array_equal(stream(0, EVAL_STREAM).random(4), stream(0, CALIB_STREAM).random(4))
    assert not np.array_equal(stream(0, EVAL_STREAM).random(4), stream(1, EVAL_STREAM).random(4))


def test_disjointness_is_checked_on_content(tmp_path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert len(set(sample_digests({"x": x, "labels": np.arange(4)}))) == 4
    assert_disjoint({"x": x[:2]}, {"x": x[2:]})
    with pytest.raises(DataError, match="calibration sample 0 equals eval sample 3"):
        write_task(tmp_path, {"x": x}, {"x": x[3:]})
    assert not (tmp_path / "eval.npz").exists()
    data = write_task(tmp_path, {"x": x[:2], "labels": np.arange(2)}, {"x": x[2:]})
    with np.load(data.eval_path) as z:
        assert sorted(z.files) == ["labels", "x"]


def test_registry() -> None:
    assert list(TASKS) == ["digits", "ocr-rec", "ocr-cls", "ocr-det", "detect", "vad", "layout", "doc-orient"]
    assert all(module == f"benchmarks.tasks.{name.replace('-', '_')}" for name, module in TASKS.items())
    with pytest.raises(OnnxSlimError, match="unknown task 'nope'"):
        load_task("nope")
