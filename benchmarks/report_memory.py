"""Peak memory of ``onnxslim quantize --report-errors`` against plain fp32 inference of the same model.

Usage (from the repository root)::

    python -m benchmarks.report_memory [TASK] [--seed S] [--samples N] [--json]

``TASK`` defaults to ``ocr-rec`` (the zoo's ``ppocr-rec``). Its model and calibration data come
as in ``benchmarks.quantize_static`` (:func:`benchmarks.run_tasks.task_data`, generated once per
seed). Each measured thing runs in its own child process, one after the other, and its peak RSS
is the ``ru_maxrss`` that ``os.wait4`` returns for that child (Linux: the largest of the child and
of any process it waited for):

1. ``floor``: Python with onnxslim, onnxruntime, onnx and numpy imported, nothing run;
2. ``fp32 inference``: one onnxruntime session of the model (default options, CPU), every
   calibration sample run through it;
3. ``quantize --report-errors``: ``python -m onnxslim.cli quantize MODEL -o OUT --calib CALIB
   --report-errors FILE.json`` at default settings;
4. ``quantize``: the same without ``--report-errors``.

One Markdown table: peak RSS, peak above the floor, and both as a ratio to fp32 inference. The
bar for ``--report-errors``: its raw peak below 2x fp32 inference's (it must not hold all
tensors of all samples). The error report itself (like the SQNR fallback and the verification)
measures on the first ``fallback_samples`` (8) of them; its JSON's ``samples`` says how many, and
is printed below the table. ``--samples N`` uses only the first N calibration samples (written to a
smaller ``.npz`` beside the output), to see how the peak grows with the sample count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

__all__ = ["BAR", "Measurement", "main", "measure", "parse", "render", "verdict"]

#: The acceptance bar: raw peak of ``quantize --report-errors`` / raw peak of fp32 inference.
BAR = 2.0
FLOOR = "floor (imports only)"
FP32 = "fp32 inference"
REPORT = "quantize --report-errors"
QUANTIZE = "quantize"

_IMPORTS = "import numpy, onnx, onnxruntime, onnxslim, onnxslim.api, onnxslim.cli"

_FP32_CODE = """
import sys
import numpy as np, onnx, onnxruntime as ort
import onnxslim, onnxslim.api, onnxslim.cli
model_path, calib_path = sys.argv[1], sys.argv[2]
ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in onnx.load(model_path).graph.input}
sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
data = np.load(calib_path)
names = [n for n in data.files if n in ranks]
count = len(data[names[0]])
for i in range(count):
    feeds = {}
    for n in names:
        one = np.asarray(data[n][i])
        feeds[n] = one[None] if one.ndim < ranks[n] else one
    sess.run(None, feeds)
print(count)
"""


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One child: what it ran, its peak RSS (MiB), wall time (s), exit code."""

    what: str
    peak_mib: float
    seconds: float
    returncode: int = 0


def measure(what: str, cmd: list[str], *, cwd: Path | None = None) -> tuple[Measurement, str]:
    """Run ``cmd`` as a child; its peak RSS from ``os.wait4`` and its wall time; also its stderr tail."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
        seconds = time.perf_counter() - started
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    return Measurement(what, usage.ru_maxrss / 1024.0, seconds, proc.returncode), tail  # ru_maxrss: KiB on Linux


def _ratio(num: float, den: float) -> str:
    return "-" if den <= 0 else f"{num / den:.2f}x"


def render(rows: list[Measurement], *, samples: int, task: str = "ocr-rec") -> str:
    """A header line and the Markdown table (floor and fp32 inference rows must be present)."""
    by = {m.what: m for m in rows}
    floor, fp32 = by[FLOOR].peak_mib, by[FP32].peak_mib
    lines = [f"task {task}: {samples} calibration samples; bar: {REPORT} peak < {BAR:g}x {FP32} peak", "",
             ("| what | peak RSS MiB | above the floor MiB | ratio to fp32 (peak) | ratio to fp32 (above floor) | "
              "seconds | exit |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in rows:
        above = m.peak_mib - floor
        lines.append(f"| {m.what} | {m.peak_mib:.1f} | {above:.1f} | {_ratio(m.peak_mib, fp32)} | "
                     f"{_ratio(above, fp32 - floor) if m.what != FLOOR else '-'} | {m.seconds:.1f} | {m.returncode} |")
    return "\n".join(lines)


def parse(text: str) -> list[Measurement]:
    """The rows of a table :func:`render` wrote (peak, seconds and exit code; the ratios are derived)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 7 or cells[0] == "what" or cells[1].startswith("-"):
            continue
        rows.append(Measurement(cells[0], float(cells[1]), float(cells[5]), int(cells[6])))
    return rows


def verdict(rows: list[Measurement]) -> str:
    """Whether the ``--report-errors`` peak is below :data:`BAR` times the fp32 inference peak."""
    by = {m.what: m for m in rows}
    if REPORT not in by or by[REPORT].returncode != 0:
        return f"{REPORT}: not measured (failed)"
    ratio = by[REPORT].peak_mib / by[FP32].peak_mib
    return f"{REPORT}: {ratio:.2f}x the fp32 inference peak -> {'PASS' if ratio < BAR else 'FAIL'} (bar {BAR:g}x)"


def _subset(calib: Path, n: int, folder: Path) -> tuple[Path, int]:
    import numpy as np

    data = np.load(calib)
    arrays = {k: data[k][:n] for k in data.files}
    count = len(next(iter(arrays.values())))
    path = folder / f"calib{count}.npz"
    np.savez(path, **arrays)
    return path, count


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("task", default="ocr-rec")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the task data.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Only the first N calibration samples (default: the task's whole calibration set).")
@click.option("--out", type=click.Path(path_type=Path), default=Path(".cache/report_memory"), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON instead of the table.")
def main(task: str, seed: int, samples: int | None, out: Path, as_json: bool) -> None:
    """Peak RSS of quantize --report-errors vs fp32 inference of TASK's model, each in a child."""
    import numpy as np

    from benchmarks.run_tasks import DEFAULT_DATA_DIR, task_data
    from benchmarks.tasks import load_task, reference_model

    module = load_task(task)
    data = task_data(task, module, data_dir=DEFAULT_DATA_DIR, seed=seed, n_eval=None, n_calib=None, regenerate=False)
    model = reference_model(module)
    out.mkdir(parents=True, exist_ok=True)
    calib = data.calib_path
    if samples is not None:
        calib, count = _subset(calib, samples, out)
    else:
        loaded = np.load(calib)
        count = len(loaded[next(n for n in loaded.files if n != "labels")])
    root = Path(__file__).resolve().parent.parent
    py = sys.executable
    quantize = [py, "-m", "onnxslim.cli", "quantize", str(model), "--calib", str(calib)]
    report_json = out / f"{task}.seed{seed}.errors.json"
    report_json.unlink(missing_ok=True)  # never read a stale one
    children = [
        (FLOOR, [py, "-c", _IMPORTS]),
        (FP32, [py, "-c", _FP32_CODE, str(model), str(calib)]),
        (REPORT, [*quantize, "-o", str(out / f"{task}.seed{seed}.report.int8.onnx"), "--report-errors",
                  str(report_json)]),
        (QUANTIZE, [*quantize, "-o", str(out / f"{task}.seed{seed}.int8.onnx")]),
    ]
    rows = []
    for what, cmd in children:
        click.echo(f"{what}: running ...", err=True)
        m, tail = measure(what, cmd, cwd=root)
        click.echo(f"{what}: peak {m.peak_mib:.1f} MiB, {m.seconds:.1f} s, exit {m.returncode}", err=True)
        if m.returncode != 0:
            click.echo(tail, err=True)
        rows.append(m)
    if as_json:
        click.echo(json.dumps({"task": task, "seed": seed, "samples": count, "model": str(model),
                               "rows": [dataclasses.asdict(m) for m in rows], "verdict": verdict(rows)}, indent=2))
        return
    click.echo(render(rows, samples=count, task=task))
    click.echo("")
    if report_json.exists():
        click.echo(f"the error report measured on {json.loads(report_json.read_text())['samples']} of them")
    click.echo(verdict(rows))


if __name__ == "__main__":  # pragma: no cover
    main()
