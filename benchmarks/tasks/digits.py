"""Task ``digits``: the bundled LeNet-5 on its held-out test split, top-1 accuracy.

Data: the bundled, already preprocessed ``models/lenet5_digits_test.npz`` (540 held-out images of
scikit-learn's digits with labels) and ``models/lenet5_digits_calib.npz`` (256 *training* images,
disjoint from the test split by construction in ``models/recipes/lenet5_digits.py``). ``seed``
picks which ``n_eval`` / ``n_calib`` rows are used (all of them by default, in a seeded order).

Metric: ``accuracy`` — top-1 of the ``logits`` output against the labels (headline), and
``fp32_agreement`` — the fraction of samples whose top-1 equals the reference model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, stream, write_task
from calibration.datasets import Dataset
from passes._errors import DataError

__all__ = ["ZOO_NAME", "MODEL_PATH", "N_EVAL", "N_CALIB", "generate", "preprocess", "postprocess", "metric"]

ZOO_NAME = None
_MODELS = Path(__file__).resolve().parents[2] / "models"
MODEL_PATH = _MODELS / "lenet5_digits.onnx"
N_EVAL = 540
N_CALIB = 256


def _subset(arrays: dict[str, np.ndarray], count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    total = len(next(iter(arrays.values())))
    if not 0 < count <= total:
        raise DataError(f"digits: asked for {count} samples, the bundled split has {total}")
    rows = np.sort(rng.permutation(total)[:count])
    return {k: v[rows] for k, v in arrays.items()}


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Write ``n_eval`` test images with labels and ``n_calib`` calibration images.

    Raises:
        DataError: more samples asked for than the bundled split holds, or the sets overlap.
    """
    with np.load(_MODELS / "lenet5_digits_test.npz") as z:
        test = {"input": z["input"], LABELS_KEY: z[LABELS_KEY]}
    with np.load(_MODELS / "lenet5_digits_calib.npz") as z:
        calib = {"input": z["input"]}
    return write_task(out_dir, _subset(test, n_eval, stream(seed, EVAL_STREAM)),
                      _subset(calib, n_calib, stream(seed, CALIB_STREAM)))


def preprocess(images_8x8: np.ndarray) -> np.ndarray:
    """scikit-learn's 8x8 digits (0-16) -> ``[N, 1, 32, 32]`` float32 in [0, 1].

    The same as ``models/recipes/lenet5_digits.py``: scale by 1/16, repeat each pixel 4x4.
    """
    images = np.asarray(images_8x8, dtype=np.float32).reshape(-1, 8, 8) / np.float32(16.0)
    return np.ascontiguousarray(np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)[:, None])


def postprocess(logits: np.ndarray) -> np.ndarray:
    """``[N, 10]`` scores -> predicted digit per row."""
    return np.argmax(np.asarray(logits).reshape(-1, 10), axis=-1)


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """Top-1 accuracy against the labels, and agreement with the reference's top-1.

    Raises:
        DataError: the data has no labels.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: digits needs labels")
    pred = np.concatenate([postprocess(next(iter(o.values()))) for o in candidate_outputs])
    ref = np.concatenate([postprocess(next(iter(o.values()))) for o in reference_outputs])
    truth = np.asarray(dataset.labels).reshape(-1)[: len(pred)]
    return {"accuracy": float(np.mean(pred == truth)), "fp32_agreement": float(np.mean(pred == ref))}
