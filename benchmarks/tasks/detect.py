"""Task ``detect``: YOLOv8n (NudeNet) on real photographs; mAP@0.5 against the fp32 model.

**The ground truth is pseudo ground truth**: there are no human labels. The fp32 reference
model's own detections (after decoding and NMS) are the boxes a candidate is scored against,
so the reference scores 1.0 against itself by definition; the metric therefore measures how
faithfully a candidate (quantized, pruned, ...) reproduces the fp32 detector, not how good the
detector is. ``pseudo_gt_boxes`` reports how many reference boxes there are, so a score over
few boxes is not mistaken for a strong result.

Data: real photos that ship inside scikit-image (``skimage.data``: only the images bundled in
the wheel, none that need a download) and scikit-learn (``load_sample_images``), plus 4x4
mosaics of the 25x25 face photos of ``skimage.data.lfw_subset`` (real LFW faces; the model
detects faces). Eval and calibration use *different* source photos (see ``EVAL_SOURCES`` /
``CALIB_SOURCES``) and different seeded streams of crops (60-100 % of each side), horizontal
flips and scales (the content fills 50-100 % of the 320 x 320 letterbox, at a random place;
padding gray 114). Input ``images``: ``[N, 3, 320, 320]`` float32 RGB in [0, 1]. No labels.

Post-processing (:func:`postprocess`): output ``[1, 4 + 18, 2100]`` = box centre, size and
18 class scores per anchor; best class per anchor, confidence ≥ 0.25 (≥ 0.001 for a candidate's
ranked list in mAP, as Ultralytics' ``val``), NMS per class at IoU 0.45, at most 300 boxes.

Metric (higher is better): ``map50`` (headline) — the mean over pseudo-ground-truth classes of
the average precision (all-point interpolated) at IoU ≥ 0.5, a detection matching a box of its
class one-to-one; only classes with at least ``MIN_CLASS_BOXES`` (5) pseudo-GT boxes are
averaged (all of them when none has that many), because a class with one box would move mAP by
a whole class's share on a single detection; ``precision`` and ``recall`` of all boxes (every
class) at confidence 0.25; ``pseudo_gt_boxes`` — how many reference boxes (informative); and
``ap50 class K`` — the AP of each averaged class ``K`` (an index into the model's ``names``
metadata), so a drop of the mean can be traced to the classes that cause it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, TaskData, iou_matrix, stream, write_task
from calibration.datasets import Dataset

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "SIZE", "MIN_CLASS_BOXES", "EVAL_SOURCES", "CALIB_SOURCES", "load_source",
           "generate", "preprocess", "postprocess", "average_precision", "metric"]

ZOO_NAME = "yolov8n-nudenet"
N_EVAL = 120
N_CALIB = 32
SIZE = 320
CONFIDENCE = 0.25
#: candidates are ranked down to this score for mAP, as Ultralytics' ``val`` does (conf 0.001):
#: mAP is an area under a ranked list, and cutting the list at the pseudo-GT threshold would turn
#: a box whose score moves from 0.2501 to 0.2499 into a missed box instead of a lower-ranked hit
MAP_CONFIDENCE = 0.001
NMS_IOU = 0.45
MAX_BOXES = 300
MATCH_IOU = 0.5
MIN_CLASS_BOXES = 5  # rarer pseudo-GT classes would swing mAP by a whole class on one box
EVAL_SOURCES = ("astronaut", "camera", "chelsea", "coffee", "rocket", "moon", "china",
                "faces:0", "faces:16", "faces:32", "faces:48")
CALIB_SOURCES = ("motorcycle_left", "motorcycle_right", "flower", "brick", "gravel", "coins",
                 "hubble_deep_field", "faces:64", "faces:80")


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]


def load_source(name: str) -> np.ndarray:
    """One source photo as RGB uint8 (H x W x 3), from the files bundled in the wheels."""
    import skimage.data

    if name.startswith("faces:"):
        first = int(name.split(":")[1])
        faces = skimage.data.lfw_subset()[first : first + 16]  # the first 100 entries are faces
        return _rgb(faces.reshape(4, 4, 25, 25).transpose(0, 2, 1, 3).reshape(100, 100))
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return _rgb(load_sample_image(f"{name}.jpg"))
    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return _rgb(left if name.endswith("left") else right)
    loader: Callable[[], np.ndarray] = getattr(skimage.data, name)
    return _rgb(loader())


def _augment(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop, maybe mirrored, placed at a random scale and position in the letterbox."""
    h, w = photo.shape[:2]
    ch, cw = max(8, round(h * rng.uniform(0.6, 1.0))), max(8, round(w * rng.uniform(0.6, 1.0)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = photo[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return preprocess(crop, scale=float(rng.uniform(0.5, 1.0)), rng=rng)


def _images(sources: Sequence[str], count: int, rng: np.random.Generator) -> np.ndarray:
    photos = [load_source(s) for s in sources]
    out = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(count):
        out[i] = _augment(photos[int(rng.integers(len(photos)))], rng)
    return out


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Write ``n_eval`` and ``n_calib`` augmented photos from disjoint source photos.

    Raises:
        DataError: the two sets share a sample.
    """
    return write_task(out_dir, {"images": _images(EVAL_SOURCES, n_eval, stream(seed, EVAL_STREAM))},
                      {"images": _images(CALIB_SOURCES, n_calib, stream(seed, CALIB_STREAM))})


def preprocess(image: np.ndarray, *, scale: float = 1.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """RGB uint8 (H x W x 3) -> letterboxed ``[3, 320, 320]`` float32 in [0, 1].

    The image is resized (bilinear, aspect kept) to fill ``scale`` of the square and placed in
    the middle, or at a random position when ``rng`` is given; the rest is gray 114.
    """
    image = _rgb(image)
    h, w = image.shape[:2]
    ratio = scale * SIZE / max(h, w)
    nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.Resampling.BILINEAR))
    top = int(rng.integers(0, SIZE - nh + 1)) if rng is not None else (SIZE - nh) // 2
    left = int(rng.integers(0, SIZE - nw + 1)) if rng is not None else (SIZE - nw) // 2
    canvas = np.full((SIZE, SIZE, 3), 114, dtype=np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[iou_matrix(boxes[best], boxes[order])[0] <= iou]
    return np.array(keep, dtype=np.int64)


def postprocess(output: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv8 ``[1, 4 + C, A]`` output -> ``(boxes [K, 4] x0 y0 x1 y1, scores [K], classes [K])``."""
    out = np.asarray(output, dtype=np.float32).reshape(np.shape(output)[-2:])
    class_scores = out[4:]
    classes, scores = np.argmax(class_scores, axis=0), np.max(class_scores, axis=0)
    keep = scores >= confidence
    cx, cy, w, h = out[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    scores, classes = scores[keep], classes[keep]
    kept = [idx[_nms(boxes[idx], scores[idx], NMS_IOU)] for c in np.unique(classes)
            for idx in [np.flatnonzero(classes == c)]]
    order = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    order = order[np.argsort(-scores[order], kind="stable")][:MAX_BOXES]
    return boxes[order], scores[order], classes[order]


def average_precision(hits: np.ndarray, scores: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP from detections' TP flags and scores, given ``n_truth`` boxes."""
    if n_truth == 0:
        return float(len(hits) == 0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits, dtype=np.float64)[order])
    recall = np.concatenate([[0.0], tp / n_truth, [1.0]])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * precision[1:]))


def _match(pred: tuple, truth: tuple) -> np.ndarray:
    """TP flag per predicted box: the same class, IoU ≥ 0.5 with a not yet matched true box."""
    boxes, scores, classes = pred
    t_boxes, _, t_classes = truth
    hits = np.zeros(len(boxes), dtype=bool)
    used = np.zeros(len(t_boxes), dtype=bool)
    iou = iou_matrix(boxes, t_boxes)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where((t_classes == classes[i]) & ~used, iou[i], -1.0)
        j = int(np.argmax(candidates)) if candidates.size else -1
        if j >= 0 and candidates[j] >= MATCH_IOU:
            hits[i], used[j] = True, True
    return hits


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """mAP@0.5 of the candidate's detections against the reference's (pseudo ground truth).

    The pseudo ground truth is the reference's boxes at ``CONFIDENCE``; mAP ranks the candidate's
    boxes down to ``MAP_CONFIDENCE``; precision and recall count its boxes at ``CONFIDENCE``.
    """
    preds = [postprocess(next(iter(o.values())), MAP_CONFIDENCE) for o in candidate_outputs]
    truths = [postprocess(next(iter(o.values()))) for o in reference_outputs]
    hits = [_match(p, t) for p, t in zip(preds, truths)]
    p_classes, t_classes = np.concatenate([p[2] for p in preds]), np.concatenate([t[2] for t in truths])
    p_scores, all_hits = np.concatenate([p[1] for p in preds]), np.concatenate(hits)
    classes, counts = np.unique(t_classes, return_counts=True)
    scored = classes[counts >= MIN_CLASS_BOXES] if np.any(counts >= MIN_CLASS_BOXES) else classes
    aps = [average_precision(all_hits[p_classes == c], p_scores[p_classes == c], int(np.sum(t_classes == c)))
           for c in scored]
    confident = p_scores >= CONFIDENCE
    all_hits = all_hits[confident]
    tp, n_pred, n_truth = int(all_hits.sum()), len(all_hits), len(t_classes)
    return {
        "map50": float(np.mean(aps)) if aps else float(n_pred == 0),
        "precision": tp / n_pred if n_pred else float(n_truth == 0),
        "recall": tp / n_truth if n_truth else float(n_pred == 0),
        "pseudo_gt_boxes": float(n_truth),
        **{f"ap50 class {int(c)}": ap for c, ap in zip(scored, aps)},
    }
