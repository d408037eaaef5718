"""The int8 corrections, each measured alone against the default, on every task.

Usage (from the repository root)::

    python -m benchmarks.corrections [TASK ...] [--seed S] [--variant NAME]... [--weights per-channel|per-tensor]...

For each task, weight granularity and variant, ``onnxslim quantize MODEL -o OUT --calib CALIB``
runs as a user runs it (:func:`benchmarks.quantize_static.run_task`, the whole flow with its
verification, calibration and eval data of seed ``S``), and the task metric of the written model
is scored against fp32 on the eval split. Variants:

- ``default``: the defaults;
- ``bias``: ``--bias-correction``;
- ``equalize``: ``--equalize`` (the table says how many Conv pairs it found; with 0 the model is
  the default one and is not run again);
- ``rounding``: ``--learned-rounding``;
- ``auto``: ``--method auto`` (per-tensor range choice);
- ``percentile``: ``--method percentile`` (the range method alone, for comparison with ``auto``).

Accuracy only; latency is not timed here (see ``benchmarks.quantize_static``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import onnx

from benchmarks.quantize_static import run_task
from benchmarks.tasks import TASKS, load_task, reference_model

__all__ = ["VARIANTS", "Row", "main", "render"]

#: variant -> keyword arguments of run_task
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "bias": {"bias_correction": True},
    "equalize": {"equalize": True},
    "rounding": {"learned_rounding": True},
    "auto": {"method": "auto"},
    "percentile": {"method": "percentile"},
}


@dataclasses.dataclass
class Row:
    """One task at one weight granularity: the metric of each variant (``None``: refused)."""

    task: str
    weights: str
    headline: str
    fp32: float
    metrics: dict[str, float | None]
    pairs: int
    notes: list[str] = dataclasses.field(default_factory=list)


def equalizable_pairs(task: str) -> int:
    """Conv pairs cross-layer equalization finds in the task's prepared model."""
    from passes._base import RunContext
    from passes.quantize import PrepareForQuantizationPass
    from passes.quantize._equalize import conv_pairs

    model = onnx.load(reference_model(load_task(task)))
    return len(conv_pairs(PrepareForQuantizationPass().apply(model, RunContext()).model.graph))


def render(rows: list[Row], variants: list[str]) -> str:
    """Markdown: metric (drop vs fp32) per variant ("refused": nothing written; "not run"); the best
    per row in bold (when they differ)."""
    head = "| task | weights | metric | fp32 | " + " | ".join(variants) + " | Conv pairs |"
    lines = [head, "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in variants) + " | ---: |"]
    for r in rows:
        done = [v for v in variants if r.metrics.get(v) is not None]
        best = max((r.metrics[v] for v in done), default=None)
        cells = []
        for v in variants:
            m = r.metrics.get(v)
            cell = "not run" if v not in r.metrics else "refused" if m is None else f"{m:.4f} ({r.fp32 - m:+.4f})"
            differ = len({r.metrics[d] for d in done}) > 1
            cells.append(f"**{cell}**" if m is not None and m == best and differ else cell)
        lines.append(f"| {r.task} | {r.weights} | {r.headline} | {r.fp32:.4f} | " + " | ".join(cells) + f" | {r.pairs} |")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("tasks", nargs=-1)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the calibration and eval data.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(list(VARIANTS)),
              help="Variants to run (default: all).")
@click.option("--weights", "weights", multiple=True, type=click.Choice(["per-channel", "per-tensor"]),
              help="Weight granularity (default: both).")
@click.option("--out", type=click.Path(path_type=Path), default=Path(".cache/corrections"), show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the rows as JSON.")
def main(tasks: tuple[str, ...], seed: int, variants: tuple[str, ...], weights: tuple[str, ...], out: Path,
         json_path: Path | None) -> None:
    """Score every TASK's int8 model with each correction alone and print the table."""
    chosen = list(variants or VARIANTS)
    rows = []
    for task in tasks or tuple(TASKS):
        pairs = equalizable_pairs(task)
        for granularity in weights or ("per-channel", "per-tensor"):
            row = None
            for variant in chosen:
                if variant == "equalize" and pairs == 0 and "default" in (row.metrics if row else {}):
                    row.metrics[variant] = row.metrics["default"]  # nothing to equalize: the default model
                    continue
                r = run_task(task, out_dir=out / variant, calib_samples=None, reduce_range=False, peer=False, runs=0,
                             do_bench=False, seed=seed, per_channel=granularity == "per-channel", **VARIANTS[variant])
                if row is None:
                    row = Row(task, granularity, r.headline, r.fp32, {}, pairs)
                row.metrics[variant] = r.ours
                row.notes += [f"{variant}: {n}" for n in r.notes]
                click.echo(f"{task} {granularity} {variant}: {r.ours} (fp32 {r.fp32}); {r.seconds:.0f} s "
                           f"{'; '.join(r.notes)}", err=True)
            rows.append(row)
    if json_path is not None:
        json_path.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    click.echo(render(rows, chosen))


if __name__ == "__main__":  # pragma: no cover
    main()
