"""Task ``ocr-rec``: PP-OCRv4 text-line recognition on rendered Latin lines; CER and exact lines.

Data: single text lines (words, numbers, dates, prices, times, codes, punctuation) rendered with
Pillow's built-in font in varied sizes, weights, slants, shades, blur and noise (see
:mod:`benchmarks.tasks._text`), each short enough to fit 48 x 320 without squeezing. Input
``x``: ``[N, 3, 48, 320]`` float32, PaddleOCR's normalization (:func:`preprocess`). Labels: the
rendered strings as a ``<U64`` array.

Post-processing: CTC greedy decoding — argmax per time step, collapse repeats, drop the blank.
The classes are ``blank``, then the model's metadata ``character`` list (split on newlines),
then a space (RapidOCR's ``CTCLabelDecode``: 1 + 6623 + 1 = 6625 classes).

Metric (higher is better):

- ``char_accuracy`` (headline): ``1 - CER`` = ``1 - sum(edit distance) / sum(len(truth))``,
  clamped at 0, with spaces removed from both strings: the Chinese PP-OCRv4 model often drops
  the narrow space between Latin words (a property of the fp32 model, not of the data);
- ``line_accuracy``: fraction of lines read exactly (spaces removed);
- ``char_accuracy_with_spaces``: the same CER with spaces kept, for reference.

Predictions are NFKC-normalized first, so the model's full-width forms of ASCII punctuation
(``（`` for ``(``, ``：`` for ``:``), which its Chinese character list holds too, count as the
same character.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from benchmarks.tasks import _text
from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, edit_distance, stream, write_task
from calibration.datasets import Dataset
from passes._errors import DataError

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "HEIGHT", "WIDTH", "generate", "preprocess", "postprocess",
           "characters", "metric", "char_accuracy"]

ZOO_NAME = "ppocr-rec"
N_EVAL = 300
N_CALIB = 64
HEIGHT = 48
WIDTH = 320
_MAX_CHARS = 64


def _lines(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    texts, images = [], []
    for _ in range(count):
        text, image = _text.sample_line(rng, max_ratio=WIDTH / HEIGHT)
        texts.append(text[:_MAX_CHARS])
        images.append(preprocess(image))
    return np.stack(images), np.array(texts, dtype=f"<U{_MAX_CHARS}")


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Render ``n_eval`` labeled lines and ``n_calib`` calibration lines from two seeded streams.

    Raises:
        DataError: the two sets share a sample.
    """
    x_eval, labels = _lines(n_eval, stream(seed, EVAL_STREAM))
    x_calib, _ = _lines(n_calib, stream(seed, CALIB_STREAM))
    return write_task(out_dir, {"x": x_eval, LABELS_KEY: labels}, {"x": x_calib})


def preprocess(image: np.ndarray) -> np.ndarray:
    """A line crop (gray, or BGR H x W x 3 uint8) -> ``[3, 48, 320]`` float32 (see ``resize_normalize``)."""
    return _text.resize_normalize(image, width=WIDTH, height=HEIGHT)


@functools.cache
def characters(model_path: str | None = None) -> tuple[str, ...]:
    """The CTC classes: ``blank``, the metadata ``character`` list, then a space.

    Args:
        model_path: a PP-OCR rec model; the zoo's ``ppocr-rec`` by default.

    Raises:
        DataError: the model has no ``character`` metadata.
    """
    if model_path is None:
        from onnxslim import zoo

        model_path = str(zoo.fetch(ZOO_NAME))
    model = onnx.load(model_path, load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise DataError(f"{model_path}: no 'character' metadata; not a PP-OCR rec model")
    return ("blank", *meta["character"].split("\n"), " ")


def postprocess(scores: np.ndarray, chars: Sequence[str]) -> str:
    """CTC greedy decoding of one line's ``[T, C]`` (or ``[1, T, C]``) scores."""
    best = np.argmax(np.asarray(scores).reshape(-1, len(chars)), axis=-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    return "".join(chars[i] for i in best[keep])


def char_accuracy(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """``1 - sum(edit distance) / sum(len(truth))``, clamped to [0, 1]."""
    total = sum(len(t) for t in truths)
    errors = sum(edit_distance(p, t) for p, t in zip(predictions, truths))
    return max(0.0, 1.0 - errors / total) if total else float(errors == 0)


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """Character and exact-line accuracy of the decoded lines against the rendered text.

    Raises:
        DataError: the data has no labels.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: ocr-rec needs the rendered strings as labels")
    chars = characters()
    predictions = [unicodedata.normalize("NFKC", postprocess(next(iter(o.values())), chars))
                   for o in candidate_outputs]
    truths = [str(t) for t in dataset.labels[: len(predictions)]]
    bare_pred = [p.replace(" ", "") for p in predictions]
    bare_truth = [t.replace(" ", "") for t in truths]
    return {
        "char_accuracy": char_accuracy(bare_pred, bare_truth),
        "line_accuracy": float(np.mean([p == t for p, t in zip(bare_pred, bare_truth)])),
        "char_accuracy_with_spaces": char_accuracy(predictions, truths),
    }
