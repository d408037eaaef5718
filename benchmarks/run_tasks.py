"""Evaluate model variants on one task and print one table: metrics, drop, SQNR, size.

Usage (from the repository root)::

    python -m benchmarks.run_tasks TASK [MODEL ...] [--data-dir DIR] [--regenerate] [--seed N]

``TASK`` is one of :data:`benchmarks.tasks.TASKS` (``digits``, ``ocr-rec``, ``ocr-cls``,
``ocr-det``, ``detect``, ``vad``). The first ``MODEL`` is the reference (e.g. the fp32 model);
every model is compared with it by :func:`onnxslim.validate.validate` on the task's eval data
with the task's metric. ``ref`` stands for the task's own fp32 model (bundled or from the zoo);
with no ``MODEL`` at all, only that model is scored.

The task data is generated once per seed and sizes into ``DIR/<task>/seed<S>-eval<N>-calib<M>/``
(``eval.npz``, ``calib.npz``; default ``DIR`` is ``.cache/tasks`` in the repository) and reused;
``--regenerate`` writes it again. The calibration file is meant for the quantizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from benchmarks.tasks import TASKS, TaskData, TaskUnavailable, load_task, metric_spec, reference_model
from onnxslim.report import human_bytes, markdown_table
from onnxslim.validate import ValidationReport, validate
from passes._errors import OnnxSlimError

__all__ = ["DEFAULT_DATA_DIR", "ModelRow", "TaskReport", "task_data", "evaluate", "main"]

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / ".cache" / "tasks"
REFERENCE_ALIAS = "ref"


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One model's figures: metric values, headline drop vs the reference, first output's SQNR."""

    model: str
    size_bytes: int
    metrics: dict[str, float]
    drop: float
    sqnr_db: float | None
    output: str


@dataclasses.dataclass(frozen=True)
class TaskReport:
    """Everything one run measured; :meth:`render` gives the Markdown table."""

    task: str
    data: str
    samples: int
    headline: str
    rows: tuple[ModelRow, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    def render(self) -> str:
        """A header line and one Markdown table (one row per model)."""
        keys = list(self.rows[0].metrics)
        headers = ["model", *keys, f"drop ({self.headline})", f"SQNR dB ({self.rows[0].output})", "size"]
        body = [
            [r.model, *(r.metrics[k] for k in keys), f"{r.drop:+.4f}",
             "-" if r.sqnr_db is None else f"{r.sqnr_db:.2f}", human_bytes(r.size_bytes)]
            for r in self.rows
        ]
        return f"task {self.task}: {self.data} ({self.samples} samples)\n\n" + markdown_table(headers, body)


def task_data(task: str, module: ModuleType, *, data_dir: Path, seed: int, n_eval: int | None,
              n_calib: int | None, regenerate: bool) -> TaskData:
    """The task's data for this seed and sizes, generated (atomically) unless already there."""
    n_eval = n_eval or module.N_EVAL
    n_calib = n_calib or module.N_CALIB
    folder = data_dir / task / f"seed{seed}-eval{n_eval}-calib{n_calib}"
    data = TaskData(folder / "eval.npz", folder / "calib.npz")
    if not regenerate and data.eval_path.exists() and data.calib_path.exists():
        return data
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        module.generate(partial, seed=seed, n_eval=n_eval, n_calib=n_calib)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return data


def _row(name: str, path: Path, report: ValidationReport, *, reference: bool) -> ModelRow:
    metric = report.metric
    assert metric is not None  # validate was given a metric
    first = report.outputs[0] if report.outputs else None
    return ModelRow(
        model=name,
        size_bytes=path.stat().st_size,
        metrics=dict(metric.reference if reference else metric.candidate),
        drop=0.0 if reference else metric.drop,
        sqnr_db=None if reference or first is None else first.sqnr_db,
        output=first.name if first else "-",
    )


def evaluate(task: str, models: Sequence[tuple[str, Path]], data: TaskData, *,
             progress: Callable[[str], None] | None = None) -> TaskReport:
    """Score every model with the task metric, comparing each with the first one.

    Raises:
        OnnxSlimError: a model cannot be loaded or run, or does not fit the data.
    """
    (ref_name, ref_path), others = models[0], list(models[1:])
    rows: list[ModelRow] = []
    report = None
    for name, path in others or [(ref_name, ref_path)]:
        if progress:
            progress(f"{task}: {name} vs {ref_name}")
        report = validate(ref_path, path, data=data.eval_path, metric=metric_spec(task))
        if not rows:
            rows.append(_row(ref_name, ref_path, report, reference=True))
        if others:
            rows.append(_row(name, path, report, reference=False))
    assert report is not None and report.metric is not None
    return TaskReport(task, str(data.eval_path), report.samples, report.metric.headline, tuple(rows))


def _resolve(module: ModuleType, models: Sequence[str]) -> list[tuple[str, Path]]:
    if not models:
        models = (REFERENCE_ALIAS,)
    out = []
    for text in models:
        if text == REFERENCE_ALIAS:
            path = reference_model(module)
            out.append((f"{path.name} (fp32)", path))
        else:
            path = Path(text)
            if not path.is_file():
                raise click.BadParameter(f"{text}: no such model file", param_hint="MODEL")
            out.append((text, path))
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("task", type=click.Choice(list(TASKS)))
@click.argument("models", nargs=-1)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA_DIR,
              show_default=True, help="Where generated task data is cached.")
@click.option("--regenerate", is_flag=True, help="Generate the task data again even if cached.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the task data.")
@click.option("--n-eval", type=click.IntRange(min=1), help="Eval samples (default: the task's).")
@click.option("--n-calib", type=click.IntRange(min=1), help="Calibration samples (default: the task's).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def main(task: str, models: tuple[str, ...], data_dir: Path, regenerate: bool, seed: int, n_eval: int | None,
         n_calib: int | None, as_json: bool) -> None:
    """Evaluate MODELS (the first is the reference; 'ref' = the task's fp32 model) on TASK."""
    def note(message: str) -> None:
        click.echo(message, err=True)

    try:
        module = load_task(task)
        resolved = _resolve(module, models)
        data = task_data(task, module, data_dir=data_dir, seed=seed, n_eval=n_eval, n_calib=n_calib,
                         regenerate=regenerate)
        note(f"{task}: eval {data.eval_path}, calibration {data.calib_path}")
        report = evaluate(task, resolved, data, progress=note)
    except TaskUnavailable as err:
        click.echo(f"skipped: {err}")
        return
    except OnnxSlimError as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())


if __name__ == "__main__":  # pragma: no cover
    main()
