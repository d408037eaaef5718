"""Measure static int8 quantization at DEFAULT settings on every task: metric and latency vs fp32.

Usage (from the repository root)::

    python -m benchmarks.quantize_static [TASK ...] [--calib-samples N] [--peer] [--reduce-range/--no-reduce-range]
                                         [--runs N] [--no-bench] [--out DIR]

For each task: generate its data (cached, as ``benchmarks.run_tasks``), prepare the fp32 model
(:class:`passes.quantize.PrepareForQuantizationPass`), calibrate it with MinMax on the task's
calibration split, quantize with default :class:`StaticQuantOptions`, then score fp32 vs ours with
the task metric (:func:`onnxslim.validate.validate`) and time fp32, ours (and with ``--peer``
onnxruntime's ``quantize_static`` QDQ result) side by side in one :func:`onnxslim.bench.bench`
run, 1 thread, p50. ``--probe`` prints which one-op QDQ units onnxruntime fuses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx

from benchmarks.run_tasks import DEFAULT_DATA_DIR, task_data
from benchmarks.tasks import TASKS, load_task, metric_spec, reference_model
from calibration.collect import collect
from calibration.datasets import open_dataset, input_specs
from passes._base import RunContext
from passes._errors import OnnxSlimError
from passes.quantize import PrepareForQuantizationPass, QuantizeStaticPass, StaticQuantOptions

__all__ = ["TaskResult", "run_task", "main"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TaskResult:
    """What one task measured."""

    task: str
    headline: str
    fp32: float
    ours: float
    peer: float | None
    p50_fp32_ms: float | None
    p50_ours_ms: float | None
    p50_peer_ms: float | None
    stats: dict[str, Any]
    notes: list[str]
    seconds: float


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.input}


def _sample(array: np.ndarray, i: int, rank: int) -> np.ndarray:
    """Sample ``i`` of an npz array, with a batch axis of 1 added when the model's rank needs it."""
    one = np.asarray(array[i])
    return one[None] if one.ndim < rank else one


def _first_shapes(path: Path, model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    data, ranks = np.load(path), _ranks(model)
    return {name: _sample(data[name], 0, rank).shape for name, rank in ranks.items() if name in data}


def _peer(fp32: Path, calib: Path, out: Path, reduce_range: bool) -> Path:
    """onnxruntime's quantize_static (QDQ, per-channel, u8/s8, MinMax), the peer."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    data = np.load(calib)
    names = [n for n in data.files if n != "labels"]
    ranks = _ranks(onnx.load(fp32))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(data[names[0]]):
                return None
            self.i += 1
            return {n: _sample(data[n], self.i - 1, ranks[n]) for n in names}

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range)
    return out


def run_task(task: str, *, out_dir: Path, calib_samples: int | None, reduce_range: bool, peer: bool,
             runs: int, do_bench: bool, options: StaticQuantOptions | None = None) -> TaskResult:
    """Prepare, calibrate, quantize, score and time one task (see the module docstring)."""
    from onnxslim.bench import BenchOptions, bench
    from onnxslim.validate import validate

    started = time.perf_counter()
    module = load_task(task)
    data = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=0, n_eval=None, n_calib=None, regenerate=False)
    fp32_path = reference_model(module)
    fp32 = onnx.load(fp32_path)
    prepare = PrepareForQuantizationPass().apply(fp32, RunContext())
    prepared, notes = prepare.model, list(prepare.stats["notes"])
    dataset = _limited(open_dataset(data.calib_path, input_specs(prepared)), calib_samples)
    table = collect(prepared, dataset, method="minmax")
    opts = options or StaticQuantOptions(reduce_range=reduce_range)
    eval_set = _limited(open_dataset(data.calib_path, input_specs(prepared)), 16)
    result = QuantizeStaticPass(opts).apply(prepared, RunContext(calibration=table, dataset=eval_set))
    out_dir.mkdir(parents=True, exist_ok=True)
    ours_path = out_dir / f"{task}.int8.onnx"
    onnx.save(result.model, ours_path)
    paths = [fp32_path, ours_path]
    if peer:
        paths.append(_peer(fp32_path, data.calib_path, out_dir / f"{task}.ort-int8.onnx", reduce_range))
    scores = []
    for p in paths[1:]:
        try:
            scores.append(validate(fp32_path, p, data=data.eval_path, metric=metric_spec(task)).metric)
        except OnnxSlimError as err:  # the peer's model can be invalid (e.g. silero: If subgraphs)
            notes.append(f"{p.name}: {str(err)[:160]}")
            paths.remove(p)
    peer = len(paths) == 3
    p50 = [None] * len(paths)
    if do_bench:
        shapes = _first_shapes(data.calib_path, fp32)  # calibration samples are single model inputs
        report = bench([str(p) for p in paths], BenchOptions(threads=(1,), runs=runs, warmup=5, shapes=shapes,
                                                           isolate=False))
        p50 = [r.p50_ms for r in report.rows]
    return TaskResult(
        task=task, headline=scores[0].headline, fp32=scores[0].reference[scores[0].headline],
        ours=scores[0].candidate[scores[0].headline],
        peer=scores[1].candidate[scores[1].headline] if peer else None,
        p50_fp32_ms=p50[0], p50_ours_ms=p50[1], p50_peer_ms=p50[2] if peer else None,
        stats={k: v for k, v in result.stats.items() if k not in ("quantized_nodes",)},
        notes=notes, seconds=time.perf_counter() - started)


def _limited(dataset, n: int | None):
    """At most ``n`` samples, in memory, every value an ndarray (npz scalars come back as numpy scalars)."""
    from calibration.datasets import IterableDataset

    items = []
    for i, sample in enumerate(dataset):
        if n is not None and i >= n:
            break
        items.append({k: np.asarray(v) for k, v in sample.items()})
    return IterableDataset(items)


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def render(results: list[TaskResult]) -> str:
    """Markdown table: metric fp32 -> ours (drop), p50 fp32 / ours / peer."""
    lines = ["| task | metric | fp32 | ours (drop) | peer | p50 fp32 ms | p50 ours ms | p50 peer ms | quantized |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.task} | {r.headline} | {r.fp32:.4f} | {r.ours:.4f} ({r.fp32 - r.ours:+.4f}) | "
                     f"{_fmt(r.peer)} | {_fmt(r.p50_fp32_ms, '.2f')} | {_fmt(r.p50_ours_ms, '.2f')} | "
                     f"{_fmt(r.p50_peer_ms, '.2f')} | {r.stats.get('nodes_quantized')} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("tasks", nargs=-1)
@click.option("--calib-samples", type=int, default=None, help="Calibration samples (default: the task's split).")
@click.option("--reduce-range/--no-reduce-range", default=False, show_default=True)
@click.option("--peer", is_flag=True, help="Also quantize with onnxruntime.quantization (the peer).")
@click.option("--runs", type=int, default=50, show_default=True)
@click.option("--no-bench", is_flag=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path(".cache/quantize_static"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(tasks: tuple[str, ...], calib_samples: int | None, reduce_range: bool, peer: bool, runs: int,
         no_bench: bool, out: Path, as_json: bool) -> None:
    """Quantize every TASK's model at default settings and print metric and latency vs fp32."""
    results = []
    for task in tasks or tuple(TASKS):
        r = run_task(task, out_dir=out, calib_samples=calib_samples, reduce_range=reduce_range, peer=peer,
                     runs=runs, do_bench=not no_bench)
        click.echo(f"{task}: {r.headline} {r.fp32:.4f} -> {r.ours:.4f}; p50 {r.p50_fp32_ms} -> {r.p50_ours_ms} "
                   f"(peer {r.peer} / {r.p50_peer_ms}); {r.seconds:.0f} s", err=True)
        click.echo(json.dumps({k: v for k, v in r.stats.items() if k != "float_nodes"}, default=str), err=True)
        results.append(r)
    click.echo(json.dumps([dataclasses.asdict(r) for r in results], default=str, indent=1) if as_json
               else render(results))


if __name__ == "__main__":  # pragma: no cover
    main()
