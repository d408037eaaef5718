"""Calibration: onnxslim's streaming collection next to onnxruntime.quantization's calibrators.

Run: ``python benchmarks/calibration.py [--models ppocr-rec ppocr-det] [--samples 32 128 512]
[--ours minmax entropy percentile] [--peers minmax entropy percentile] [--det-size 320]
[--memory-gb 16] [--timeout 1800] [--json OUT.json]``

Every (model, sample count, calibrator) runs in its own subprocess (``--child``), so each peak
RSS is that configuration's own: the child reads ``VmHWM`` from ``/proc/self/status`` at the end
(``ru_maxrss`` would include the parent's peak). Each child runs under ``RLIMIT_AS`` = the memory
cap and the parent kills it after the timeout; a child that hits the cap reports its peak so far.

Calibrators:

- ours: ``calibration.collect.collect(model, data, method=…)`` with default options (512 MiB
  budget of exposed tensors, 4096 histogram bins per side);
- onnxruntime: ``create_calibrator(model_path, op_types_to_calibrate=None,
  augmented_model_path=…, calibrate_method=CalibrationMethod.X)``, then ``collect_data(reader)``
  and ``compute_data()``, with its defaults (Entropy: 128 bins → 128; Percentile: 2048 bins,
  99.999).

Data: no real OCR images ship with the zoo, so samples are deterministic synthetic images (smooth
random blobs plus noise, normalized to [-1, 1] as PP-OCR's preprocessing does), generated on the
fly by both sides: ppocr-rec ``[1, 3, 48, 320]``, ppocr-det ``[1, 3, S, S]`` (``--det-size``).
Wall time covers loading the model through computing the ranges.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

__all__ = ["main", "image", "render", "child", "SHAPES"]

SHAPES = {"ppocr-rec": (1, 3, 48, 320), "ppocr-det": (1, 3, 320, 320)}
_OOM_WORDS = ("bad_alloc", "bad allocation", "Failed to allocate", "Unable to allocate", "std::bad")


def image(index: int, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic image-like sample ``index``: blurred blobs plus noise in [-1, 1]."""
    rng = np.random.default_rng([2024, index])
    n, c, h, w = shape
    coarse = rng.uniform(-1, 1, (n, c, max(1, h // 16) + 1, max(1, w // 16) + 1)).astype(np.float32)
    smooth = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)[:, :, :h, :w]
    noise = rng.normal(0, 0.15, shape).astype(np.float32)
    return np.clip(smooth + noise, -1, 1).astype(np.float32)


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_ours(path: Path, method: str, count: int, shape: tuple[int, ...]) -> int:
    import onnx

    from calibration.collect import collect
    from calibration.datasets import Dataset

    class Images(Dataset):
        source = "synthetic images"

        def __len__(self) -> int:
            return count

        def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
            return ({"x": image(i, shape)} for i in range(count))

    table = collect(onnx.load(path), Images(), method=method)
    return len(table)


def _run_peer(path: Path, method: str, count: int, shape: tuple[int, ...]) -> int:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.index = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.index >= count:
                return None
            self.index += 1
            return {"x": image(self.index - 1, shape)}

    kind = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(path, op_types_to_calibrate=None,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"), calibrate_method=kind)
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
    return len(ranges.data if hasattr(ranges, "data") else ranges)


def child(tool: str, method: str, model: str, count: int, shape: tuple[int, ...], memory_gb: float) -> None:
    """Run one configuration and print one JSON line."""
    cap = int(memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from onnxslim import zoo

    path = zoo.fetch(model)
    start = time.perf_counter()
    result: dict = {"status": "ok"}
    try:
        tensors = (_run_ours if tool == "ours" else _run_peer)(path, method, count, shape)
        result["tensors"] = tensors
    except MemoryError:
        result["status"] = "memory cap"
    except Exception as err:  # the peer's own failure is a result here
        text = f"{type(err).__name__}: {err}"
        oom = any(w in text for w in _OOM_WORDS)
        result["status"] = "memory cap" if oom else f"failed: {text.splitlines()[0][:120]}"
    result["seconds"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # whole child, robust to a busy machine
    result["peak_rss_mb"] = _vmhwm_mb()
    print(json.dumps(result), flush=True)


def _measure(args: argparse.Namespace, tool: str, method: str, model: str, count: int) -> dict:
    shape = SHAPES[model] if model != "ppocr-det" else (1, 3, args.det_size, args.det_size)
    cmd = [sys.executable, __file__, "--child", tool, method, model, str(count), "x".join(map(str, shape)),
           str(args.memory_gb)]
    row = {"model": model, "shape": "x".join(map(str, shape)), "samples": count,
           "calibrator": f"{'onnxslim' if tool == 'ours' else 'onnxruntime'} {method}"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**row, "status": f"timed out after {args.timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:120]
        status = "memory cap" if any(w in done.stderr for w in _OOM_WORDS) else f"crashed: {tail}"
        return {**row, "status": status}
    return {**row, **json.loads(lines[-1])}


def _cells(row: dict, cap_gb: float) -> list[str]:
    status = row["status"]
    rss = row.get("peak_rss_mb")
    if status == "memory cap":
        status = f"killed at the {cap_gb:.0f} GB cap" + (f" (peak {rss / 1024:.1f} GB)" if rss else "")
    ok = row["status"] == "ok"
    cpu = row.get("cpu_seconds")
    return [row["model"], row["shape"], str(row["samples"]), row["calibrator"], status,
            f"{row['seconds']:.1f}" if ok else "-",
            f"{1000 * row['seconds'] / row['samples']:.0f}" if ok else "-",
            f"{1000 * cpu / row['samples']:.0f}" if ok and cpu else "-",
            f"{rss:.0f}" if ok and rss else "-"]


def render(rows: list[dict], cap_gb: float) -> str:
    """The result table (Markdown)."""
    from onnxslim.report import markdown_table

    return markdown_table(["model", "input", "samples", "calibrator", "status", "wall s", "wall ms/sample",
                           "CPU ms/sample", "peak RSS MB"], [_cells(r, cap_gb) for r in rows])


def _checks(rows: list[dict]) -> list[str]:
    """The acceptance comparisons, one line per (model, our calibrator)."""
    def get(model: str, calibrator: str, samples: int) -> dict | None:
        found = [r for r in rows if (r["model"], r["calibrator"], r["samples"]) == (model, calibrator, samples)]
        return found[0] if found and found[0]["status"] == "ok" else None

    def rate(row: dict, key: str) -> float:
        return 1000 * row.get(key, float("nan")) / row["samples"]

    lines = []
    big, small = max(r["samples"] for r in rows), min(r["samples"] for r in rows)
    for model in dict.fromkeys(r["model"] for r in rows):
        peer = get(model, "onnxruntime minmax", big)
        for calibrator in dict.fromkeys(r["calibrator"] for r in rows if r["calibrator"].startswith("onnxslim")):
            hi, lo = get(model, calibrator, big), get(model, calibrator, small)
            if not (hi and lo):
                continue
            line = (f"{model} {calibrator}: peak RSS {big}/{small} samples = "
                    f"{hi['peak_rss_mb'] / lo['peak_rss_mb']:.2f}x; at {big} samples {rate(hi, 'seconds'):.0f} ms "
                    f"wall / {rate(hi, 'cpu_seconds'):.0f} ms CPU per sample")
            if peer:
                line += (f" vs onnxruntime minmax {rate(peer, 'seconds'):.0f} / {rate(peer, 'cpu_seconds'):.0f} "
                         f"({rate(hi, 'seconds') / rate(peer, 'seconds'):.2f}x wall, "
                         f"{rate(hi, 'cpu_seconds') / rate(peer, 'cpu_seconds'):.2f}x CPU)")
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> None:
    """Parse options, run every configuration in a child process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ppocr-rec", "ppocr-det"])
    parser.add_argument("--samples", nargs="+", type=int, default=[32, 128, 512])
    parser.add_argument("--ours", nargs="*", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--peers", nargs="*", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--det-size", type=int, default=320)
    parser.add_argument("--memory-gb", type=float, default=16.0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        for count in args.samples:
            for tool, methods in (("ours", args.ours), ("peer", args.peers)):
                for method in methods:
                    rows.append(_measure(args, tool, method, model, count))
                    print(" | ".join(_cells(rows[-1], args.memory_gb)), file=sys.stderr, flush=True)
    print(render(rows, args.memory_gb))
    print()
    for line in _checks(rows):
        print(f"- {line}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        tool_, method_, model_, count_, shape_, memory_ = sys.argv[2:8]
        child(tool_, method_, model_, int(count_), tuple(int(d) for d in shape_.split("x")), float(memory_))
    else:
        main()
