"""The accuracy budget shared by ``quantize --max-drop`` and ``prune --search``.

Both turn one knob whose larger values save more and cost more accuracy: the share of MACs
pruned, or the number of units left in int8. :func:`largest_within` finds the largest setting
whose evaluation holds the budget: it tries the largest first (often it holds: one
evaluation), then bisects between the largest setting known to hold (the bottom, where nothing
is changed, holds by definition) and the smallest known to fail. This assumes the drop grows
with the knob — true on average, not for every step — so the search is a good setting with
few evaluations (``log2`` of the range), not a proven optimum; every evaluation is reported.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from onnxslim.validate import ValidationReport
from passes._errors import PreconditionError

__all__ = ["Trial", "Search", "largest_within", "drop_of", "bound_of"]

T = TypeVar("T")


def drop_of(validation: ValidationReport | None) -> float:
    """The drop a budget is about: the task metric's headline, else labeled accuracy.

    Raises:
        PreconditionError: neither was measured (no ``--metric``, no labels in the eval data).
    """
    if validation is not None and validation.metric is not None:
        return validation.metric.drop
    if validation is not None and validation.accuracy is not None:
        return validation.accuracy.drop
    raise PreconditionError("a budget needs a drop to measure: give --metric, or labels in the --eval data")


def bound_of(validation: ValidationReport | None) -> float | None:
    """The upper confidence bound of the drop :func:`drop_of` reads, when one was computed
    (``--confidence``; not when the measured drop already exceeds the budget)."""
    if validation is None:
        return None
    report = validation.metric if validation.metric is not None else validation.accuracy
    return None if report is None else report.bound


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluated setting: the knob's value, the drop of the headline metric, whether every
    gate held, the seconds it took (build and evaluation), and the drop's upper confidence bound
    when one was computed."""

    setting: float
    drop: float
    passed: bool
    seconds: float
    label: str = ""
    bound: float | None = None

    def describe(self) -> str:
        """``drop +0.0039 (bound +0.0120) within``: what a progress line and a report say."""
        bound = "" if self.bound is None else f" (bound {self.bound:+.4f})"
        return f"drop {self.drop:+.4f}{bound} {'within' if self.passed else 'over'}"


@dataclasses.dataclass(frozen=True)
class Search(Generic[T]):
    """Every trial in the order run, and the outcome of the largest setting that held."""

    trials: tuple[Trial, ...]
    best: T | None
    best_setting: float | None


def largest_within(
    evaluate: Callable[[float], T],
    judge: Callable[[T], tuple[float, bool]],
    top: float,
    *,
    steps: int,
    integer: bool = False,
    label: Callable[[float], str] = str,
    progress: Callable[[Trial, int, int], None] | None = None,
    bound: Callable[[T], float | None] | None = None,
) -> Search[T]:
    """The largest setting in ``[0, top]`` whose outcome holds the budget.

    Args:
        evaluate: builds and evaluates the result at a setting.
        judge: ``(drop, held)`` of an outcome.
        top: the largest setting; tried first.
        steps: bisection steps after ``top`` fails (with ``integer``, fewer when the interval
            closes first).
        integer: settings are whole numbers (a count of units).
        label: how reports name a setting.
        progress: called after each trial with ``(trial, done, most)``.
        bound: the drop's upper confidence bound of an outcome, for the report (``judge``
            decides whether it held).
    """
    lo, hi, setting = 0.0, float(top), float(top)
    trials: list[Trial] = []
    best: T | None = None
    best_setting: float | None = None
    for k in range(steps + 1):
        started = time.perf_counter()
        outcome = evaluate(setting)
        drop, held = judge(outcome)
        trials.append(Trial(setting, drop, held, time.perf_counter() - started, label(setting),
                            None if bound is None else bound(outcome)))
        if progress is not None:
            progress(trials[-1], k + 1, steps + 1)
        if held:
            lo, best, best_setting = setting, outcome, setting
            if k == 0:
                break
        else:
            hi = setting
        nxt = (lo + hi) / 2
        if integer:
            nxt = float(int(nxt))
            if nxt <= lo:  # the interval closed: lo holds, lo + 1 = hi fails
                break
        setting = nxt
    return Search(tuple(trials), best, best_setting)
