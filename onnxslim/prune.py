"""``onnxslim prune``: simplify, then remove the least important channels, then measure.

Flow: load → :class:`passes.simplify.SimplifyPass` (Constant weights folded into initializers,
BatchNorm folded — pruning slices initializers) → :class:`passes.prune.PruneChannelsPass`
with the calibration samples (``--calib``) for activation importance, bias compensation and
least-squares reconstruction → written atomically. ``--dry-run`` lists the channel groups and
what would be removed, and writes nothing. With ``--eval``, the task accuracy of both models.
``--search`` (with ``--eval`` and ``--max-drop``) bisects the ratio: the largest one tried, at most
``--ratio``, whose drop stays within ``--max-drop`` is written (:func:`search_prune`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from calibration.datasets import Dataset, input_specs, prepare_dataset
from onnxslim.io import load_model, model_file_size, refuse_overwrite, save_model
from onnxslim.validate import ValidationReport, validate
from passes._base import RunContext
from passes._errors import ModelSaveError, PreconditionError
from passes.prune import Analysis, PruneChannelsPass, PruneOptions, analyze, render_stats
from passes.simplify import SimplifyPass

__all__ = ["PruneReport", "Trial", "prune_file", "search_prune", "dry_run"]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One ratio tried by :func:`search_prune`: its drop (metric headline, else labeled accuracy)
    and whether every ``--eval`` gate held."""

    ratio: float
    drop: float
    passed: bool


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What ``prune`` did: the pass report, the per-group table, and (with --eval) accuracy."""

    base: Any  # onnxslim.api.PassReport; None when a search wrote nothing
    validation: ValidationReport | None
    trials: tuple[Trial, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether the ``--eval`` gates (if any) held (a search: whether some ratio met them)."""
        if self.base is None:
            return False
        return self.validation is None or self.validation.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = {"output": None} if self.base is None else self.base.to_dict()
        out["validation"] = None if self.validation is None else self.validation.to_dict()
        if self.trials:
            out["search"] = [dataclasses.asdict(t) for t in self.trials]
        return out

    def render(self) -> str:
        """Sizes, params and MACs per pruned group, verification, then accuracy (and the search)."""
        lines = []
        if self.base is not None:
            prune_stats = next((s.stats for s in self.base.pipeline.steps if s.name == "prune"), {})
            lines += [self.base.render(), "", render_stats(prune_stats)]
        if self.validation is not None:
            lines.append(self.validation.render())
        if self.trials:
            chosen = self.chosen
            lines.append("search (eval data chose the ratio: hold out other data to report accuracy): "
                         + ", ".join(f"ratio {t.ratio:.3f} drop {t.drop:+.4f} {'ok' if t.passed else 'over'}"
                                     for t in self.trials)
                         + (f"; kept ratio {chosen.ratio:.3f}" if chosen else "; no ratio met the gates, nothing written"))
        return "\n".join(lines)

    @property
    def chosen(self) -> Trial | None:
        """The ratio written by a search: the largest that met the gates."""
        ok = [t for t in self.trials if t.passed]
        return max(ok, key=lambda t: t.ratio) if ok else None


def _dataset(model: Any, calib: str | os.PathLike[str] | Dataset | None, samples: int | None) -> Dataset | None:
    if calib is None:
        return None
    return prepare_dataset(calib, input_specs(model), limit=samples)


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


def _drop(validation: ValidationReport) -> float:
    if validation.metric is not None:
        return validation.metric.drop
    if validation.accuracy is not None:
        return validation.accuracy.drop
    raise PreconditionError("--search needs a drop to measure: give --metric, or labels in the --eval data")


def search_prune(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    options: PruneOptions,
    eval_data: str | os.PathLike[str],
    max_drop: float,
    steps: int = 4,
    progress: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> PruneReport:
    """The largest ratio, at most ``options.ratio``, whose drop on ``eval_data`` is within ``max_drop``.

    ``options.ratio`` is tried first; while it fails, the ratio is bisected between the largest
    passing ratio (0 at first) and the smallest failing one, ``steps`` times. The model of the
    largest passing ratio is written to ``output_path``; when none passes, nothing is written
    and the report's :attr:`PruneReport.passed` is false. The eval data chose the ratio, so its
    drop is optimistic: report accuracy on other data. ``kwargs`` go to :func:`prune_file`.

    Raises:
        OnnxSlimError: as :func:`prune_file`; PreconditionError when the eval data gives no
            drop to measure (no metric, no labels).
    """
    out = Path(output_path)
    refuse_overwrite(out, Path(input_path))  # fail before any work
    if not out.parent.is_dir():
        raise ModelSaveError(f"{out}: folder {out.parent} does not exist")
    lo, hi, ratio = 0.0, options.ratio, options.ratio
    trials: list[Trial] = []
    best: PruneReport | None = None
    with tempfile.TemporaryDirectory(prefix="onnxslim-search-") as tmp:
        for k in range(steps + 1):
            report = prune_file(input_path, Path(tmp) / f"ratio-{k}.onnx", options=dataclasses.replace(options, ratio=ratio),
                                eval_data=eval_data, max_drop=max_drop, **kwargs)
            trials.append(Trial(ratio, _drop(report.validation), report.passed))
            if progress is not None:
                progress(f"search: ratio {ratio:.3f}: drop {trials[-1].drop:+.4f}, "
                         f"{'within' if report.passed else 'over'} {max_drop:g}")
            if report.passed:
                lo, best = ratio, report
                if k == 0:
                    break
            else:
                hi = ratio
            ratio = (lo + hi) / 2
        if best is None:
            last = dataclasses.replace(report.validation, candidate=f"ratio {trials[-1].ratio:.3f} (not written)")
            return PruneReport(None, last, tuple(trials))
        save_model(load_model(best.base.output_path), out, input_path=input_path)
    after = dataclasses.replace(best.base.after, file_bytes=model_file_size(out))
    validation = dataclasses.replace(best.validation, candidate=str(out))
    return PruneReport(dataclasses.replace(best.base, output_path=str(out), after=after), validation, tuple(trials))
