"""Shared test helpers: run a model in onnxruntime and compare two models numerically."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxslim.runtime import make_session, run_model, synthesize_feeds
from onnxslim.validate import tolerance_violation
from passes._base import Tolerance


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` with graph optimizations off (so ORT cannot hide a difference)."""
    return run_model(make_session(model, graph_opt="disable"), feeds)


def assert_equivalent(
    before: onnx.ModelProto,
    after: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    tol: Tolerance = Tolerance(rtol=1e-5, atol=1e-6),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Assert ``after`` computes what ``before`` does on ``feeds`` (random when omitted)."""
    if feeds is None:
        feeds = synthesize_feeds(before, rng=np.random.default_rng(seed), fill=(2, 2))
    ref = run_ort(before, feeds)
    got = run_ort(after, feeds)
    assert list(ref) == list(got), f"outputs differ: {list(ref)} vs {list(got)}"
    problem = tolerance_violation(ref, got, tol)
    assert problem is None, problem
    return got


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count by op type of the main graph."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
