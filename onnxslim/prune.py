"""``onnxslim prune``: simplify, then remove the least important channels, then measure.

Plan, through the one flow (:func:`onnxslim.flow.run_flow`): :class:`passes.simplify.SimplifyPass`
(Constant weights folded into initializers, BatchNorm folded — pruning slices initializers) →
:class:`passes.prune.PruneChannelsPass` with the calibration samples (``--calib``) for activation
importance, bias compensation and least-squares reconstruction. A model with nothing to prune is
an error naming why (nothing is written). ``--dry-run`` lists the channel groups and what would be
removed, and writes nothing. ``--search`` (with ``--eval`` and ``--max-drop``) bisects the ratio:
every trial runs the flow without writing, and the largest ratio tried, at most ``--ratio``, whose
drop stays within ``--max-drop`` is written at the end (:func:`search_prune`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from calibration.datasets import Dataset
from onnxslim.budget import Trial, bound_of, drop_of, largest_within
from onnxslim.flow import FlowOptions, Outcome, PassReport, Plan, open_data, run_flow, write_outcome
from onnxslim.io import check_output_path, load_model
from onnxslim.validate import ValidationReport
from passes._base import RunContext
from passes._errors import UsageError
from passes._graph import check_names
from passes.prune import Analysis, PruneChannelsPass, PruneOptions, analyze, render_stats
from passes.simplify import SimplifyOptions, SimplifyPass

#: ``progress(label, done, total)``: what a long stage has done so far.
Progress = Callable[[str, int, int], None]

__all__ = ["PruneReport", "prune_file", "search_prune", "dry_run"]


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What ``prune`` did: the flow's report (with the per-group table and, with ``--eval``,
    accuracy) and the ratios a search tried."""

    base: PassReport
    trials: tuple[Trial, ...] = ()

    @property
    def passed(self) -> bool:
        """Whether the ``--eval`` gates (if any) held, so the output was written (a search:
        whether some ratio met them)."""
        return self.base.passed and (not self.trials or self.chosen is not None)

    @property
    def validation(self) -> ValidationReport | None:
        """The evaluation of the model written (a failed search: of the last ratio tried)."""
        return self.base.validation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = self.base.to_dict()
        if self.trials:
            out["search"] = [{"ratio": t.setting, "drop": t.drop, "bound": t.bound, "passed": t.passed,
                              "seconds": round(t.seconds, 2)} for t in self.trials]
        return out

    def render(self, *, verbose: bool = False) -> str:
        """Sizes, params and MACs per pruned group, verification, accuracy, and the search."""
        lines = [self.base.render(verbose=verbose), "", render_stats(self.base.step_stats("prune"))]
        if self.trials:
            chosen = self.chosen
            lines.append("search (eval data chose the ratio: hold out other data to report accuracy): "
                         + ", ".join(f"ratio {t.setting:.3f} {t.describe()}" for t in self.trials)
                         + (f"; kept ratio {chosen.setting:.3f}" if chosen else "; no ratio met the gates, nothing written"))
        return "\n".join(lines)

    @property
    def chosen(self) -> Trial | None:
        """The ratio written by a search: the largest that met the gates."""
        ok = [t for t in self.trials if t.passed]
        return max(ok, key=lambda t: t.setting) if ok else None


#: simplify as pruning was measured with (the grouping has not been checked on recomposed HardSwish)
_SIMPLIFY = SimplifyOptions(recompose_hardswish=False)


def _dataset(model: onnx.ModelProto, calib: str | os.PathLike[str] | Dataset | None, samples: int | None,
             skip_nonfinite: bool = False) -> Dataset | None:
    if calib is None:
        return None
    return open_data(calib, model, flag="--calib", limit=samples, skip_nonfinite=skip_nonfinite)


def dry_run(input_path: str | os.PathLike[str], options: PruneOptions, *,
            calib: str | os.PathLike[str] | None = None, samples: int | None = None) -> Analysis:
    """The channel groups of the simplified model and what ``options`` would remove."""
    model = load_model(input_path)
    check_names(model, nodes={"--exclude-node": options.exclude_nodes})
    simplified = SimplifyPass(_SIMPLIFY).apply(model, RunContext()).model
    return analyze(simplified, options, dataset=_dataset(model, calib, samples))


def _plan(options: PruneOptions, calib: str | os.PathLike[str] | Dataset | None, samples: int | None,
          flow: FlowOptions, progress: Progress | None) -> Callable[[onnx.ModelProto], Plan]:
    def plan(model: onnx.ModelProto) -> Plan:
        dataset = _dataset(model, calib, samples, flow.skip_nonfinite)
        notes = [] if dataset is None else [f"calibration: {len(dataset)} samples of {calib}"]
        steps = [SimplifyPass(_SIMPLIFY), PruneChannelsPass(options=options)]
        return Plan(steps, RunContext(dataset=dataset, progress=progress), verify_data=dataset, notes=notes,
                    must_change="prune")

    return plan


def _flow(options: PruneOptions, flow: FlowOptions) -> FlowOptions:
    return dataclasses.replace(flow, names={"--exclude-node": options.exclude_nodes})


def prune_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    options: PruneOptions,
    calib: str | os.PathLike[str] | Dataset | None = None,
    samples: int | None = None,
    flow: FlowOptions = FlowOptions(),
    progress: Progress | None = None,
) -> PruneReport:
    """Prune the model at ``input_path`` and write it to ``output_path`` (when every gate held).

    ``progress(label, done, total)`` reports long stages (the sensitivity probes).

    Raises:
        OnnxSlimError: as :func:`onnxslim.flow.run_flow`; nothing is written then.
    """
    outcome = run_flow(input_path, output_path, _plan(options, calib, samples, flow, progress), _flow(options, flow))
    return PruneReport(outcome.report)


def search_prune(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    options: PruneOptions,
    calib: str | os.PathLike[str] | Dataset | None = None,
    samples: int | None = None,
    flow: FlowOptions,
    steps: int = 4,
    progress: Progress | None = None,
) -> PruneReport:
    """The largest ratio, at most ``options.ratio``, whose drop on ``flow.evaluation`` is within
    its ``max_drop``.

    ``options.ratio`` is tried first; while it fails, the ratio is bisected between the largest
    passing ratio (0 at first) and the smallest failing one, ``steps`` times. Trials write
    nothing; the model of the largest passing ratio is written to ``output_path`` at the end.
    When none passes, nothing is written and the report's :attr:`PruneReport.passed` is false.
    The eval data chose the ratio, so its drop is optimistic: report accuracy on other data.

    Raises:
        UsageError: no evaluation or no ``max_drop`` in ``flow``.
        OnnxSlimError: as :func:`prune_file`; PreconditionError when the eval data gives no
            drop to measure (no metric, no labels).
    """
    evaluation = flow.evaluation
    if evaluation is None or evaluation.max_drop is None:
        raise UsageError("--search needs --eval and --max-drop")
    out = Path(output_path)
    check_output_path(out, Path(input_path))  # fail before any work
    flow = _flow(options, flow)
    last: list[Outcome] = []

    def evaluate(ratio: float) -> Outcome:
        trial = dataclasses.replace(options, ratio=ratio)
        last[:] = [run_flow(input_path, None, _plan(trial, calib, samples, flow, progress), flow)]
        return last[0]

    def report_trial(trial: Trial, done: int, most: int) -> None:
        if progress is not None:
            progress(f"search: ratio {trial.setting:.3f}, {trial.describe()} {evaluation.max_drop:g}", done, most)

    search = largest_within(evaluate, lambda o: (drop_of(o.report.validation), o.report.passed), options.ratio,
                            steps=steps, progress=report_trial, bound=lambda o: bound_of(o.report.validation))
    if search.best is None:
        return PruneReport(last[0].report, search.trials)
    return PruneReport(write_outcome(search.best, out).report, search.trials)
