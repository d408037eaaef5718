"""Node counts and latency after `onnxslim simplify` next to onnx-simplifier alone, on the zoo models.

Run: ``python benchmarks/simplify.py [NAME ...] [--runs N]`` (fetches the zoo models on first use).

For each model: nodes before, after onnxsim alone (``onnxsim.simplify`` with its defaults,
its own random check off), after ``onnxslim simplify``; wall time of each; the largest output
error of each against the original on one fixed input, relative to the output scale; and the
p50 latency of each as a ratio to the original's, the three timed side by side (1 thread,
``--runs`` interleaved rounds on the same input, :func:`onnxslim.bench.side_by_side_runs`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxsim  # imported before any timing: both columns exclude import time

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from onnxslim import zoo  # noqa: E402
from onnxslim.api import FlowOptions, simplify_file  # noqa: E402
from onnxslim.bench import side_by_side_runs  # noqa: E402
from onnxslim.report import markdown_table  # noqa: E402
from onnxslim.runtime import make_session, run_model  # noqa: E402

RNG = np.random.default_rng(0)
FEEDS = {
    "ppocr-det": {"x": RNG.uniform(-1, 1, (1, 3, 320, 320)).astype(np.float32)},
    "ppocr-rec": {"x": RNG.uniform(-1, 1, (1, 3, 48, 320)).astype(np.float32)},
    "ppocr-cls": {"x": RNG.uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)},
    "yolov8n-nudenet": {"images": RNG.uniform(0, 1, (1, 3, 320, 320)).astype(np.float32)},
    "silero-vad": {
        "input": (0.1 * RNG.standard_normal((1, 512))).astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, np.int64),
    },
    "picodet-layout-cdla": {"image": RNG.uniform(-1, 1, (1, 3, 800, 608)).astype(np.float32)},
    "lcnet-doc-orientation": {"x": RNG.uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)},
}


def _onnxsim_alone(model: onnx.ModelProto) -> tuple[onnx.ModelProto | None, str]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            simplified, _ = onnxsim.simplify(model, check_n=0)
        return simplified, "ok"
    except Exception as err:  # the peer's own failure is a result here
        return None, f"failed: {type(err).__name__}"


def _max_rel_error(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: dict) -> float:
    ref = run_model(make_session(reference), feeds)
    cand = run_model(make_session(candidate), feeds)
    worst = 0.0
    for name, r in ref.items():
        scale = float(np.max(np.abs(r))) or 1.0
        worst = max(worst, float(np.max(np.abs(r.astype(np.float64) - cand[name]))) / scale)
    return worst


def measure(name: str, workdir: Path, runs: int) -> list:
    """One table row for zoo model ``name``."""
    path = zoo.fetch(name)
    original = onnx.load(path)
    start = time.perf_counter()
    alone, status = _onnxsim_alone(original)
    sim_s = time.perf_counter() - start
    start = time.perf_counter()
    out = workdir / f"{name}.onnx"
    simplify_file(path, out, options=FlowOptions(verify=False))
    ours_s = time.perf_counter() - start
    ours = onnx.load(out)
    feeds = FEEDS[name]
    sim_nodes = len(alone.graph.node) if alone is not None else status
    sim_err = f"{_max_rel_error(original, alone, feeds):.1e}" if alone is not None else "-"
    timed = side_by_side_runs([original, ours] + ([alone] if alone is not None else []), feeds, threads=1, runs=runs)
    p50 = [float(np.median(t)) for t in timed]
    sim_ratio = f"{p50[2] / p50[0]:.2f}x" if alone is not None else "-"
    return [name, len(original.graph.node), sim_nodes, len(ours.graph.node), f"{sim_s:.2f}", f"{ours_s:.2f}",
            sim_err, f"{_max_rel_error(original, ours, feeds):.1e}", f"{p50[0]:.2f}", sim_ratio, f"{p50[1] / p50[0]:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(FEEDS))
    parser.add_argument("--runs", type=int, default=30, help="timed rounds per model (default 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, Path(tmp), args.runs) for name in args.names]
    headers = ["model", "nodes", "onnxsim alone", "onnxslim simplify", "onnxsim s", "onnxslim s",
               "onnxsim max rel err", "onnxslim max rel err", "original p50 ms", "onnxsim p50", "onnxslim p50"]
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
