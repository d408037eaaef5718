"""Task ``ocr-det``: PP-OCRv4 text detection (DB) on rendered pages; precision, recall, F1.

Data: 480 x 640 (H x W) gray pages, 3-8 text lines each (random words, numbers, punctuation;
sizes 14-40 px, 50-180 gray levels of contrast, faux bold, slant, stretch; see
:mod:`benchmarks.tasks._text`), at least 8 px apart vertically and 40 px horizontally (closer,
two lines on one row read as one line), on a light or dark background with a mild brightness
ramp, then Gaussian blur and pixel noise. Each line's known box is its ink's horizontal extent
times the font's line height (ascender to descender), as a line annotation would draw it. Input ``x``:
``[N, 3, 480, 640]`` float32 (:func:`preprocess`). Labels: ``[N, 8, 4]`` float32 boxes
``x0, y0, x1, y1`` (pixels, end exclusive), unused rows ``-1``.

Post-processing (:func:`postprocess`), DB as in PaddleOCR with axis-aligned boxes: threshold
the probability map at 0.3, 8-connected components, drop components under 3 px or whose mean
probability inside their box is below 0.6 (``box_thresh``), then *unclip*: grow the box by
``d = area * 1.5 / perimeter`` on every side (DB's polygon offset with ``unclip_ratio`` 1.5,
applied to the rectangle, corners not rounded).

Metric (higher is better): ``f1`` (headline), ``precision`` and ``recall`` over all pages, a
detection matching a known box one-to-one at IoU ≥ 0.5 (highest IoU pairs first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from benchmarks.tasks import _text
from benchmarks.tasks._common import (CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, count_matches, f1_score,
                                      iou_matrix, stream, write_task)
from calibration.datasets import Dataset
from passes._errors import DataError

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "HEIGHT", "WIDTH", "MAX_LINES", "IOU_THRESHOLD", "generate",
           "preprocess", "postprocess", "metric"]

ZOO_NAME = "ppocr-det"
N_EVAL = 100
N_CALIB = 32
HEIGHT = 480
WIDTH = 640
MAX_LINES = 8
IOU_THRESHOLD = 0.5
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
_GAP_Y = 8  # pixels kept free above and below each line (and from the page edges)
_GAP_X = 40  # and left and right: wider than a word space, or two lines read as one


def _place(rng: np.random.Generator, free: np.ndarray, shape: tuple[int, int]) -> tuple[int, int] | None:
    """A random top-left corner where a ``shape`` line, with the gaps around it, touches no other line."""
    h, w = shape
    if w > WIDTH - 2 * _GAP_Y or h > HEIGHT - 2 * _GAP_Y:
        return None
    for _ in range(20):
        x = int(rng.integers(_GAP_Y, WIDTH - w - _GAP_Y + 1))
        y = int(rng.integers(_GAP_Y, HEIGHT - h - _GAP_Y + 1))
        if free[y - _GAP_Y : y + h + _GAP_Y, max(0, x - _GAP_X) : x + w + _GAP_X].all():
            return x, y
    return None


def _page(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One gray page (uint8, H x W) and its line boxes ``[K, 4]``."""
    dark = rng.random() < 0.2
    background = int(rng.integers(0, 60)) if dark else int(rng.integers(180, 256))
    ramp = rng.uniform(-15, 15) * np.linspace(-1, 1, WIDTH, dtype=np.float32)[None, :]
    page = np.full((HEIGHT, WIDTH), background, dtype=np.float32) + ramp
    free = np.ones((HEIGHT, WIDTH), dtype=bool)
    boxes = []
    for _ in range(int(rng.integers(3, MAX_LINES + 1))):
        contrast = int(rng.integers(50, 180))
        foreground = min(255, background + contrast) if dark else max(0, background - contrast)
        style = dataclasses.replace(_text.random_style(rng), size=int(rng.integers(14, 41)), foreground=foreground,
                                    margin_x=0, margin_y=0)
        mask = _text.line_mask(_text.random_text(rng), style)
        corner = _place(rng, free, mask.shape)
        if corner is None:
            continue
        (x, y), (h, w) = corner, mask.shape
        alpha = mask.astype(np.float32) / 255.0
        page[y : y + h, x : x + w] += (foreground - page[y : y + h, x : x + w]) * alpha
        free[y : y + h, x : x + w] = False
        boxes.append((x, y, x + w, y + h))
    image = Image.fromarray(np.clip(page + 0.5, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, rng.uniform(0.0, 5.0), size=(HEIGHT, WIDTH))
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8), np.array(boxes, dtype=np.float32).reshape(-1, 4)


def _pages(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((count, 3, HEIGHT, WIDTH), dtype=np.float32)
    labels = np.full((count, MAX_LINES, 4), -1.0, dtype=np.float32)
    for i in range(count):
        page, boxes = _page(rng)
        images[i] = preprocess(page)
        labels[i, : len(boxes)] = boxes
    return images, labels


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Render ``n_eval`` labeled pages and ``n_calib`` calibration pages from two seeded streams.

    Raises:
        DataError: the two sets share a sample.
    """
    x_eval, labels = _pages(n_eval, stream(seed, EVAL_STREAM))
    x_calib, _ = _pages(n_calib, stream(seed, CALIB_STREAM))
    return write_task(out_dir, {"x": x_eval, LABELS_KEY: labels}, {"x": x_calib})


def preprocess(image: np.ndarray) -> np.ndarray:
    """A page (gray, or BGR H x W x 3 uint8; sides multiples of 32) -> ``[3, H, W]`` float32.

    PaddleOCR's ``NormalizeImage``: ``(x / 255 - mean) / std`` with the ImageNet mean and std
    applied in their listed order to the channels of OpenCV's BGR image, as PaddleOCR does.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return ((x - _MEAN) / _STD).astype(np.float32)


def postprocess(prob: np.ndarray, *, thresh: float = 0.3, box_thresh: float = 0.6, unclip_ratio: float = 1.5,
                min_size: int = 3) -> np.ndarray:
    """DB post-processing of one ``[H, W]`` (or ``[1, 1, H, W]``) probability map -> boxes ``[K, 4]``."""
    prob = np.asarray(prob, dtype=np.float32).reshape(np.shape(prob)[-2:])
    components, _ = ndimage.label(prob > thresh, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for rows, cols in ndimage.find_objects(components):
        h, w = rows.stop - rows.start, cols.stop - cols.start
        if min(h, w) < min_size or float(prob[rows, cols].mean()) < box_thresh:
            continue
        d = w * h * unclip_ratio / (2.0 * (w + h))
        boxes.append((max(0.0, cols.start - d), max(0.0, rows.start - d),
                      min(float(prob.shape[1]), cols.stop + d), min(float(prob.shape[0]), rows.stop + d)))
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """Precision, recall and F1 of detected boxes against the known line boxes (IoU ≥ 0.5).

    Raises:
        DataError: the data has no labels.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: ocr-det needs the known line boxes as labels")
    tp = fp = fn = 0
    for outputs, truth in zip(candidate_outputs, dataset.labels):
        pred = postprocess(next(iter(outputs.values())))
        known = np.asarray(truth, dtype=np.float32).reshape(-1, 4)
        known = known[known[:, 2] > 0]
        matches = count_matches(iou_matrix(pred, known), IOU_THRESHOLD)
        tp, fp, fn = tp + matches, fp + len(pred) - matches, fn + len(known) - matches
    return f1_score(tp, fp, fn)
