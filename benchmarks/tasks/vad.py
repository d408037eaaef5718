"""Task ``vad``: Silero VAD (stateful, 16 kHz) on espeak-ng speech in noise; frame-level F1.

Needs the ``espeak-ng`` program (Debian/Ubuntu: ``apt-get install espeak-ng``); without it
:func:`generate` raises :class:`TaskUnavailable` saying so.

Data: 8.192 s clips (256 chunks of 512 samples) at 16 kHz. Each holds 0-8
utterances of 3-8 random English words spoken by espeak-ng (5 accents x 7 voice variants,
130-200 words/min, pitch 30-70), resampled from 22.05 kHz with ``scipy.signal.resample_poly``,
trimmed to where the waveform exceeds 1 % of its peak, scaled to a peak of 0.1-0.5 and placed
with 0.4-2 s gaps; one clip in ten has no speech at all. Background: white noise mixed with
low-passed (brown-like) noise at an SNR of 5-25 dB against the clip's speech (silent clips: an
RMS of 0.001-0.02). Truth: each utterance's ``[start, end)`` sample interval.

Layout of ``eval.npz`` (it passes ``check_dataset`` for the model's inputs ``input [batch,
sequence]``, ``state [2, batch, 128]``, ``sr`` scalar): ``input`` ``[N, 131072]`` float32 (rank
2 = the input's rank, so sample i is ``[1, 131072]``: a whole clip that :func:`runner` cuts
into chunks), ``state`` ``[N, 2, 1, 128]`` zeros, ``sr`` ``[N]`` int64 16000, ``labels``
``[N, 8, 2]`` int64 intervals, unused rows ``-1``.

``calib.npz`` holds what the model really sees, one row per chunk: ``input`` ``[M, 576]``
(64 samples of context + 512 new), the fp32 model's ``state`` at that chunk ``[M, 2, 1, 128]``
and ``sr`` ``[M]``, drawn from separate calibration clips (another seeded stream).

:func:`runner` feeds each clip as Silero's own wrapper does: per 512-sample chunk, the last 64
samples of the previous input as context (zeros first), the state returned by the previous
run, ``sr`` = 16000; it returns ``{"speech_prob": [chunks]}`` per clip.

Metric (higher is better): ``f1`` (headline), ``precision``, ``recall`` of speech decisions
(probability ≥ 0.5) per 512-sample frame, a frame being speech when more than half of it lies
inside an utterance interval; ``fp32_agreement`` — the fraction of frames whose decision
equals the reference model's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from benchmarks.tasks._common import (CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, TaskUnavailable, f1_score,
                                      stream, write_task)
from benchmarks.tasks._text import WORDS
from calibration.datasets import Dataset
from passes._errors import DataError

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "SAMPLE_RATE", "CHUNK", "CONTEXT", "CLIP_SAMPLES", "MAX_SEGMENTS",
           "espeak_available", "generate", "preprocess", "postprocess", "runner", "frame_truth", "metric"]

ZOO_NAME = "silero-vad"
N_EVAL = 96
N_CALIB = 256
SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64
CLIP_SAMPLES = 256 * CHUNK
MAX_SEGMENTS = 8
THRESHOLD = 0.5
_CALIB_CLIPS = 8
_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
_VARIANTS = ("", "+f2", "+f3", "+f4", "+m2", "+m3", "+m5")
Run = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def _speak(text: str, rng: np.random.Generator) -> np.ndarray:
    """``text`` spoken by a random espeak-ng voice, 16 kHz float32, trimmed to the voiced part."""
    voice = f"{rng.choice(_VOICES)}{rng.choice(_VARIANTS)}"
    speed, pitch = int(rng.integers(130, 201)), int(rng.integers(30, 71))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        cmd = ["espeak-ng", "-w", path, "-v", voice, "-s", str(speed), "-p", str(pitch), text]
        subprocess.run(cmd, check=True, capture_output=True)
        with wave.open(path) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    audio = preprocess(pcm, rate=rate)
    voiced = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return audio[voiced[0] : voiced[-1] + 1]


def _noise(rng: np.random.Generator, rms: float) -> np.ndarray:
    """White plus low-passed (brown-like) noise, scaled to ``rms``."""
    from scipy.signal import lfilter

    white = rng.standard_normal(CLIP_SAMPLES)
    brown = lfilter([1.0], [1.0, -float(rng.uniform(0.9, 0.995))], rng.standard_normal(CLIP_SAMPLES))
    mix = rng.uniform(0.0, 1.0)
    noise = mix * white / white.std() + (1.0 - mix) * brown / brown.std()
    return (noise * rms / noise.std()).astype(np.float32)


def _clip(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One clip (float32 ``[CLIP_SAMPLES]``) and its speech intervals ``[MAX_SEGMENTS, 2]``."""
    speech = np.zeros(CLIP_SAMPLES, dtype=np.float32)
    intervals = np.full((MAX_SEGMENTS, 2), -1, dtype=np.int64)
    count, pos = 0, int(rng.integers(SAMPLE_RATE // 4, SAMPLE_RATE))
    silent = rng.random() < 0.1
    while not silent and count < MAX_SEGMENTS:
        utterance = _speak(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))), rng)
        if pos + len(utterance) > CLIP_SAMPLES - SAMPLE_RATE // 4:
            break
        speech[pos : pos + len(utterance)] = utterance * (rng.uniform(0.1, 0.5) / np.abs(utterance).max())
        intervals[count] = pos, pos + len(utterance)
        count += 1
        pos += len(utterance) + int(rng.integers(int(0.4 * SAMPLE_RATE), 2 * SAMPLE_RATE))
    if count:
        power = float(np.mean(np.concatenate([speech[a:b] for a, b in intervals[:count]]) ** 2))
        rms = float(np.sqrt(power / 10 ** (rng.uniform(5.0, 25.0) / 10)))
    else:
        rms = float(rng.uniform(0.001, 0.02))
    return speech + _noise(rng, rms), intervals


def _clips(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_clip(rng) for _ in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _model_inputs(clips: np.ndarray) -> dict[str, np.ndarray]:
    n = len(clips)
    return {"input": clips, "state": np.zeros((n, 2, 1, 128), np.float32), "sr": np.full(n, SAMPLE_RATE, np.int64)}


def _calibration_chunks(clips: np.ndarray, count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``count`` (chunk with context, fp32 state) rows recorded while streaming ``clips``."""
    from onnxslim import zoo
    from onnxslim.runtime import make_session, run_model

    session = make_session(str(zoo.fetch(ZOO_NAME)))
    inputs, states = [], []
    for clip in clips:
        _stream(lambda feeds: run_model(session, feeds), clip[None], record=(inputs, states))
    rows = np.sort(rng.choice(len(inputs), size=min(count, len(inputs)), replace=False))
    return {"input": np.concatenate([inputs[i] for i in rows]), "state": np.stack([states[i] for i in rows]),
            "sr": np.full(len(rows), SAMPLE_RATE, np.int64)}


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Write ``n_eval`` labeled clips and ``n_calib`` calibration chunks (from other clips).

    The calibration chunks' states are recorded by running the fp32 zoo model (fetched if it is
    not cached).

    Raises:
        TaskUnavailable: ``espeak-ng`` is not installed.
        DataError: the two sets share a sample.
    """
    if not espeak_available():
        raise TaskUnavailable("task 'vad' needs the espeak-ng program (apt-get install espeak-ng)")
    clips, intervals = _clips(n_eval, stream(seed, EVAL_STREAM))
    calib_rng = stream(seed, CALIB_STREAM)
    calib_clips, _ = _clips(max(1, min(_CALIB_CLIPS, n_calib)), calib_rng)
    calib = _calibration_chunks(calib_clips, n_calib, calib_rng)
    return write_task(out_dir, {**_model_inputs(clips), LABELS_KEY: intervals}, calib)


def preprocess(pcm: np.ndarray, *, rate: int) -> np.ndarray:
    """Mono float audio at ``rate`` Hz -> float32 at 16 kHz (``scipy.signal.resample_poly``)."""
    if rate == SAMPLE_RATE:
        return np.asarray(pcm, dtype=np.float32)
    from scipy.signal import resample_poly

    g = int(np.gcd(SAMPLE_RATE, rate))
    return np.asarray(resample_poly(pcm, SAMPLE_RATE // g, rate // g), dtype=np.float32)


def _stream(run: Run, clip: np.ndarray, *, state: np.ndarray | None = None,
            record: tuple[list, list] | None = None) -> np.ndarray:
    """Speech probability of each 512-sample chunk of ``clip`` (``[1, samples]``), streamed."""
    state = np.zeros((2, 1, 128), np.float32) if state is None else state
    context = np.zeros((1, CONTEXT), np.float32)
    sr = np.array(SAMPLE_RATE, dtype=np.int64)
    probs = []
    for start in range(0, clip.shape[-1] - CHUNK + 1, CHUNK):
        feeds = {"input": np.concatenate([context, clip[:, start : start + CHUNK]], axis=1), "state": state, "sr": sr}
        if record is not None:
            record[0].append(feeds["input"])
            record[1].append(state)
        out = run(feeds)
        if "output" not in out or "stateN" not in out:
            raise DataError(f"vad: the model's outputs are {sorted(out)}, expected 'output' and 'stateN'")
        probs.append(float(np.asarray(out["output"]).reshape(-1)[0]))
        state, context = out["stateN"], feeds["input"][:, -CONTEXT:]
    return np.array(probs, dtype=np.float32)


def runner(run: Run, dataset: Dataset) -> list[dict[str, np.ndarray]]:
    """Stream every clip of ``dataset`` through ``run``; one ``{"speech_prob": ...}`` per clip."""
    return [{"speech_prob": _stream(run, np.asarray(s["input"], np.float32).reshape(1, -1), state=s.get("state"))}
            for s in dataset]


def postprocess(speech_prob: np.ndarray) -> np.ndarray:
    """Per-chunk probabilities -> speech decisions (≥ 0.5)."""
    return np.asarray(speech_prob).reshape(-1) >= THRESHOLD


def frame_truth(intervals: np.ndarray, frames: int) -> np.ndarray:
    """Per 512-sample frame: more than half of it inside one of the ``[start, end)`` intervals."""
    inside = np.zeros(frames * CHUNK, dtype=bool)
    for start, end in np.asarray(intervals, dtype=np.int64).reshape(-1, 2):
        if end > start >= 0:
            inside[start:end] = True
    return inside.reshape(frames, CHUNK).sum(axis=1) > CHUNK // 2


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """Frame-level F1 of speech decisions against the known intervals, and fp32 agreement.

    Raises:
        DataError: the data has no labels.
    """
    if dataset.labels is None:
        raise DataError(f"{dataset.source}: vad needs speech intervals as labels")
    tp = fp = fn = agree = total = 0
    for cand, ref, intervals in zip(candidate_outputs, reference_outputs, dataset.labels):
        pred, ref_pred = postprocess(cand["speech_prob"]), postprocess(ref["speech_prob"])
        truth = frame_truth(intervals, len(pred))
        tp += int(np.sum(pred & truth))
        fp += int(np.sum(pred & ~truth))
        fn += int(np.sum(~pred & truth))
        agree += int(np.sum(pred == ref_pred))
        total += len(pred)
    return {**f1_score(tp, fp, fn), "fp32_agreement": agree / total if total else 1.0}
