"""The options of channel pruning (one field per ``onnxslim prune`` flag)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from passes._errors import OnnxSlimError
from passes.prune._importance import CRITERIA

__all__ = ["ALLOCATIONS", "PruneOptions"]

#: How the budget is spread over the groups (see :attr:`PruneOptions.allocation`).
ALLOCATIONS = ("global", "uniform", "sensitivity")


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    """What :class:`~passes.prune.PruneChannelsPass` does.

    Attributes:
        ratio: what to remove (``--ratio``), in ``[0, 1)``: with the ``global`` and ``uniform``
            allocations, the share of the prunable channels; with ``sensitivity``, the share of
            the model's MACs.
        criterion: channel importance, one of ``l1``, ``l2``, ``bn``, ``activation``
            (``--criterion``); ``activation`` needs calibration data. ``None``: ``activation``
            with calibration data, else ``l1`` (at ratio 0.3 with the sensitivity allocation and
            the re-fit, activation beat L1 on all four zoo models: benchmarks/README.md, "pruning").
        allocation: how many channels each group loses (``--allocation``): ``global`` ranks all
            channels together (scores normalized by their group's mean); ``uniform`` removes
            ``ratio`` of every group; ``sensitivity`` measures each group's effect on the
            outputs on calibration data and removes ``ratio`` of the MACs where it hurts least
            (see :mod:`passes.prune._allocate`). ``None``: ``sensitivity`` with calibration
            data, else ``uniform`` with ``per_layer``, else ``global``.
        per_layer: the same as ``allocation="uniform"`` (``--per-layer``).
        round_to: kept channel counts are multiples of this (or the full count), never zero
            (``--round-to``).
        exclude_nodes: node names left untouched (``--exclude-node``): every group touching
            one of their inputs, outputs or parameters is frozen.
        reconstruct: least-squares re-fit of the layers that lost inputs (``--reconstruct``);
            ``None`` means on when calibration data is given. Mean compensation of the bias
            is always done when calibration data is given.
        max_ratio: no group loses more than this fraction of its channels.
        calib_samples: calibration samples used for statistics and re-fit (the first ones).
        refit_rows: output positions per sample and layer used by the re-fit.
        ridge: pull of the re-fit toward the mean-compensated weights.
        sequential_refit: re-fit layer by layer on the partly repaired model's own inputs
            (robust, one run over the data per round of layers); ``False`` fits every layer in
            one run on the unpruned model's inputs restricted to the kept channels (fast).
        input_shapes: whole input shapes (``--shape``) used for MACs; by default the first
            calibration sample's shapes, else the model's static dims.
        seed: seed of the re-fit's position sampling.
        sensitivity_samples: calibration samples run for each sensitivity probe (the first ones).
        sensitivity_levels: steps each group's removal is cut into (one step per probe).
        sensitivity_fill: how probed consumers stand in for removed inputs, ``mean`` or
            ``linear`` (see :mod:`passes.prune._sensitivity`); ``None``: ``linear`` when a
            re-fit follows, else ``mean``.
    """

    ratio: float = 0.3
    criterion: str | None = None
    per_layer: bool = False
    allocation: str | None = None
    round_to: int = 8
    exclude_nodes: tuple[str, ...] = ()
    reconstruct: bool | None = None
    max_ratio: float = 0.9
    calib_samples: int = 64
    refit_rows: int = 1024
    ridge: float = 1e-3
    sequential_refit: bool = True
    input_shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    seed: int = 0
    sensitivity_samples: int = 4
    sensitivity_levels: int = 4
    sensitivity_fill: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.ratio < 1.0, f"ratio must be in [0, 1), got {self.ratio}"),
            (self.criterion in (None, *CRITERIA), f"criterion must be one of {', '.join(CRITERIA)}, got '{self.criterion}'"),
            (self.round_to >= 1, f"round_to must be at least 1, got {self.round_to}"),
            (0.0 < self.max_ratio <= 1.0, f"max_ratio must be in (0, 1], got {self.max_ratio}"),
            (self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}"),
            (self.refit_rows >= 1, f"refit_rows must be at least 1, got {self.refit_rows}"),
            (self.ridge >= 0.0, f"ridge must be >= 0, got {self.ridge}"),
            (self.allocation in (None, *ALLOCATIONS),
             f"allocation must be one of {', '.join(ALLOCATIONS)}, got '{self.allocation}'"),
            (not self.per_layer or self.allocation in (None, "uniform"),
             f"per_layer means the uniform allocation, not '{self.allocation}'"),
            (self.sensitivity_samples >= 1, f"sensitivity_samples must be at least 1, got {self.sensitivity_samples}"),
            (self.sensitivity_fill in (None, "mean", "linear"),
             f"sensitivity_fill must be mean or linear, got '{self.sensitivity_fill}'"),
            (self.sensitivity_levels >= 1, f"sensitivity_levels must be at least 1, got {self.sensitivity_levels}"),
        ]
        for ok, message in checks:
            if not ok:
                raise OnnxSlimError(message)
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        object.__setattr__(self, "input_shapes", {k: tuple(int(d) for d in v) for k, v in self.input_shapes.items()})

    def criterion_for(self, with_data: bool) -> str:
        """The criterion used: :attr:`criterion`, or its default with or without calibration data."""
        if self.criterion is not None:
            return self.criterion
        return "activation" if with_data else "l1"

    def allocation_for(self, with_data: bool) -> str:
        """The allocation used: :attr:`allocation`, or its default with or without calibration data."""
        if self.allocation is not None:
            return self.allocation
        if self.per_layer:
            return "uniform"
        return "sensitivity" if with_data else "global"
