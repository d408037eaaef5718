"""``onnxslim prune``: simplify, then remove the least important channels, then measure.

Flow: load → :class:`passes.simplify.SimplifyPass` (Constant weights folded into initializers,
BatchNorm folded — pruning slices initializers) → :class:`passes.prune.PruneChannelsPass`
with the calibration samples (``--calib``) for activation importance, bias compensation and
least-squares reconstruction → written atomically. ``--dry-run`` lists the channel groups and
what would be removed, and writes nothing. With ``--eval``, the task accuracy of both models.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from calibration.datasets import Dataset, check_dataset, input_specs, open_dataset, select_samples
from onnxslim.io import load_model
from onnxslim.validate import ValidationReport, validate
from passes._base import RunContext
from passes.prune import Analysis, PruneChannelsPass, PruneOptions, analyze, render_stats
from passes.simplify import SimplifyPass

__all__ = ["PruneReport", "prune_file", "dry_run"]


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What ``prune`` did: the pass report, the per-group table, and (with --eval) accuracy."""

    base: Any  # onnxslim.api.PassReport
    validation: ValidationReport | None

    @property
    def passed(self) -> bool:
        """Whether the ``--eval`` gates (if any) held."""
        return self.validation is None or self.validation.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = self.base.to_dict()
        out["validation"] = None if self.validation is None else self.validation.to_dict()
        return out

    def render(self) -> str:
        """Sizes, params and MACs per pruned group, verification, then accuracy."""
        prune_stats = next((s.stats for s in self.base.pipeline.steps if s.name == "prune"), {})
        lines = [self.base.render(), "", render_stats(prune_stats)]
        if self.validation is not None:
            lines.append(self.validation.render())
        return "\n".join(lines)


def _dataset(model: Any, calib: str | os.PathLike[str] | Dataset | None, samples: int | None) -> Dataset | None:
    if calib is None:
        return None
    specs = input_specs(model)
    dataset = calib if isinstance(calib, Dataset) else open_dataset(calib, specs)
    dataset = select_samples(dataset, limit=samples)
    check_dataset(dataset, specs)
    return dataset


def dry_run(input_path: str | os.PathLike[str], options: PruneOptions, *,
            calib: str | os.PathLike[str] | None = None, samples: int | None = None) -> Analysis:
    """The channel groups of the simplified model and what ``options`` would remove."""
    model = load_model(input_path)
    simplified = SimplifyPass().apply(model, RunContext()).model
    return analyze(simplified, options, dataset=_dataset(model, calib, samples))


def prune_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    options: PruneOptions,
    calib: str | os.PathLike[str] | Dataset | None = None,
    samples: int | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    metric: str | None = None,
    max_drop: float | None = None,
    verify: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> PruneReport:
    """Prune the model at ``input_path`` and write it to ``output_path``.

    Raises:
        OnnxSlimError: bad model or data, an option that needs ``--calib`` without it, or a
            pass failure; nothing is written then.
    """
    from onnxslim.api import run_passes_on_file

    def prepare(model: Any) -> tuple[RunContext, list[str]]:
        dataset = _dataset(model, calib, samples)
        note = [] if dataset is None else [f"calibration: {len(dataset)} samples of {calib}"]
        return RunContext(dataset=dataset), note

    passes = [SimplifyPass(), PruneChannelsPass(options=options)]
    base = run_passes_on_file(input_path, output_path, passes, verify=verify, shapes=shapes, prepare=prepare)
    validation = None
    if eval_data is not None:
        validation = validate(Path(input_path), Path(output_path), data=eval_data, metric=metric, max_drop=max_drop)
    return PruneReport(base, validation)
