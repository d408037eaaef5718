"""Task metrics on hand-made outputs: perfect -> 1.0, all wrong -> 0.0, and a few known values.

No model runs here (except the zoo-marked check of the real PP-OCR character list).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.tasks import load_task
from calibration.datasets import IterableDataset


def _dataset(labels, count: int | None = None) -> IterableDataset:
    n = len(labels) if labels is not None else count
    return IterableDataset([{"x": np.zeros(1, np.float32)} for _ in range(n)], labels=labels)


# ------------------------------------------------------------------------------ digits, ocr-cls

@pytest.mark.parametrize(("name", "classes", "output"), [("digits", 10, "logits"), ("ocr-cls", 2, "softmax")])
def test_classification_metrics(name: str, classes: int, output: str) -> None:
    if name == "ocr-cls":
        pytest.importorskip("PIL")
    task = load_task(name)
    labels = np.array([1, 0, 1, 1]) if classes == 2 else np.array([3, 1, 4, 1])
    right = [{output: np.eye(classes, dtype=np.float32)[[k]]} for k in labels]
    wrong = [{output: np.eye(classes, dtype=np.float32)[[(k + 1) % classes]]} for k in labels]
    data = _dataset(labels)
    assert task.metric(right, right, data) == {"accuracy": 1.0, "fp32_agreement": 1.0}
    assert task.metric(wrong, right, data) == {"accuracy": 0.0, "fp32_agreement": 0.0}
    half = right[:2] + wrong[2:]
    assert task.metric(half, right, data) == {"accuracy": 0.5, "fp32_agreement": 0.5}


# ------------------------------------------------------------------------------------- ocr-rec

CHARS = ("blank", "a", "b", "c", "1", " ")


def _scores(steps: str) -> np.ndarray:
    """One-hot CTC scores ``[1, T, C]``; ``-`` in ``steps`` is the blank."""
    index = [0 if s == "-" else CHARS.index(s) for s in steps]
    return np.eye(len(CHARS), dtype=np.float32)[index][None]


def test_ctc_greedy_decoding() -> None:
    pytest.importorskip("PIL")
    ocr_rec = load_task("ocr-rec")
    assert ocr_rec.postprocess(_scores("aa-a"), CHARS) == "aa"  # repeats collapse; a blank separates
    assert ocr_rec.postprocess(_scores("-ab b--c11"), CHARS) == "ab bc1"
    assert ocr_rec.postprocess(_scores("----"), CHARS) == ""


def test_ocr_rec_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("PIL")
    ocr_rec = load_task("ocr-rec")
    monkeypatch.setattr(ocr_rec, "characters", lambda: CHARS)
    data = _dataset(np.array(["ab c", "c1", "abc"], dtype="<U64"))
    perfect = [{"y": _scores(s)} for s in ("ab- c", "c1", "a-bc")]
    empty = [{"y": _scores("---")} for _ in range(3)]
    assert ocr_rec.metric(perfect, perfect, data) == {
        "char_accuracy": 1.0, "line_accuracy": 1.0, "char_accuracy_with_spaces": 1.0}
    assert ocr_rec.metric(empty, perfect, data) == {
        "char_accuracy": 0.0, "line_accuracy": 0.0, "char_accuracy_with_spaces": 0.0}
    # "abc" (space dropped, not scored), "c" (1 of 2 wrong), "ab" (1 of 3 wrong): 1 - 2/8 without spaces
    partial = [{"y": _scores(s)} for s in ("abc", "c", "ab")]
    got = ocr_rec.metric(partial, perfect, data)
    assert got["char_accuracy"] == pytest.approx(1 - 2 / 8)
    assert got["line_accuracy"] == pytest.approx(1 / 3)
    assert got["char_accuracy_with_spaces"] == pytest.approx(1 - 3 / 9)


@pytest.mark.zoo
def test_ocr_rec_characters_from_metadata() -> None:
    pytest.importorskip("PIL")
    ocr_rec = load_task("ocr-rec")
    chars = ocr_rec.characters()
    assert len(chars) == 6625 and chars[0] == "blank" and chars[-1] == " "
    text = "Total: $12.50 (ok)"
    assert ocr_rec.postprocess(np.eye(len(chars))[[chars.index(c) for c in text]], chars) == text


# ------------------------------------------------------------------------------------- ocr-det

def test_ocr_det_metric() -> None:
    pytest.importorskip("scipy")
    ocr_det = load_task("ocr-det")
    labels = np.full((1, ocr_det.MAX_LINES, 4), -1.0, np.float32)
    labels[0, 0] = (100, 100, 300, 140)
    data = _dataset(labels)
    kernel = np.zeros((1, 1, 200, 400), np.float32)
    kernel[0, 0, 108:132, 108:292] = 0.9  # DB's shrunk text kernel; unclip grows it back (IoU 0.66)
    (box,) = ocr_det.postprocess(kernel)
    assert box == pytest.approx([92.08, 92.08, 307.92, 147.92], abs=0.01)  # d = 184*24*1.5/416
    perfect = [{"sigmoid": kernel}]
    assert ocr_det.metric(perfect, perfect, data) == {"f1": 1.0, "precision": 1.0, "recall": 1.0}
    nothing = [{"sigmoid": np.zeros_like(kernel)}]
    assert ocr_det.metric(nothing, perfect, data) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    elsewhere = np.zeros_like(kernel)
    elsewhere[0, 0, 160:180, 20:80] = 0.9
    assert ocr_det.metric([{"sigmoid": elsewhere}], perfect, data)["f1"] == 0.0
    faint = kernel * 0.5  # mean probability 0.45 < box_thresh 0.6: dropped
    assert len(ocr_det.postprocess(faint)) == 0


# -------------------------------------------------------------------------------------- detect

def _yolo(boxes: list[tuple[float, float, float, float, int, float]]) -> dict[str, np.ndarray]:
    """A ``[1, 22, 2100]`` YOLOv8 output with the given (cx, cy, w, h, class, score) anchors."""
    out = np.zeros((1, 22, 2100), np.float32)
    for anchor, (cx, cy, w, h, cls, score) in enumerate(boxes):
        out[0, :4, anchor] = cx, cy, w, h
        out[0, 4 + cls, anchor] = score
    return {"output0": out}


def test_detect_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("skimage")
    detect = load_task("detect")
    data = _dataset(None, count=2)
    ref = [_yolo([(50, 50, 20, 20, 1, 0.9), (200, 200, 40, 40, 1, 0.8)]), _yolo([(100, 60, 30, 50, 12, 0.7)])]
    per_class = {"ap50 class 1": 1.0, "ap50 class 12": 1.0}
    assert detect.metric(ref, ref, data) == {"map50": 1.0, "precision": 1.0, "recall": 1.0, "pseudo_gt_boxes": 3.0,
                                             **per_class}
    empty = [_yolo([]), _yolo([])]
    assert detect.metric(empty, ref, data) == {"map50": 0.0, "precision": 0.0, "recall": 0.0, "pseudo_gt_boxes": 3.0,
                                               "ap50 class 1": 0.0, "ap50 class 12": 0.0}
    # class 1: one of two boxes found (AP 0.5); class 12: found (AP 1.0); a wrong-class box is a false positive
    partial = [_yolo([(50, 50, 20, 20, 1, 0.9), (200, 200, 40, 40, 7, 0.8)]), _yolo([(101, 60, 30, 50, 12, 0.6)])]
    got = detect.metric(partial, ref, data)
    assert got == pytest.approx({"map50": 0.75, "precision": 2 / 3, "recall": 2 / 3, "pseudo_gt_boxes": 3.0,
                                 "ap50 class 1": 0.5, "ap50 class 12": 1.0})
    monkeypatch.setattr(detect, "MIN_CLASS_BOXES", 2)  # class 12 (one box) is no longer averaged
    got = detect.metric(partial, ref, data)
    assert got["map50"] == pytest.approx(0.5) and "ap50 class 12" not in got
    # a true box whose score slips under the 0.25 threshold is a lower-ranked hit in mAP (ranked
    # down to 0.001, as Ultralytics' val), but no longer counts in precision/recall at 0.25
    slipped = [_yolo([(50, 50, 20, 20, 1, 0.9), (200, 200, 40, 40, 1, 0.2499)]), _yolo([(100, 60, 30, 50, 12, 0.7)])]
    got = detect.metric(slipped, ref, data)
    assert got == pytest.approx({"map50": 1.0, "precision": 1.0, "recall": 2 / 3, "pseudo_gt_boxes": 3.0,
                                 "ap50 class 1": 1.0})
    # ranked below a false positive, the slipped box costs precision along the curve (class 1 only,
    # MIN_CLASS_BOXES is 2 here): recall 0.5 at precision 1, then 1.0 at precision 2/3
    noisy = [_yolo([(50, 50, 20, 20, 1, 0.9), (200, 200, 40, 40, 1, 0.2), (300, 20, 10, 10, 1, 0.3)]), ref[1]]
    assert detect.metric(noisy, ref, data)["map50"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_yolo_decoding_and_nms() -> None:
    pytest.importorskip("skimage")
    detect = load_task("detect")
    out = _yolo([(50, 50, 20, 20, 1, 0.9), (52, 50, 20, 20, 1, 0.8), (52, 50, 20, 20, 2, 0.7), (9, 9, 4, 4, 1, 0.2)])
    boxes, scores, classes = detect.postprocess(out["output0"])
    # the 0.8 box overlaps the 0.9 box of its class (IoU 0.82 > 0.45); another class is kept; 0.2 < 0.25
    assert scores.tolist() == pytest.approx([0.9, 0.7]) and classes.tolist() == [1, 2]
    assert boxes[0].tolist() == [40, 40, 60, 60]


# ----------------------------------------------------------------------------------------- vad

def test_vad_frame_truth() -> None:
    vad = load_task("vad")
    assert vad.frame_truth(np.array([[1024, 3072], [-1, -1]]), 8).tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert vad.frame_truth(np.array([[0, 256]]), 2).tolist() == [0, 0]  # exactly half is not "more than half"
    assert vad.frame_truth(np.array([[0, 257]]), 2).tolist() == [1, 0]


def test_vad_metric() -> None:
    vad = load_task("vad")
    intervals = np.full((2, vad.MAX_SEGMENTS, 2), -1, np.int64)
    intervals[0, 0] = 1024, 3072
    data = _dataset(intervals)
    truth = [np.array([0, 0, 1, 1, 1, 1, 0, 0], np.float32), np.zeros(8, np.float32)]
    perfect = [{"speech_prob": 0.1 + 0.8 * t} for t in truth]
    assert vad.metric(perfect, perfect, data) == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "fp32_agreement": 1.0}
    silent = [{"speech_prob": np.zeros(8, np.float32)} for _ in truth]
    assert vad.metric(silent, perfect, data) == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "fp32_agreement": 0.75}
    inverted = [{"speech_prob": 1.0 - p["speech_prob"]} for p in perfect]
    assert vad.metric(inverted, perfect, data)["f1"] == 0.0


def test_vad_runner_feeds_chunks_with_context_and_state() -> None:
    vad = load_task("vad")
    clip = np.arange(3 * 512 + 100, dtype=np.float32)  # 3 whole chunks; the tail is dropped
    seen = []

    def run(feeds):
        seen.append({k: np.array(v) for k, v in feeds.items()})
        return {"output": np.array([[len(seen) / 10]], np.float32), "stateN": feeds["state"] + 1}

    data = IterableDataset([{"input": clip[None], "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000)}])
    (out,) = vad.runner(run, data)
    assert out["speech_prob"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert [f["input"].shape for f in seen] == [(1, 576)] * 3
    inputs = [f["input"][0] for f in seen]
    assert np.array_equal(inputs[0][:64], np.zeros(64)) and np.array_equal(inputs[0][64:], clip[:512])
    assert np.array_equal(inputs[1][:64], clip[448:512]) and np.array_equal(inputs[2][64:], clip[1024:1536])
    assert [float(f["state"].mean()) for f in seen] == [0.0, 1.0, 2.0]
    assert all(f["sr"].dtype == np.int64 and f["sr"].shape == () and f["sr"] == 16000 for f in seen)
