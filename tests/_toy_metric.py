"""A tiny task metric for the validate tests: mean of the first output, and a runner variant."""

from __future__ import annotations

import numpy as np


def mean_output(candidate_outputs, reference_outputs, dataset):
    """Higher is better: the mean value of output 'y' over all samples."""
    return float(np.mean([out["y"].mean() for out in candidate_outputs]))


def two_keys(candidate_outputs, reference_outputs, dataset):
    """A dict metric; the first key is the headline."""
    diffs = [np.abs(c["y"] - r["y"]).max() for c, r in zip(candidate_outputs, reference_outputs)]
    return {"closeness": -float(np.max(diffs)), "count": float(len(candidate_outputs))}


def closeness(candidate_outputs, reference_outputs, dataset):
    """Higher is better: minus the largest absolute difference from the reference over every
    output (0 for the reference itself, below 0 for any candidate that differs at all)."""
    worst = 0.0
    for cand, ref in zip(candidate_outputs, reference_outputs):
        for name, value in ref.items():
            worst = max(worst, float(np.abs(np.asarray(cand[name], np.float64) - value).max()))
    return -worst


def labeled_accuracy(candidate_outputs, reference_outputs, dataset):
    """Top-1 of output 'y' against the dataset's labels, as a task metric (reads the labels of
    exactly the samples it is given, so it follows a resample)."""
    labels = np.asarray(dataset.labels)
    predicted = np.array([int(np.argmax(out["y"])) for out in candidate_outputs])
    return {"accuracy": float(np.mean(predicted == labels[: len(predicted)]))}
