"""The pass contract: :class:`Pass`, :class:`PassResult`, :class:`RunContext` and tolerances.

Errors live in :mod:`passes._errors`, which ``calibration`` imports too.

A pass is a class named ``<Verb><Object>Pass`` with a stable :attr:`Pass.name` (its key in the
command line and the report) and a :attr:`Pass.tolerance` (what it promises about outputs).
:meth:`Pass.apply` receives a model that the pipeline already copied, so it may rewrite it in
place, and returns a :class:`PassResult` that says truthfully whether anything changed and what.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import onnx


__all__ = [
    "Tolerance",
    "EXACT",
    "STRUCTURAL",
    "VERIFY_SAMPLES",
    "PassResult",
    "RunContext",
    "Pass",
]


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """What a pass promises about its outputs compared with its input model.

    Attributes:
        rtol: relative tolerance of an element-wise comparison, scaled by each output's
            largest magnitude (``|a - b| <= atol + rtol * max|a|``).
        atol: absolute floor of the element-wise comparison.
        min_cosine: when set, outputs are compared by cosine similarity instead (for lossy
            passes such as int8, where element-wise closeness is the wrong measure).
    """

    rtol: float = 1e-5
    atol: float = 1e-6
    min_cosine: float | None = None

    def describe(self) -> str:
        """A short human-readable form, e.g. ``rtol=1e-05 atol=1e-06``."""
        if self.min_cosine is not None:
            return f"cosine>={self.min_cosine}"
        return f"rtol={self.rtol:g} atol={self.atol:g}"


#: Rewrites that are exact in real arithmetic (folding, dead code): only float rounding differs.
EXACT = Tolerance(rtol=1e-4, atol=1e-5)

#: Outputs keep their names, shapes and finiteness; their values are judged elsewhere (a task
#: metric, or the pass's own :meth:`Pass.verify`).
STRUCTURAL = Tolerance(min_cosine=-1.0)

#: How many samples of the user's data a pass's promise is judged on. The static int8 fallback
#: measures the same first samples, so whatever it returns passes the verification.
VERIFY_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class PassResult:
    """What a pass returns.

    Attributes:
        model: the rewritten model (may be the same object the pass received).
        changed: whether the model was changed at all; must be ``False`` when nothing was done.
        stats: counters for the report, e.g. ``{"bn_folded": 3}``; skip reasons are counted
            under keys of the form ``"skipped: <reason>"``.
        details: what the pass's own :meth:`Pass.verify` needs (not reported).
    """

    model: onnx.ModelProto
    changed: bool
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    details: Any = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Explicit inputs every pass may use; nothing is read from globals or the environment.

    Attributes:
        rng: the random generator for anything a pass draws (seeded by the caller).
        calibration: a calibration table, when the user supplied or computed one.
        dataset: samples (``dict[input name -> array]``) for data-driven passes, or ``None``.
        logger: where a pass logs its DEBUG-level decisions.
        progress: ``progress(label, done, total)``, called by long passes as they go (the
            command line draws it on a terminal); passes never print.
    """

    rng: np.random.Generator = dataclasses.field(
        default_factory=lambda: np.random.default_rng(0)
    )
    calibration: Any = None
    dataset: Any = None
    logger: logging.Logger = dataclasses.field(
        default_factory=lambda: logging.getLogger("passes")
    )
    progress: Callable[[str, int, int], None] | None = None


class Pass(abc.ABC):
    """Base class of every graph pass.

    Subclasses set :attr:`name` and :attr:`tolerance` and implement :meth:`apply`. They may
    override :meth:`check_input` to refuse a model with a :class:`PreconditionError`.
    """

    name: ClassVar[str]
    tolerance: ClassVar[Tolerance] = EXACT

    def check_input(self, model: onnx.ModelProto) -> None:  # noqa: B027 - optional hook
        """Raise :class:`PreconditionError` when this pass cannot run on ``model``."""

    def verify(self, before: onnx.ModelProto, after: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
               result: PassResult) -> str | None:
        """Why ``after`` breaks this pass's promise on ``feeds``, or ``None`` when it keeps it.

        A pass whose promise is not output-by-output closeness (int8's fidelity floor, measured
        as its own fallback measures it) overrides this; the default returns ``NotImplemented``
        and the pipeline compares each output under :attr:`tolerance`. Names, shapes and
        finiteness are checked by the pipeline either way.
        """
        return NotImplemented

    @abc.abstractmethod
    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Rewrite ``model`` (which the caller already copied) and say what was done."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
