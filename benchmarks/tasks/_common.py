"""Pieces every task shares: seeded RNG streams, writing the data files, disjointness, scoring.

Determinism: each task draws its eval and calibration data from two *different* RNG streams of
the same seed, ``np.random.default_rng([seed, EVAL_STREAM])`` and
``np.random.default_rng([seed, CALIB_STREAM])`` (numpy's ``SeedSequence`` makes them
independent), and :func:`write_task` also checks the *content*: no sample of the calibration
set may equal a sample of the eval set byte for byte.

Ground truth lives in the eval ``.npz`` under the ``labels`` key, which is never fed to the
model: a class index, a fixed-width unicode string (``<U64``), or a fixed-shape numeric array
padded with ``-1`` (boxes, intervals). There are no sidecar files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from passes._errors import DataError, OnnxSlimError

__all__ = [
    "EVAL_STREAM",
    "CALIB_STREAM",
    "LABELS_KEY",
    "TaskData",
    "TaskUnavailable",
    "stream",
    "sample_digests",
    "assert_disjoint",
    "write_task",
    "f1_score",
    "iou_matrix",
    "count_matches",
    "edit_distance",
]

EVAL_STREAM = 1
CALIB_STREAM = 2
LABELS_KEY = "labels"


class TaskUnavailable(OnnxSlimError):
    """A task cannot run on this machine (a tool or an optional package is missing)."""


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Where a task's generated data lives.

    Attributes:
        eval_path: ``.npz`` keyed by the model's input names, plus ``labels``.
        calib_path: ``.npz`` keyed by the model's input names (no labels), disjoint from eval.
    """

    eval_path: Path
    calib_path: Path


def stream(seed: int, which: int) -> np.random.Generator:
    """The RNG of one data stream (:data:`EVAL_STREAM` or :data:`CALIB_STREAM`) of ``seed``."""
    return np.random.default_rng([int(seed), int(which)])


def sample_digests(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """One sha1 per sample (axis 0) over every non-label array, in key order."""
    keys = sorted(k for k in arrays if k != LABELS_KEY)
    count = len(arrays[keys[0]])
    digests = []
    for i in range(count):
        h = hashlib.sha1()
        for key in keys:
            row = np.ascontiguousarray(arrays[key][i])
            h.update(key.encode())
            h.update(str(row.dtype).encode())
            h.update(row.tobytes())
        digests.append(h.hexdigest())
    return digests


def assert_disjoint(eval_arrays: Mapping[str, np.ndarray], calib_arrays: Mapping[str, np.ndarray]) -> None:
    """Raise if any calibration sample equals an eval sample (or a set repeats a sample).

    Raises:
        DataError: naming the first shared sample's indexes.
    """
    ev, ca = sample_digests(eval_arrays), sample_digests(calib_arrays)
    first_seen = {d: i for i, d in reversed(list(enumerate(ev)))}
    for j, digest in enumerate(ca):
        if digest in first_seen:
            raise DataError(f"calibration sample {j} equals eval sample {first_seen[digest]}")


def write_task(
    out_dir: str | Path,
    eval_arrays: Mapping[str, np.ndarray],
    calib_arrays: Mapping[str, np.ndarray],
) -> TaskData:
    """Check disjointness, then write ``eval.npz`` and ``calib.npz`` into ``out_dir``.

    Raises:
        DataError: the two sets share a sample.
    """
    assert_disjoint(eval_arrays, calib_arrays)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = TaskData(out / "eval.npz", out / "calib.npz")
    np.savez_compressed(data.eval_path, **eval_arrays)
    np.savez_compressed(data.calib_path, **calib_arrays)
    return data


def f1_score(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from counts; an empty class (nothing true, nothing predicted) is 1.0."""
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else float(fp == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [N, 4] with every box in ``b`` [M, 4], boxes as x0, y0, x1, y1."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def count_matches(iou: np.ndarray, threshold: float) -> int:
    """One-to-one matches with IoU ≥ ``threshold``, taking the highest-IoU pairs first."""
    iou = np.array(iou, dtype=np.float64, copy=True)
    matches = 0
    while iou.size and iou.max() >= threshold:
        i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        iou[i, :] = -1.0
        iou[:, j] = -1.0
        matches += 1
    return matches


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
