"""``quantize --max-drop``: searched on one seed's eval data, reported on another seed's.

Usage (from the repository root)::

    python -m benchmarks.budget TASK --max-drop X [--confidence C] [--search-seed A] [--report-seed B]
                                [--method M] [--bias-correction] [--runs N]

1. ``onnxslim quantize MODEL -o OUT --calib CALIB_A --eval EVAL_A --metric TASK --max-drop X``
   (:func:`onnxslim.api.quantize_file`), timed: how many full evaluations the search ran, each
   trial's float set and drop, the tool time;
2. the written model scored against fp32 on EVAL_B (:func:`onnxslim.validate.validate`): the
   search never saw those samples, so this is the drop a user can expect;
3. fp32 and the written model timed side by side in one :func:`onnxslim.bench.bench` run
   (1 thread, interleaved, p50).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import onnx

from benchmarks.quantize_static import _first_shapes
from benchmarks.run_tasks import DEFAULT_DATA_DIR, task_data
from benchmarks.tasks import TASKS, load_task, metric_spec, reference_model
from passes._errors import OnnxSlimError

__all__ = ["main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("task", type=click.Choice(list(TASKS)))
@click.option("--max-drop", type=float, required=True)
@click.option("--search-seed", type=int, default=0, show_default=True, help="Seed of the calibration and eval data searched on.")
@click.option("--report-seed", type=int, default=1, show_default=True, help="Seed of the eval data reported on.")
@click.option("--confidence", type=float, default=0.9, show_default=True,
              help="quantize --confidence: the drop's bootstrap upper bound must hold too (0: the measured drop).")
@click.option("--method", default="minmax", show_default=True)
@click.option("--bias-correction", is_flag=True)
@click.option("--runs", type=int, default=30, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path(".cache/budget"), show_default=True)
def main(task: str, max_drop: float, confidence: float, search_seed: int, report_seed: int, method: str,
         bias_correction: bool, runs: int, out: Path) -> None:
    """Search TASK's float set for --max-drop on one seed and report it on another."""
    from onnxslim.api import QuantizeSettings, quantize_file
    from onnxslim.bench import BenchOptions, bench
    from onnxslim.flow import EvalRequest, FlowOptions
    from onnxslim.validate import validate

    module = load_task(task)
    fp32 = reference_model(module)
    searched = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=search_seed, n_eval=None, n_calib=None,
                         regenerate=False)
    reported = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=report_seed, n_eval=None, n_calib=None,
                         regenerate=False)
    out.mkdir(parents=True, exist_ok=True)
    written = out / f"{task}.maxdrop{max_drop:g}.seed{search_seed}.onnx"
    written.unlink(missing_ok=True)
    started = time.perf_counter()
    settings = QuantizeSettings(method=method, bias_correction=bias_correction, latency_runs=0)
    flow = FlowOptions(evaluation=EvalRequest(searched.eval_path, metric=metric_spec(task), max_drop=max_drop,
                                                 confidence=confidence))
    try:
        report = quantize_file(fp32, written, settings=settings, calib=searched.calib_path, flow=flow)
    except OnnxSlimError as err:
        raise click.ClickException(f"quantize failed: {err}") from err
    seconds = time.perf_counter() - started
    click.echo(f"## {task}: `quantize --max-drop {max_drop:g} --confidence {confidence:g} --method {method}"
               f"{' --bias-correction' if bias_correction else ''}`, searched on seed {search_seed}, "
               f"reported on seed {report_seed}\n")
    click.echo("| trial | float units | drop on the searched eval | upper bound | within |\n"
               "| --- | --- | ---: | ---: | --- |")
    for k, trial in enumerate(report.search, 1):
        bound = "-" if trial.bound is None else f"{trial.bound:+.4f}"
        click.echo(f"| {k} | {trial.label} | {trial.drop:+.4f} | {bound} | {'yes' if trial.passed else 'no'} |")
    click.echo(f"\nevaluations: {len(report.search)}; tool time {seconds:.0f} s; written: {written.exists()}")
    if not written.exists():
        return
    score = validate(fp32, written, data=reported.eval_path, metric=metric_spec(task)).metric
    head = score.headline
    shapes = _first_shapes(reported.calib_path, onnx.load(fp32))
    timing = bench([str(fp32), str(written)], BenchOptions(threads=(1,), runs=runs, warmup=5, shapes=shapes, isolate=False))
    p50 = [r.p50_ms for r in timing.rows]
    click.echo(f"reported on seed {report_seed}: {head} fp32 {score.reference[head]:.4f}, int8 "
               f"{score.candidate[head]:.4f} (drop {score.reference[head] - score.candidate[head]:+.4f}); "
               f"p50 fp32 {p50[0]:.2f} ms, int8 {p50[1]:.2f} ms ({p50[1] / p50[0]:.2f}x); "
               f"float units: {len(report.float_units)}")


if __name__ == "__main__":  # pragma: no cover
    main()
