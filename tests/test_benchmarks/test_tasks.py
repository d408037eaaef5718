"""Every task: deterministic data (same seed -> same arrays), disjoint calibration and eval sets.

Small sizes (4 samples) keep this fast. Tasks whose optional packages are missing are skipped
(``pip install -e ".[bench]"``); ``vad`` also needs the espeak-ng program, and its calibration
set is recorded by running the real Silero model, so its full ``generate`` is a zoo test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.tasks import load_task
from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, sample_digests, stream

NEEDS = {
    "digits": (),
    "ocr-rec": ("PIL",),
    "ocr-cls": ("PIL",),
    "ocr-det": ("PIL", "scipy"),
    "detect": ("PIL", "skimage", "sklearn"),
    "vad": ("scipy",),
}
INPUTS = {
    "digits": ["input"],
    "ocr-rec": ["x"],
    "ocr-cls": ["x"],
    "ocr-det": ["x"],
    "detect": ["images"],
    "vad": ["input", "sr", "state"],
}
OFFLINE_TASKS = ["digits", "ocr-rec", "ocr-cls", "ocr-det", "detect"]
SIZE = {"ocr-det": 2}  # 480x640 pages are slow to compress; 2 are enough to compare


def _task(name: str):
    for module in NEEDS[name]:
        pytest.importorskip(module)
    return load_task(name)


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def _check_generated(name: str, tmp_path: Path) -> None:
    module, n = _task(name), SIZE.get(name, 4)
    first = module.generate(tmp_path / "a", seed=0, n_eval=n, n_calib=n)
    again = module.generate(tmp_path / "b", seed=0, n_eval=n, n_calib=n)
    other = module.generate(tmp_path / "c", seed=1, n_eval=n, n_calib=n)
    ev, ca = _load(first.eval_path), _load(first.calib_path)
    _assert_same(ev, _load(again.eval_path))
    _assert_same(ca, _load(again.calib_path))
    key = INPUTS[name][0]
    assert not np.array_equal(ev[key], _load(other.eval_path)[key]), "another seed must give other data"
    assert sorted(k for k in ev if k != "labels") == INPUTS[name] == sorted(ca)
    assert ("labels" in ev) == (name != "detect") and "labels" not in ca
    assert len(ev[key]) == n
    assert not set(sample_digests(ev)) & set(sample_digests(ca)), "calibration and eval share a sample"
    assert not set(sample_digests(ev)) & set(sample_digests(_load(other.calib_path)))


@pytest.mark.parametrize("name", OFFLINE_TASKS)
def test_generate_is_deterministic_and_disjoint(name: str, tmp_path: Path) -> None:
    _check_generated(name, tmp_path)


def test_detect_uses_disjoint_source_photos() -> None:
    detect = _task("detect")
    assert not set(detect.EVAL_SOURCES) & set(detect.CALIB_SOURCES)


def test_ocr_lines_fit_and_labels_are_strings(tmp_path: Path) -> None:
    ocr_rec = _task("ocr-rec")
    data = _load(ocr_rec.generate(tmp_path, seed=3, n_eval=6, n_calib=2).eval_path)
    assert data["x"].shape == (6, 3, 48, 320) and data["x"].dtype == np.float32
    assert data["labels"].dtype.kind == "U" and all(len(t) > 0 for t in data["labels"])
    assert data["x"].min() >= -1.0 and data["x"].max() <= 1.0


def test_vad_clips_are_deterministic() -> None:
    vad = _task("vad")
    if not vad.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    clips, intervals = vad._clips(2, stream(0, EVAL_STREAM))
    again, same = vad._clips(2, stream(0, EVAL_STREAM))
    other, _ = vad._clips(2, stream(0, CALIB_STREAM))
    assert np.array_equal(clips, again) and np.array_equal(intervals, same)
    assert not np.array_equal(clips, other)
    assert clips.shape == (2, vad.CLIP_SAMPLES) and intervals.shape == (2, vad.MAX_SEGMENTS, 2)


def test_vad_without_espeak_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    vad = _task("vad")
    monkeypatch.setattr(vad.shutil, "which", lambda name: None)
    with pytest.raises(vad.TaskUnavailable, match="espeak-ng"):
        vad.generate(tmp_path)


@pytest.mark.zoo
def test_vad_generate_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    if not _task("vad").espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    _check_generated("vad", tmp_path)
