"""Measure static int8 quantization at DEFAULT settings on every task: metric and latency vs fp32.

Usage (from the repository root)::

    python -m benchmarks.quantize_static [TASK ...] [--seed S]... [--calib-samples N] [--peer] [--method M]
                                         [--bias-correction] [--per-tensor] [--equalize]
                                         [--reduce-range/--no-reduce-range] [--runs N] [--no-bench] [--out DIR]

For each task and seed: generate its data (cached, as ``benchmarks.run_tasks``; calibration and
eval data both from that seed), run what a user runs — ``onnxslim quantize MODEL -o OUT --calib
CALIB`` (:func:`onnxslim.api.quantize_file`, default settings, the whole flow with its
verification) — and record whether a model was written or refused and why; then score fp32 vs
ours with the task metric (:func:`onnxslim.validate.validate`) and time fp32, ours (and with
``--peer`` onnxruntime's ``quantize_static`` QDQ result) side by side in one
:func:`onnxslim.bench.bench` run, 1 thread, p50.
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
from passes._errors import OnnxSlimError
from passes.quantize import QuantizeStaticPass

__all__ = ["TaskResult", "run_task", "main"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TaskResult:
    """What one task measured."""

    task: str
    seed: int
    written: bool
    headline: str
    fp32: float
    ours: float | None
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
             runs: int, do_bench: bool, seed: int = 0, method: str = "minmax",
             bias_correction: bool = False, per_channel: bool = True, equalize: bool = False,
             learned_rounding: bool = False) -> TaskResult:
    """Quantize one task's model as a user would, then score and time it (see the module docstring)."""
    from onnxslim.api import QuantizeSettings, quantize_file
    from onnxslim.bench import BenchOptions, bench
    from onnxslim.validate import validate

    started = time.perf_counter()
    module = load_task(task)
    data = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=seed, n_eval=None, n_calib=None, regenerate=False)
    fp32_path = reference_model(module)
    fp32 = onnx.load(fp32_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    ours_path = out_dir / f"{task}.seed{seed}.int8.onnx"
    ours_path.unlink(missing_ok=True)
    notes: list[str] = []
    stats: dict[str, Any] = {}
    try:
        report = quantize_file(fp32_path, ours_path, calib=data.calib_path,
                               settings=QuantizeSettings(reduce_range=reduce_range, samples=calib_samples, latency_runs=0,
                                                         method=method, bias_correction=bias_correction,
                                                         per_channel=per_channel, equalize=equalize,
                                                         learned_rounding=learned_rounding))
        stats = dict(report.base.step_stats(QuantizeStaticPass.name))
    except OnnxSlimError as err:
        notes.append(f"refused: {str(err)[:300]}")
    written = ours_path.exists()
    paths = [fp32_path] + ([ours_path] if written else [])
    if peer:
        paths.append(_peer(fp32_path, data.calib_path, out_dir / f"{task}.seed{seed}.ort-int8.onnx", reduce_range))
    scores = {}
    for p in paths[1:]:
        try:
            scores[p] = validate(fp32_path, p, data=data.eval_path, metric=metric_spec(task)).metric
        except OnnxSlimError as err:  # the peer's model can be invalid (e.g. silero: If subgraphs)
            notes.append(f"{p.name}: {str(err)[:160]}")
            paths.remove(p)
    if not scores:
        fp32_score = validate(fp32_path, fp32_path, data=data.eval_path, metric=metric_spec(task)).metric
        scores[fp32_path] = fp32_score
    first = next(iter(scores.values()))
    p50 = dict.fromkeys(paths)
    if do_bench and len(paths) > 1:
        shapes = _first_shapes(data.calib_path, fp32)  # calibration samples are single model inputs
        report = bench([str(p) for p in paths], BenchOptions(threads=(1,), runs=runs, warmup=5, shapes=shapes,
                                                           isolate=False))
        p50 = {p: r.p50_ms for p, r in zip(paths, report.rows)}
    peer_path = paths[-1] if peer and len(paths) > (2 if written else 1) else None
    return TaskResult(
        task=task, seed=seed, written=written, headline=first.headline, fp32=first.reference[first.headline],
        ours=scores[ours_path].candidate[first.headline] if written else None,
        peer=scores[peer_path].candidate[first.headline] if peer_path else None,
        p50_fp32_ms=p50.get(fp32_path), p50_ours_ms=p50.get(ours_path) if written else None,
        p50_peer_ms=p50.get(peer_path) if peer_path else None,
        stats={k: v for k, v in stats.items() if k not in ("quantized_nodes",)},
        notes=notes, seconds=time.perf_counter() - started)


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def render(results: list[TaskResult]) -> str:
    """Markdown table: written?, metric fp32 -> ours (drop), peer, p50 fp32 / ours / peer."""
    lines = ["| task | seed | written | metric | fp32 | ours (drop) | peer (drop) | p50 fp32 ms | p50 ours ms | "
             "p50 peer ms | quantized |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        ours = "-" if r.ours is None else f"{r.ours:.4f} ({r.fp32 - r.ours:+.4f})"
        peer = "-" if r.peer is None else f"{r.peer:.4f} ({r.fp32 - r.peer:+.4f})"
        lines.append(f"| {r.task} | {r.seed} | {'yes' if r.written else 'REFUSED'} | {r.headline} | {r.fp32:.4f} | "
                     f"{ours} | {peer} | {_fmt(r.p50_fp32_ms, '.2f')} | {_fmt(r.p50_ours_ms, '.2f')} | "
                     f"{_fmt(r.p50_peer_ms, '.2f')} | {r.stats.get('nodes_quantized', '-')} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("tasks", nargs=-1)
@click.option("--calib-samples", type=int, default=None, help="Calibration samples (default: the task's split).")
@click.option("--reduce-range/--no-reduce-range", default=False, show_default=True)
@click.option("--peer", is_flag=True, help="Also quantize with onnxruntime.quantization (the peer).")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True,
              help="Seed of the task data (calibration and eval); repeatable.")
@click.option("--runs", type=int, default=50, show_default=True)
@click.option("--method", default="minmax", show_default=True, help="Calibration method (quantize --method).")
@click.option("--bias-correction", is_flag=True, help="quantize --bias-correction.")
@click.option("--per-tensor", is_flag=True, help="quantize --per-tensor.")
@click.option("--equalize", is_flag=True, help="quantize --equalize.")
@click.option("--no-bench", is_flag=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path(".cache/quantize_static"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(tasks: tuple[str, ...], calib_samples: int | None, reduce_range: bool, peer: bool, seeds: tuple[int, ...],
         runs: int, method: str, bias_correction: bool, per_tensor: bool, equalize: bool, no_bench: bool, out: Path, as_json: bool) -> None:
    """Quantize every TASK's model at default settings and print metric and latency vs fp32."""
    results = []
    for seed in seeds:
        for task in tasks or tuple(TASKS):
            r = run_task(task, out_dir=out, calib_samples=calib_samples, reduce_range=reduce_range, peer=peer,
                         runs=runs, do_bench=not no_bench, seed=seed, method=method,
                         bias_correction=bias_correction, per_channel=not per_tensor,
                         equalize=equalize)
            click.echo(f"{task} seed {seed}: {'written' if r.written else 'REFUSED'}; {r.headline} {r.fp32:.4f} -> "
                       f"{r.ours}; p50 {r.p50_fp32_ms} -> {r.p50_ours_ms} (peer {r.peer} / {r.p50_peer_ms}); "
                       f"{r.seconds:.0f} s; {'; '.join(r.notes)}", err=True)
            results.append(r)
    click.echo(json.dumps([dataclasses.asdict(r) for r in results], default=str, indent=1) if as_json
               else render(results))


if __name__ == "__main__":  # pragma: no cover
    main()
