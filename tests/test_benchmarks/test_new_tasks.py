"""The tasks of the two models added for issue 14: ``layout`` (PicoDet) and ``doc-orient`` (PP-LCNet).

Offline and fast by default: the metrics on fabricated outputs (decoding, matching, ranking,
labels), the resizers against hand-checked cases, and data generation on 4-8 samples
(deterministic per seed, another seed differs, calibration and eval never share a sample).
Tests that run the real models are marked ``zoo`` (``python -m pytest -m zoo tests/test_benchmarks/test_new_tasks.py``).
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")

from benchmarks.tasks import TASKS, load_task
from benchmarks.tasks._common import sample_digests

layout = load_task("layout")
doc_orient = load_task("doc-orient")
N_CLASSES = len(layout.CLASSES)


def _dataset(labels=None) -> types.SimpleNamespace:
    return types.SimpleNamespace(labels=labels, source="fabricated")


# --- layout: fabricated PicoDet outputs ---------------------------------------------------------


def _empty_outputs() -> dict[str, np.ndarray]:
    """The 8 outputs of one image, all scores 0 and all distributions flat, named as the model names them."""
    out = {}
    for k, stride in enumerate(layout.STRIDES):
        anchors = -(-layout.HEIGHT // stride) * -(-layout.WIDTH // stride)
        out[f"transpose_{2 * k}.tmp_0"] = np.zeros((1, anchors, N_CLASSES), np.float32)
        out[f"transpose_{2 * k + 1}.tmp_0"] = np.zeros((1, anchors, 4 * layout.BINS), np.float32)
    return out


def _put(outputs: dict, *, level: int, row: int, col: int, cls: int, score: float, sides: tuple[int, int, int, int]) -> tuple:
    """One anchor scoring ``score`` for ``cls`` with side distances ``sides`` (in bins); returns its box."""
    stride = layout.STRIDES[level]
    cols = -(-layout.WIDTH // stride)
    a = row * cols + col
    outputs[f"transpose_{2 * level}.tmp_0"][0, a, cls] = score
    dist = outputs[f"transpose_{2 * level + 1}.tmp_0"][0, a].reshape(4, layout.BINS)
    dist[:] = -50.0
    for side, b in enumerate(sides):
        dist[side, b] = 50.0  # softmax ~ one-hot: the expectation is exactly bin b
    cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
    left, top, right, bottom = (s * stride for s in sides)
    return (cx - left, cy - top, cx + right, cy + bottom)


def _page_outputs(boxes: list[tuple[int, int, int, float]]) -> dict:
    """Outputs holding one anchor per ``(row, col, cls, score)`` at stride 16, sides of 2, 1, 3, 2 bins."""
    out = _empty_outputs()
    for row, col, cls, score in boxes:
        _put(out, level=1, row=row, col=col, cls=cls, score=score, sides=(2, 1, 3, 2))
    return out


def test_postprocess_decodes_the_distribution_to_a_box() -> None:
    out = _empty_outputs()
    expected = _put(out, level=2, row=10, col=7, cls=4, score=0.9, sides=(3, 1, 2, 5))
    boxes, scores, classes = layout.postprocess(out)
    assert classes.tolist() == [4] and scores[0] == pytest.approx(0.9)
    assert boxes[0] == pytest.approx(expected, abs=1e-3)
    assert expected == (7.5 * 32 - 96, 10.5 * 32 - 32, 7.5 * 32 + 64, 10.5 * 32 + 160)


def test_postprocess_matches_levels_by_shape_not_by_name_order() -> None:
    out = _page_outputs([(5, 5, 0, 0.8)])
    shuffled = dict(reversed(list(out.items())))
    a, b = layout.postprocess(out), layout.postprocess(shuffled)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a[0]) == 1


def test_postprocess_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    out = _page_outputs([(5, 5, 0, 0.8), (5, 6, 0, 0.7), (5, 6, 1, 0.6), (30, 20, 0, 0.4)])
    _, scores, classes = layout.postprocess(out)
    # (5, 6) class 0 overlaps (5, 5) at IoU 0.67 > 0.5: suppressed; class 1 is kept; 0.4 < 0.5 is cut
    assert scores.tolist() == pytest.approx([0.8, 0.6]) and classes.tolist() == [0, 1]
    assert len(layout.postprocess(out, 0.3)[0]) == 3


def test_postprocess_clips_boxes_to_the_input() -> None:
    out = _empty_outputs()
    _put(out, level=0, row=0, col=0, cls=2, score=0.9, sides=(7, 7, 1, 1))
    (box,), _, _ = layout.postprocess(out)
    assert box.tolist() == pytest.approx([0, 0, 12, 12])


def test_layout_metric_reference_scores_one() -> None:
    ref = [_page_outputs([(5, 5, 0, 0.9), (20, 10, 1, 0.8), (40, 20, 0, 0.7)]) for _ in range(3)]
    m = layout.metric(ref, ref, _dataset())
    assert next(iter(m)) == "map50"
    assert m["map50"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0 and m["pseudo_gt_boxes"] == 9
    # class 0 has 6 pseudo-GT boxes, class 1 only 3: fewer than MIN_CLASS_BOXES, so not averaged
    assert m["ap50 class 0"] == 1.0 and "ap50 class 1" not in m


def test_layout_metric_counts_a_missing_box_and_a_wrong_class() -> None:
    ref = [_page_outputs([(5, 5, 0, 0.9), (20, 10, 0, 0.8), (40, 20, 0, 0.7)]) for _ in range(2)]
    missing = [_page_outputs([(5, 5, 0, 0.9), (20, 10, 0, 0.8)]), ref[1]]
    m = layout.metric(missing, ref, _dataset())
    assert m["recall"] == pytest.approx(5 / 6) and m["precision"] == 1.0 and m["map50"] == pytest.approx(5 / 6)
    swapped = [_page_outputs([(5, 5, 3, 0.9), (20, 10, 0, 0.8), (40, 20, 0, 0.7)]), ref[1]]
    m = layout.metric(swapped, ref, _dataset())
    assert m["precision"] == pytest.approx(5 / 6) and m["recall"] == pytest.approx(5 / 6)


def test_layout_metric_ranks_a_box_below_the_threshold_instead_of_dropping_it() -> None:
    ref = [_page_outputs([(5, 5, 0, 0.9), (20, 10, 0, 0.8), (40, 20, 0, 0.7), (10, 30, 0, 0.6), (30, 5, 0, 0.55)])]
    weaker = [_page_outputs([(5, 5, 0, 0.9), (20, 10, 0, 0.8), (40, 20, 0, 0.7), (10, 30, 0, 0.6), (30, 5, 0, 0.3)])]
    m = layout.metric(weaker, ref, _dataset())
    assert m["map50"] == 1.0  # still the lowest-ranked box, and a hit
    assert m["recall"] == pytest.approx(0.8)  # but not counted at confidence 0.5
    gone = [_page_outputs([(5, 5, 0, 0.9), (20, 10, 0, 0.8), (40, 20, 0, 0.7), (10, 30, 0, 0.6), (30, 5, 0, 0.01)])]
    assert layout.metric(gone, ref, _dataset())["map50"] == pytest.approx(0.8)


def test_layout_metric_scores_against_rendered_labels_when_given() -> None:
    out = _empty_outputs()
    box = _put(out, level=1, row=10, col=10, cls=0, score=0.9, sides=(2, 1, 3, 2))
    labels = np.full((1, layout.MAX_ELEMENTS, 5), -1.0, np.float32)
    labels[0, 0] = (*box, 0)
    labels[0, 1] = (300, 300, 400, 350, 0)  # a rendered paragraph the model missed
    m = layout.metric([out], [out], _dataset(labels))
    assert m["map50"] == 1.0 and m["map50_rendered"] == pytest.approx(0.5)
    assert "map50_rendered" not in layout.metric([out], [out], _dataset())


def test_layout_metric_on_pages_without_boxes() -> None:
    empty = [_empty_outputs()]
    assert layout.metric(empty, empty, _dataset())["map50"] == 1.0
    assert layout.metric([_page_outputs([(5, 5, 0, 0.9)])], empty, _dataset())["map50"] == 0.0


def test_resize_linear_matches_opencv_sampling() -> None:
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(layout.resize_linear(image, 3, 4), image)
    # halving: each output pixel is the mean of a 2x2 block (samples at 0.5, 2.5)
    half = layout.resize_linear(np.arange(16, dtype=np.float32).reshape(4, 4), 2, 2)
    assert half.tolist() == [[2.5, 4.5], [10.5, 12.5]]
    # doubling along one axis: 0.25/0.75 weights, edges clamped
    assert layout.resize_linear(np.array([[0.0, 4.0]]), 1, 4).tolist() == [[0.0, 1.0, 3.0, 4.0]]


def test_layout_preprocess_is_bgr_and_normalized() -> None:
    page = np.zeros((1000, 760, 3), np.uint8)
    page[:, :, 0] = 255  # red in RGB
    x = layout.preprocess(page)
    assert x.shape == (3, 800, 608) and x.dtype == np.float32
    # channel 2 (BGR's R) is 255 -> (1 - 0.406) / 0.225
    assert x[2].mean() == pytest.approx((1 - 0.406) / 0.225, abs=1e-5)
    assert x[0].mean() == pytest.approx(-0.485 / 0.229, abs=1e-5)


# --- doc-orient ---------------------------------------------------------------------------------


def _scores(classes: list[int]) -> list[dict]:
    out = []
    for c in classes:
        s = np.full((1, 4), 0.1, np.float32)
        s[0, c] = 0.7
        out.append({"fetch_name_0": s})
    return out


def test_doc_orient_metric_on_fabricated_scores() -> None:
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3], np.int64)
    ref = _scores([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3, 3])  # one error, in the second small group
    cand = _scores([0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 3, 3])  # one more, in the first (small) group
    m = doc_orient.metric(cand, ref, _dataset(labels))
    assert next(iter(m)) == "accuracy"
    assert m["accuracy"] == pytest.approx(10 / 12)
    assert m["fp32_agreement"] == pytest.approx(11 / 12)
    # small crops: samples 0-3 and 8-11 -> 6 right of 8
    assert m["accuracy small crops"] == pytest.approx(6 / 8)
    assert doc_orient.metric(ref, ref, _dataset(labels))["fp32_agreement"] == 1.0


def test_doc_orient_metric_needs_labels() -> None:
    with pytest.raises(Exception, match="labels"):
        doc_orient.metric(_scores([0]), _scores([0]), _dataset())


def test_doc_orient_small_crops_alternate_by_page() -> None:
    assert doc_orient.is_small(12).tolist() == [True] * 4 + [False] * 4 + [True] * 4


def test_resize_lanczos4_keeps_size_and_constants() -> None:
    image = np.random.default_rng(0).uniform(0, 255, (9, 11)).astype(np.float32)
    assert np.allclose(doc_orient.resize_lanczos4(image, 9, 11), image, atol=1e-4)
    flat = doc_orient.resize_lanczos4(np.full((20, 30, 3), 77.0, np.float32), 13, 47)
    assert flat.shape == (13, 47, 3) and np.allclose(flat, 77.0, atol=1e-3)


def test_doc_orient_preprocess_short_side_and_centre_crop() -> None:
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 300:] = 255  # right half white: after resize to 256 x 512 and the centre crop, the right half again
    x = doc_orient.preprocess(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # the edge lands at column 112 of the crop; Lanczos rings for ~4 pixels either side of it
    assert x[0, :, 120:].mean() == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)
    assert x[0, :, :105].mean() == pytest.approx(-0.485 / 0.229, abs=1e-4)


# --- data generation ----------------------------------------------------------------------------


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name,key,n_eval,n_calib", [("layout", "image", 2, 2), ("doc-orient", "x", 8, 4)])
def test_generate_is_deterministic_and_disjoint(name: str, key: str, n_eval: int, n_calib: int, tmp_path: Path) -> None:
    module = load_task(name)
    first = module.generate(tmp_path / "a", seed=0, n_eval=n_eval, n_calib=n_calib)
    again = module.generate(tmp_path / "b", seed=0, n_eval=n_eval, n_calib=n_calib)
    other = module.generate(tmp_path / "c", seed=1, n_eval=n_eval, n_calib=n_calib)
    ev, ca = _load(first.eval_path), _load(first.calib_path)
    for a, b in ((ev, _load(again.eval_path)), (ca, _load(again.calib_path))):
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert sorted(ev) == sorted([key, "labels"]) and sorted(ca) == [key]
    assert len(ev[key]) == n_eval and len(ca[key]) == n_calib
    assert not np.array_equal(ev[key], _load(other.eval_path)[key]), "another seed must give other data"
    assert not set(sample_digests(ev)) & set(sample_digests(ca))
    assert not set(sample_digests(ev)) & set(sample_digests(_load(other.calib_path)))


def test_layout_labels_are_boxes_in_the_input(tmp_path: Path) -> None:
    ev = _load(layout.generate(tmp_path, seed=3, n_eval=2, n_calib=1).eval_path)
    labels = ev["labels"]
    assert labels.shape == (2, layout.MAX_ELEMENTS, 5) and labels.dtype == np.float32
    rows = labels.reshape(-1, 5)
    rows = rows[rows[:, 4] >= 0]
    assert len(rows) >= 4
    assert (rows[:, 0] >= 0).all() and (rows[:, 2] <= layout.WIDTH).all() and (rows[:, 3] <= layout.HEIGHT).all()
    assert (rows[:, 2] > rows[:, 0]).all() and (rows[:, 3] > rows[:, 1]).all()
    assert set(rows[:, 4].astype(int)) <= set(range(N_CLASSES))


def test_layout_eval_and_calibration_use_different_photos() -> None:
    assert not set(layout.EVAL_PHOTOS) & set(layout.CALIB_PHOTOS)


def test_doc_orient_labels_cycle_through_the_four_orientations(tmp_path: Path) -> None:
    ev = _load(doc_orient.generate(tmp_path, seed=0, n_eval=8, n_calib=4).eval_path)
    assert ev["labels"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and ev["labels"].dtype == np.int64


def test_tasks_are_registered() -> None:
    assert TASKS["layout"] == "benchmarks.tasks.layout" and TASKS["doc-orient"] == "benchmarks.tasks.doc_orient"
    assert layout.ZOO_NAME == "picodet-layout-cdla" and doc_orient.ZOO_NAME == "lcnet-doc-orientation"


# --- the real models (zoo) ----------------------------------------------------------------------


def _run(module, data_path: Path) -> list[dict]:
    import onnxruntime as ort

    from benchmarks.tasks import reference_model

    session = ort.InferenceSession(str(reference_model(module)), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed_name = session.get_inputs()[0].name
    data = _load(data_path)
    return [dict(zip(names, session.run(None, {feed_name: data[feed_name][i : i + 1]})))
            for i in range(len(data[feed_name]))]


@pytest.mark.zoo
def test_layout_fp32_finds_the_rendered_layout(tmp_path: Path) -> None:
    data = layout.generate(tmp_path, seed=0, n_eval=6, n_calib=1)
    outputs = _run(layout, data.eval_path)
    m = layout.metric(outputs, outputs, _dataset(_load(data.eval_path)["labels"]))
    assert m["map50"] == 1.0 and m["pseudo_gt_boxes"] >= 30
    assert m["map50_rendered"] >= 0.6  # 0.85 on the full 60 pages of seed 0


@pytest.mark.zoo
def test_doc_orient_fp32_reads_the_rotation_convention(tmp_path: Path) -> None:
    data = doc_orient.generate(tmp_path, seed=0, n_eval=32, n_calib=4)
    outputs = _run(doc_orient, data.eval_path)
    m = doc_orient.metric(outputs, outputs, _dataset(_load(data.eval_path)["labels"]))
    # large crops are easy (1.0 on seed 0's 200); a swapped 90/270 convention would score ~0.5
    assert m["accuracy"] >= 0.85 and m["fp32_agreement"] == 1.0
