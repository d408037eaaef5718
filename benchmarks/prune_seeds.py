"""Measure ``onnxslim prune --ratio 0.3 --calib CALIB`` (default settings) on every task at several data seeds.

Usage (from the repository root)::

    python -m benchmarks.prune_seeds [TASK ...] [--seed S]... [--ratio R] [--out DIR] [--data-dir DIR] [--json]

For each task and seed: take the task's data (cached, as ``benchmarks.run_tasks``; calibration
and eval data both from that seed) and run what a user runs — ``onnxslim prune MODEL -o OUT
--ratio 0.3 --calib CALIB`` (:func:`onnxslim.api.prune_file`, default settings, the whole flow
with its verification) — recording whether a model was written or declined (and why), the
fidelity the command *prints* (output SQNR of the pruned model against the unpruned one on the
first calibration samples, ``passes.prune._prune.measured_sqnr``) and whether it printed the
below-20-dB warning. Then the written file's fidelity is measured again, independently: the
model file as shipped against the file written, on the same calibration samples (opened as the
command opens them), with the same definition (the very same function). Last, fp32 and the
pruned model are scored with the task metric on that seed's eval split
(:func:`onnxslim.validate.validate`). No latency is measured.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import click
import onnx

from benchmarks.run_tasks import DEFAULT_DATA_DIR, task_data
from benchmarks.tasks import TASKS, load_task, metric_spec, reference_model
from passes._errors import OnnxSlimError

__all__ = ["COLUMNS", "TaskResult", "main", "measure_fidelity", "render", "run_task"]

#: The fidelity line ``onnxslim prune`` prints (``passes.prune._report.render_stats``).
_PRINTED = re.compile(r"output SQNR (-?[0-9.]+|inf|nan) dB against the unpruned model")


@dataclasses.dataclass
class TaskResult:
    """What one task at one seed measured."""

    task: str
    seed: int
    written: bool
    headline: str
    fp32: float
    pruned: float | None
    printed_db: float | None
    measured_db: float | None
    warning: bool
    why: str = ""
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def diff_db(self) -> float | None:
        """``|printed - measured|`` in dB (``None`` when either is missing)."""
        if self.printed_db is None or self.measured_db is None:
            return None
        return abs(self.printed_db - self.measured_db)


def measure_fidelity(original: str | Path, pruned: str | Path, calib: str | Path, count: int) -> float | None:
    """The written model's fidelity measured from the files: ``original`` (as shipped, not
    simplified) against ``pruned`` on the first ``count`` samples of ``calib``, opened as ``onnxslim
    prune --calib`` opens them, by the report's definition (the worst float output's SQNR)."""
    from onnxslim.flow import open_data
    from passes.prune._collect import Samples
    from passes.prune._prune import measured_sqnr

    reference, candidate = onnx.load(str(original)), onnx.load(str(pruned))
    samples = Samples(open_data(calib, reference, flag="--calib"), None).head(count)
    return measured_sqnr(reference, candidate, samples)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] + ("…" if len(text) > 200 else "")


def run_task(task: str, *, out_dir: Path, seed: int, ratio: float = 0.3, data_dir: Path = DEFAULT_DATA_DIR) -> TaskResult:
    """Prune one task's model as a user would, re-measure its fidelity, score it (see the module docstring)."""
    from onnxslim.api import PruneOptions, prune_file
    from onnxslim.flow import FlowOptions
    from onnxslim.validate import validate
    from passes._base import VERIFY_SAMPLES
    from passes.prune._report import FIDELITY_WARN_DB

    started = time.perf_counter()
    module = load_task(task)
    data = task_data(task, module, data_dir=data_dir, seed=seed, n_eval=None, n_calib=None, regenerate=False)
    fp32_path = reference_model(module)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"{task}.seed{seed}.pruned.onnx"
    out_path.unlink(missing_ok=True)
    why, printed, warning, stats = "", None, False, {}
    try:
        report = prune_file(fp32_path, out_path, options=PruneOptions(ratio=ratio), calib=data.calib_path,
                            flow=FlowOptions())
        text = report.render()
        stats = {k: v for k, v in report.base.step_stats("prune").items() if k != "groups"}
        found = _PRINTED.search(text)
        printed = float(found.group(1)) if found else None
        warning = "WARNING: below" in text and "--search" in text
        if printed is not None and stats.get("output_sqnr_db") is not None:
            assert abs(printed - stats["output_sqnr_db"]) < 1e-9, (printed, stats["output_sqnr_db"])
        if not out_path.exists():
            why = "not written: " + "; ".join(report.validation.failures if report.validation else ["see the report"])
        stats["warn_below_db"] = FIDELITY_WARN_DB
    except OnnxSlimError as err:
        why = f"declined: {_one_line(err)}"
    written = out_path.exists()
    measured = None
    if written:
        count = int(stats.get("fidelity_samples") or VERIFY_SAMPLES)
        measured = measure_fidelity(fp32_path, out_path, data.calib_path, count)
        stats["measured_samples"] = count
    candidate = out_path if written else fp32_path
    metric = validate(fp32_path, candidate, data=data.eval_path, metric=metric_spec(task)).metric
    assert metric is not None
    return TaskResult(task=task, seed=seed, written=written, headline=metric.headline,
                      fp32=metric.reference[metric.headline],
                      pruned=metric.candidate[metric.headline] if written else None,
                      printed_db=printed, measured_db=measured, warning=warning, why=why, stats=stats,
                      seconds=time.perf_counter() - started)


def _db(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


COLUMNS = ["task", "seed", "written", "metric", "fp32", "pruned (drop)", "printed fidelity dB", "measured dB",
           "|diff| dB", "warning"]


def render(results: list[TaskResult]) -> str:
    """Markdown table, one row per task and seed; a declined model's row says why."""
    header = " | ".join(c.replace("|", "\\|") for c in COLUMNS)  # a pipe inside a cell is escaped
    lines = [f"| {header} |", "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        if r.written:
            pruned = f"{r.pruned:.4f} ({r.fp32 - r.pruned:+.4f})"
            written = "yes"
        else:
            pruned = "-"
            written = r.why.replace("|", "\\|") or "no"
        warning = "yes" if r.warning else ("no" if r.written else "-")
        lines.append(f"| {r.task} | {r.seed} | {written} | {r.headline} | {r.fp32:.4f} | {pruned} | "
                     f"{_db(r.printed_db)} | {_db(r.measured_db)} | {_db(r.diff_db)} | {warning} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("tasks", nargs=-1)
@click.option("--seed", "seeds", type=int, multiple=True, default=(1, 2), show_default=True,
              help="Seed of the task data (calibration and eval); repeatable.")
@click.option("--ratio", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True,
              help="prune --ratio (the default of the command).")
@click.option("--out", type=click.Path(path_type=Path), default=Path(".cache/prune_seeds"), show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, show_default=True,
              help="Task data cache (as benchmarks.run_tasks).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of the table.")
def main(tasks: tuple[str, ...], seeds: tuple[int, ...], ratio: float, out: Path, data_dir: Path, as_json: bool) -> None:
    """Prune every TASK's model at default settings for each seed; print metric and fidelity (printed vs measured)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise click.BadParameter(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    results = []
    for seed in seeds:
        for task in tasks or tuple(TASKS):
            r = run_task(task, out_dir=out, seed=seed, ratio=ratio, data_dir=data_dir)
            click.echo(f"{task} seed {seed}: {'written' if r.written else r.why}; {r.headline} {r.fp32:.4f} -> "
                       f"{r.pruned}; printed {r.printed_db} dB, measured {r.measured_db} dB "
                       f"warning {r.warning}; {r.seconds:.0f} s",
                       err=True)
            results.append(r)
    click.echo(json.dumps([{**dataclasses.asdict(r), "diff_db": r.diff_db} for r in results], default=str, indent=1)
               if as_json else render(results))


if __name__ == "__main__":  # pragma: no cover
    main()
