"""Run passes in order: copy once, check after each pass, optionally verify each numerically.

Each pass is compared with *its own input* under *its own* tolerance, so a lossy pass is not
judged by an exact pass's tolerance. Every failure is wrapped with the pass's name and the
passes that ran before it.

Besides passes, a pipeline may hold :class:`ContextStep` s: steps that read the model as it is at
that point and hand later passes a new :class:`RunContext` (calibration between "prepare" and
"quantize", so the table is measured on the graph it will be applied to, and only once).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxslim.io import check_model
from onnxslim.runtime import cast_feeds, make_session, run_model
from onnxslim.validate import tolerance_violation
from passes._base import STRUCTURAL, Pass, PassResult, RunContext
from passes._errors import DataError, InvalidModelError, OnnxSlimError, PassError, VerificationError

__all__ = ["ContextStep", "StepReport", "PipelineReport", "run_pipeline"]

log = logging.getLogger(__name__)


class ContextStep(abc.ABC):
    """A pipeline step that leaves the model alone and gives the passes after it a new context."""

    name: str = "context"

    @abc.abstractmethod
    def update(self, model: onnx.ModelProto, ctx: RunContext) -> tuple[RunContext, Mapping[str, Any]]:
        """The context for the passes after this step, and stats for the report."""


@dataclasses.dataclass(frozen=True)
class StepReport:
    """What one pass did: its name, whether it changed the model, its stats, and verification."""

    name: str
    changed: bool
    stats: Mapping[str, Any]
    seconds: float
    verified: str  # "passed", "not requested", "unchanged", or "not a rewrite" (a context step)
    details: Any = dataclasses.field(default=None, repr=False, compare=False)  # the pass's own, not reported


@dataclasses.dataclass(frozen=True)
class PipelineReport:
    """The steps in order and the final model."""

    steps: tuple[StepReport, ...]
    model: onnx.ModelProto

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the model)."""
        return {"steps": [{"name": s.name, "changed": s.changed, "stats": dict(s.stats), "seconds": s.seconds,
                           "verified": s.verified} for s in self.steps]}


def _verify(pass_: Pass, before: onnx.ModelProto, result: PassResult, feeds: Sequence[Mapping[str, np.ndarray]], *,
            fidelity: bool) -> str:
    """Run the pass's input and output on ``feeds``: names, shapes and finiteness always; then
    the pass's promise (its own :meth:`Pass.verify`, else its tolerance output by output) unless
    ``fidelity`` is off for a lossy pass (a task metric gate judges it instead)."""
    after = result.model
    try:
        session = make_session(before, graph_opt="disable")
        reference = [run_model(session, cast_feeds(f, before)) for f in feeds]
    except OnnxSlimError as err:
        raise VerificationError(f"cannot verify pass '{pass_.name}': its input model does not run on the "
                                f"verification inputs ({err})") from err
    try:
        session = make_session(after, graph_opt="disable")
        candidate = [run_model(session, cast_feeds(f, after)) for f in feeds]
    except OnnxSlimError as err:
        raise VerificationError(f"pass '{pass_.name}' produced a model onnxruntime cannot run: {err}") from err
    for i, (ref, cand) in enumerate(zip(reference, candidate)):
        problem = tolerance_violation(ref, cand, STRUCTURAL)
        if problem:
            raise VerificationError(f"pass '{pass_.name}' broke the outputs (sample {i}): {problem}")
    own_check = type(pass_).verify is not Pass.verify
    if not fidelity and (own_check or pass_.tolerance.min_cosine is not None):
        return "outputs valid (fidelity judged by the --eval metric)"
    own = pass_.verify(before, after, feeds, result)
    if own is NotImplemented:
        for i, (ref, cand) in enumerate(zip(reference, candidate)):
            problem = tolerance_violation(ref, cand, pass_.tolerance)
            if problem:
                raise VerificationError(f"pass '{pass_.name}' changed the outputs (sample {i}): {problem}")
    elif own:
        raise VerificationError(f"pass '{pass_.name}' lost too much: {own}")
    return "passed"


def _apply(pass_: Pass, work: onnx.ModelProto, ctx: RunContext, before: list[str]) -> PassResult:
    try:
        pass_.check_input(work)
        result = pass_.apply(work, ctx)
    except OnnxSlimError as err:
        if isinstance(err, PassError):
            raise
        raise PassError(pass_.name, before, str(err)) from err
    except Exception as err:
        raise PassError(pass_.name, before, f"internal error: {type(err).__name__}: {err}") from err
    if not isinstance(result, PassResult):
        raise TypeError(f"pass '{pass_.name}' returned {type(result).__name__}, not PassResult")
    return result


def _update_context(step: ContextStep, work: onnx.ModelProto, ctx: RunContext,
                    before: list[str]) -> tuple[RunContext, Mapping[str, Any]]:
    try:
        return step.update(work, ctx)
    except PassError:
        raise
    except OnnxSlimError as err:
        raise PassError(step.name, before, str(err)) from err


def run_pipeline(
    model: onnx.ModelProto,
    passes: Sequence[Pass | ContextStep],
    ctx: RunContext,
    *,
    verify_feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
    fidelity: bool = True,
) -> PipelineReport:
    """Run ``passes`` over a copy of ``model``; the caller's model is never modified.

    Args:
        model: the input model.
        passes: the passes (and context steps), in order.
        ctx: the explicit run context handed to each pass.
        verify_feeds: when given, each pass that changed the model is compared with its own
            input on these samples under the pass's tolerance.
        fidelity: judge lossy passes (int8) by their own promise; off when a task-metric gate
            judges the result instead (their outputs are still checked for names, shapes and
            finiteness).

    Raises:
        PassError: a pass failed or produced a model that fails ``onnx.checker``; names the
            pass and those before it.
        VerificationError: a pass changed the outputs beyond its tolerance.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    steps: list[StepReport] = []
    for pass_ in passes:
        names_before = [s.name for s in steps]
        if isinstance(pass_, ContextStep):
            start = time.perf_counter()
            ctx, stats = _update_context(pass_, work, ctx, names_before)
            steps.append(StepReport(pass_.name, False, dict(stats), time.perf_counter() - start, "not a rewrite"))
            continue
        snapshot = None
        if verify_feeds is not None:
            snapshot = onnx.ModelProto()
            snapshot.CopyFrom(work)
        start = time.perf_counter()
        result = _apply(pass_, work, ctx, names_before)
        seconds = time.perf_counter() - start
        work = result.model
        try:
            check_model(work, where="its output")
        except InvalidModelError as err:
            raise PassError(pass_.name, names_before, str(err)) from err
        if snapshot is None:
            verified = "not requested"
        elif not result.changed:
            verified = "unchanged"
        elif not verify_feeds:
            raise DataError("verification was requested with no samples")
        else:
            verified = _verify(pass_, snapshot, result, verify_feeds, fidelity=fidelity)
        log.debug("pass %s: changed=%s stats=%s (%.2fs)", pass_.name, result.changed, result.stats, seconds)
        steps.append(StepReport(pass_.name, result.changed, dict(result.stats), seconds, verified, result.details))
    return PipelineReport(tuple(steps), work)
