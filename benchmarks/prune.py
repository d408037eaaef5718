"""Structured channel pruning: LeNet-5 at 50 % and the zoo models at 30 %, with and without repair.

Run (from the repository root)::

    python -m benchmarks.prune [NAME ...] [--ratio R] [--calib N] [--runs N] [--json FILE]

For every model (``lenet5-digits``/digits, ``ppocr-det``/ocr-det, ``ppocr-rec``/ocr-rec,
``ppocr-cls``/ocr-cls, ``yolov8n-nudenet``/detect) the model is simplified (as ``onnxslim
prune`` does: BatchNorm folded, Constant weights lifted) and pruned with the default importance
(``activation`` with calibration data, ``l1`` for the variant without) and two
allocations (LeNet-5 with ``round_to=1`` to match Torch-Pruning's 50 %, the zoo with the
default ``round_to=8``):

- **uniform**: ``ratio`` of the channels of every group (Torch-Pruning's per-layer count);
  measured without data, with mean compensation only, and with the least-squares re-fit;
- **sensitivity** (the default with calibration data): ``ratio`` of the model's MACs, spent
  where the measured damage per MAC saved is least (``passes.prune._allocate``, probing with
  the ``linear`` fill that anticipates the re-fit); the same channels measured with mean
  compensation only and with the re-fit.

Calibration data is the task's *calibration* split (``benchmarks.tasks``; no labels are read),
``--calib`` samples of it (default per model below); the metric is computed on the task's
*eval* split, which never shares a sample with it. Columns: parameters and MACs (input shape of
the latency run), the task's headline metric without data, with mean compensation only and with
the re-fit, the target we set for the re-fitted metric (:data:`MAX_DROP`), p50 latency at 1
thread (``onnxslim.bench.bench`` with the original, the simplified and both pruned architectures
in one call, interleaved) and its ratio to the simplified unpruned model, and the pruning time
of the re-fitted variant. Every pruned model is checked (``onnx.checker`` full check) and must
keep the original interface.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run_tasks import DEFAULT_DATA_DIR, evaluate, task_data  # noqa: E402
from benchmarks.tasks import load_task, reference_model  # noqa: E402
from calibration.datasets import NpzDataset, input_specs  # noqa: E402
from onnxslim.bench import BenchOptions, bench  # noqa: E402
from onnxslim.report import markdown_table  # noqa: E402
from passes._base import RunContext  # noqa: E402
from passes.prune import PruneChannelsPass, PruneOptions  # noqa: E402
from passes.simplify import SimplifyOptions, SimplifyPass  # noqa: E402

__all__ = ["MODELS", "MAX_DROP", "Row", "measure_model", "render", "main"]

#: model name -> (task, latency/MACs input shapes, default calibration samples, options)
MODELS: dict[str, tuple[str, dict[str, tuple[int, ...]], int, dict[str, Any]]] = {
    "lenet5-digits": ("digits", {"input": (1, 1, 32, 32)}, 256, {"ratio": 0.5, "round_to": 1}),
    "ppocr-det": ("ocr-det", {"x": (1, 3, 480, 640)}, 32, {}),
    "ppocr-rec": ("ocr-rec", {"x": (1, 3, 48, 320)}, 256, {}),
    "ppocr-cls": ("ocr-cls", {"x": (1, 3, 48, 192)}, 256, {}),
    "yolov8n-nudenet": ("detect", {"images": (1, 3, 320, 320)}, 64, {}),
}
#: Target of the re-fitted sensitivity variant: at most this drop of the headline metric (absolute)
#: at ratio 0.3 with calibration data alone (no training, no labels). Set after a first
#: measurement (see benchmarks/README.md, "pruning"): the task stays usable, and it is a drop a
#: user would trade for a quarter less latency.
MAX_DROP = 0.05
#: allocation -> variant -> (use calibration data, reconstruct)
VARIANTS: dict[str, dict[str, tuple[bool, bool | None]]] = {
    "uniform": {"none": (False, None), "mean": (True, False), "refit": (True, True)},
    "sensitivity": {"mean": (True, False), "refit": (True, True)},
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One allocation of one model (metric values by variant: ``none``, ``mean``, ``refit``)."""

    model: str
    allocation: str
    params: int
    macs: int | None
    metric: str
    values: dict[str, float]
    target: float | None
    p50_ms: float | None
    p50_ratio: float | None
    seconds: float
    note: str = ""


def _interface(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(v.name, str(v.type)) for v in [*model.graph.input, *model.graph.output]]


def _prune(simplified: onnx.ModelProto, options: PruneOptions, calib: Any) -> tuple[onnx.ModelProto, dict, float]:
    start = time.perf_counter()
    result = PruneChannelsPass(options).apply(simplified, RunContext(dataset=calib))
    return result.model, dict(result.stats), time.perf_counter() - start


def _latency(paths: list[Path], shapes: dict, runs: int) -> list[float | None]:
    report = bench([str(p) for p in paths], BenchOptions(threads=(1,), shapes=shapes, runs=runs, warmup=10, isolate=False))
    by_model = {row.model: row.p50_ms for row in report.rows}
    return [by_model.get(str(p)) for p in paths]


def measure_model(name: str, *, ratio: float | None, calib_n: int | None, runs: int,
                  work: Path) -> tuple[list[Row], dict[str, Any]]:
    """Every allocation and variant of one model; returns the rows and the stats of the re-fitted ones."""
    task, shapes, default_calib, extra = MODELS[name]
    module = load_task(task)
    original_path = reference_model(module)
    original = onnx.load(str(original_path))
    simplified = SimplifyPass(SimplifyOptions(recompose_hardswish=False)).apply(original, RunContext()).model  # as prune does
    simplified_path = work / f"{name}.simplified.onnx"
    onnx.save(simplified, str(simplified_path))
    data = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=calib_n or default_calib,
                     regenerate=False)
    calib = NpzDataset(data.calib_path, input_specs(original))
    options = dict(extra, input_shapes=shapes, calib_samples=len(calib))
    if ratio is not None:
        options["ratio"] = ratio
    files, stats, seconds = [], {}, {}
    for allocation, variants in VARIANTS.items():
        for variant, (with_data, reconstruct) in variants.items():
            # both sensitivity variants probe as for a re-fit, so that they share their channel counts
            probe = {"sensitivity_fill": "linear"} if allocation == "sensitivity" else {}
            opts = PruneOptions(**options, allocation=allocation, reconstruct=reconstruct, **probe)
            model, stats[allocation, variant], seconds[allocation, variant] = _prune(
                simplified, opts, calib if with_data else None)
            onnx.checker.check_model(model, full_check=True)
            if _interface(model) != _interface(original):
                raise AssertionError(f"{name} {allocation} {variant}: interface changed")
            path = work / f"{name}.{allocation}.{variant}.onnx"
            onnx.save(model, str(path))
            files.append(((allocation, variant), path))
    report = evaluate(task, [("fp32", original_path)] + [(f"{a} {v}", p) for (a, v), p in files], data)
    headline = report.headline
    value = {key: row.metrics[headline] for (key, _), row in zip(files, report.rows[1:])}
    # the task's other keys (per-class AP, precision, ...) of the fp32 model and each re-fit
    details = {"fp32": report.rows[0].metrics} | {
        f"{a} {v}": row.metrics for (a, v), row in zip((k for k, _ in files), report.rows[1:]) if v == "refit"}
    # the variants of one allocation share their channel counts: time one file of each
    pruned = {a: dict(files)[a, "refit"] for a in VARIANTS}
    timed = [original_path, simplified_path, *pruned.values()]
    latency = _latency(timed, shapes, runs) if runs else [None] * len(timed)
    base = stats["uniform", "refit"]
    rows = [Row(name, "unpruned", base["params_before"], base["macs_before"], headline,
                {"none": report.rows[0].metrics[headline]}, None, latency[1], 1.0 if latency[1] else None, 0.0,
                f"as shipped: p50 {latency[0]:.2f} ms" if latency[0] else "")]
    for k, allocation in enumerate(VARIANTS):
        s = stats[allocation, "refit"]
        p50 = latency[2 + k]
        rows.append(Row(name, allocation, s["params_after"], s["macs_after"], headline,
                        {v: value[allocation, v] for v in VARIANTS[allocation]},
                        report.rows[0].metrics[headline] - MAX_DROP if allocation == "sensitivity" else None, p50,
                        p50 / latency[1] if p50 and latency[1] else None, seconds[allocation, "refit"]))
    return rows, {f"{a} {v}": s for (a, v), s in stats.items() if v == "refit"} | {"metrics": details}


def render(rows: list[Row]) -> str:
    """The Markdown table."""
    body = []
    for r in rows:
        base = next(b for b in rows if b.model == r.model and b.allocation == "unpruned")
        macs = "?" if r.macs is None else f"{r.macs / 1e6:,.2f} M"
        macs_ratio = f"{r.macs / base.macs:.2f}" if r.macs and base.macs else "-"
        cell = [("-" if v not in r.values else f"{r.values[v]:.4f}") for v in ("none", "mean", "refit")]
        body.append([r.model, r.allocation, f"{r.params:,}", macs, macs_ratio, r.metric, *cell,
                     "-" if r.target is None else f"≥ {r.target:.4f}",
                     "-" if r.p50_ms is None else f"{r.p50_ms:.2f}",
                     "-" if r.p50_ratio is None else f"{r.p50_ratio:.2f}", f"{r.seconds:.1f}"])
    header = ["model", "allocation", "params", "MACs", "MACs ratio", "metric (eval split)", "no data", "mean comp.",
              "re-fit", "target (re-fit)", "p50 ms (1 thread)", "p50 ratio", "prune s"]
    return markdown_table(header, body)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models (default all): {', '.join(MODELS)}")
    parser.add_argument("--ratio", type=float, help="override the ratio (default 0.5 LeNet-5, 0.3 zoo)")
    parser.add_argument("--calib", type=int, help="calibration samples (default per model)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model (0 skips latency)")
    parser.add_argument("--json", type=Path, help="also write the rows and stats as JSON here")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    rows, stats = [], {}
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as tmp:
        for name in args.names or list(MODELS):
            print(f"{name} ...", file=sys.stderr, flush=True)
            model_rows, stats[name] = measure_model(name, ratio=args.ratio, calib_n=args.calib, runs=args.runs,
                                                    work=Path(tmp))
            rows += model_rows
            print(render(model_rows), file=sys.stderr, flush=True)
    print(render(rows))
    for row in rows:
        if row.note:
            print(f"\n{row.model}: {row.note}")
    for name, by_allocation in stats.items():
        for label, metrics in by_allocation["metrics"].items():
            print(f"\n{name} {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        for label, s in ((k, v) for k, v in by_allocation.items() if k != "metrics"):
            frozen = ", ".join(f"{k[8:]} {v}" for k, v in s.items() if k.startswith("frozen: "))
            print(f"\n{name} ({label}): {s['groups_prunable']} prunable groups of {s['groups_total']}, "
                  f"{s['channels_before']} → {s['channels_after']} channels; frozen: {frozen or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in rows], "stats": stats}, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
