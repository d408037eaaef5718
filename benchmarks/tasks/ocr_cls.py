"""Task ``ocr-cls``: PP-OCR text orientation (0° or 180°) on rendered lines; accuracy.

Data: the same kind of rendered lines as ``ocr-rec`` (:mod:`benchmarks.tasks._text`); every
other line (odd indexes) is rotated by 180°. Input ``x``: ``[N, 3, 48, 192]`` float32,
normalized like rec (:func:`preprocess`); lines wider than 4:1 are squeezed to 192 pixels, as
PaddleOCR does. Labels: ``0`` (upright) or ``1`` (rotated 180°), int64.

Metric (higher is better): ``accuracy`` (headline) — argmax of the ``[N, 2]`` output (class 0
= ``"0"``, class 1 = ``"180"``) against the labels; ``fp32_agreement`` — argmax equal to the
reference model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.tasks import _text
from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, stream, write_task
from calibration.datasets import Dataset
from passes._errors import DataError

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "HEIGHT", "WIDTH", "generate", "preprocess", "postprocess", "metric"]

ZOO_NAME = "ppocr-cls"
N_EVAL = 400
N_CALIB = 64
HEIGHT = 48
WIDTH = 192
_MAX_RATIO = 320 / 48  # the rec task's lines; wider than 192/48 are squeezed, as in PaddleOCR


def _lines(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for i in range(count):
        _, image = _text.sample_line(rng, max_ratio=_MAX_RATIO)
        rotated = i % 2
        images.append(preprocess(image[::-1, ::-1] if rotated else image))
        labels.append(rotated)
    return np.stack(images), np.array(labels, dtype=np.int64)


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Render ``n_eval`` labeled lines and ``n_calib`` calibration lines, half of each rotated.

    Raises:
        DataError: the two sets share a sample.
    """
    x_eval, labels = _lines(n_eval, stream(seed, EVAL_STREAM))
    x_calib, _ = _lines(n_calib, stream(seed, CALIB_STREAM))
    return write_task(out_dir, {"x": x_eval, LABELS_KEY: labels}, {"x": x_calib})


def preprocess(image: np.ndarray) -> np.ndarray:
    """A line crop (gray, or BGR H x W x 3 uint8) -> ``[3, 48, 192]`` float32."""
    return _text.resize_normalize(image, width=WIDTH, height=HEIGHT)


def postprocess(scores: np.ndarray) -> np.ndarray:
    """``[N, 2]`` scores -> 0 (upright) or 1 (rotated 180°) per row."""
    return np.argmax(np.asarray(scores).reshape(-1, 2), axis=-1)


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """0/180 accuracy against the labels, and agreement with the reference's decisions.

    Raises:
        DataError: the data has no labels.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: ocr-cls needs 0/1 orientation labels")
    pred = np.concatenate([postprocess(next(iter(o.values()))) for o in candidate_outputs])
    ref = np.concatenate([postprocess(next(iter(o.values()))) for o in reference_outputs])
    truth = np.asarray(dataset.labels).reshape(-1)[: len(pred)]
    return {"accuracy": float(np.mean(pred == truth)), "fp32_agreement": float(np.mean(pred == ref))}
