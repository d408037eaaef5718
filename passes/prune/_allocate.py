"""Sensitivity-aware allocation: how many channels each group keeps, for a MAC budget.

Each prunable group may keep one of its *options*: its full size, or a multiple of
``round_to`` below it that keeps at least ``n·(1 − max_ratio)`` channels. Its MACs follow from
the kept fraction of every weight it touches (:func:`~passes.prune._cost.kept_fractions`),
multiplied with the other groups' fractions on layers that two groups shrink (a Conv's inputs
and outputs). A group's removal grows by *steps* of ``1/levels`` of its options.

The budget is ``MACs ≤ (1 − ratio)·MACs(full)``, spent greedily one step at a time: the step
taken is the one that adds the least output noise (a ``measure`` callback, see
:class:`~passes.prune._sensitivity.Meter`) per MAC saved, measured *on top of every step already
taken*, because the damage of removing channels in several groups compounds (on ppocr-cls,
groups that cost 22–50 dB of output SQNR each alone gave 2.4 dB together, where the sum of
their noise predicted 16 dB). Measuring every group after every step would cost
``groups × steps`` runs, so the search is *lazy*: each group keeps the cost last measured for
its next step; the cheapest is measured again on the current removal and taken if it is still
no dearer than the next one's last cost, else put back with its new cost. Damage only grows
as channels go, so a stale cost is a fair lower bound and few re-measurements are needed. The
last move is cut to the smallest one that reaches the budget.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from passes.prune._cost import kept_fractions
from passes.prune._groups import Group

__all__ = ["Allocation", "keep_options", "allocate"]

Removal = Sequence[tuple[Group, np.ndarray]]


def keep_options(size: int, round_to: int, max_ratio: float) -> list[int]:
    """Kept counts a group may take, largest first: ``size``, then multiples of ``round_to``."""
    floor = max(1, math.ceil(size * (1.0 - max_ratio) - 1e-9))
    step = max(1, round_to)
    return [size] + [k for k in range((size - 1) // step * step, 0, -step) if k >= floor]


@dataclasses.dataclass(frozen=True)
class Allocation:
    """The chosen kept count per group, and what it gives.

    Attributes:
        keep: group id -> kept channels (groups that were candidates).
        macs_before: MACs of the model.
        macs_after: MACs with these counts.
        noise: measured output noise-to-signal ratio with mean compensation only.
        probes: number of measurements made.
        budget_met: whether ``macs_after`` reached the budget (else every candidate group is at
            its smallest option).
    """

    keep: Mapping[int, int]
    macs_before: int
    macs_after: int
    noise: float
    probes: int
    budget_met: bool


class _Curve:
    """One group's options and the kept fraction of each MAC-counted weight use per option."""

    def __init__(self, group: Group, order: np.ndarray, options: list[int], macs: Mapping[int, int],
                 levels: int) -> None:
        self.group, self.order, self.options = group, order, options
        per_option = [kept_fractions(group, self.removed(k)) for k in range(len(options))]
        self.nodes = sorted({u for f in per_option for u in f if u[1] == 1 and macs.get(u[0])})
        self.fraction = np.array([[f.get(u, 1.0) for u in self.nodes] for f in per_option]).reshape(len(options), -1)
        self.stride = max(1, math.ceil((len(options) - 1) / levels))
        self.at = 0

    def removed(self, k: int) -> np.ndarray:
        """Channels removed at option ``k`` (lowest scores first)."""
        return np.sort(self.order[: self.group.size - self.options[k]])

    def next(self) -> int | None:
        return min(self.at + self.stride, len(self.options) - 1) if self.at + 1 < len(self.options) else None


def allocate(
    groups: Sequence[Group],
    orders: Mapping[int, np.ndarray],
    macs: Mapping[int, int | None],
    measure: Callable[[Removal], float],
    *,
    ratio: float,
    round_to: int,
    max_ratio: float,
    levels: int = 4,
) -> Allocation:
    """Kept count per candidate group so that MACs drop by ``ratio`` with little added noise.

    Args:
        groups: candidate groups (those in ``orders``; others keep every channel).
        orders: group id -> channel order, lowest score first (removed in that order).
        macs: MACs per node index (``None`` values are not counted).
        measure: noise of a removal (a list of ``(group, removed channels)``); lower is better.
        ratio: share of the model's MACs to remove.
        round_to: kept counts are multiples of this (or the full size).
        max_ratio: no group loses more than this share of its channels.
        levels: steps a group's options are cut into (its removal grows by one step at a time).
    """
    known = {k: int(v) for k, v in macs.items() if v}
    total = float(sum(known.values()))
    curves = [_Curve(g, orders[g.id], keep_options(g.size, round_to, max_ratio), known, levels)
              for g in groups if g.id in orders]
    curves = [c for c in curves if len(c.options) > 1 and c.nodes]
    product = {n: 1.0 for c in curves for n in c.nodes}
    current, target, noise, probes, version = total, total * (1.0 - ratio), 0.0, 0, 0
    heap: list[tuple[float, int, int]] = []  # (cost, curve index, version it was measured at)
    for k in range(len(curves)):
        heapq.heappush(heap, (-math.inf, k, -1))  # never measured: measure first
    while heap and current > target + 0.5:
        _, k, seen = heapq.heappop(heap)
        c = curves[k]
        j = c.next()
        if j is None:
            continue
        saved = _saved(c, j, product, known)
        if saved <= 0:
            continue
        j = next((i for i in range(c.at + 1, j) if _saved(c, i, product, known) >= current - target), j)
        saved = _saved(c, j, product, known)  # the smallest move that finishes, when one does
        trial = measure([*_removal(curves, skip=c), (c.group, c.removed(j))])
        probes += 1
        cost = (trial - noise) / saved
        if seen != version and heap and cost > heap[0][0]:
            heapq.heappush(heap, (cost, k, version))  # dearer than the next one now: measure that
            continue
        for n, fi, fj in zip(c.nodes, c.fraction[c.at], c.fraction[j]):
            product[n] *= fj / fi
        c.at, current, noise, version = j, current - saved, trial, version + 1
        heapq.heappush(heap, (cost, k, -1))
    keep = {c.group.id: c.options[c.at] for c in curves}
    return Allocation(keep, int(total), int(round(current)), noise, probes, current <= target + 0.5)


def _saved(c: _Curve, j: int, product: Mapping[tuple[int, int], float], macs: Mapping[int, int]) -> float:
    """MACs saved by moving ``c`` to option ``j``, the other groups as they are."""
    base = np.array([macs[n[0]] * product[n] for n in c.nodes])
    return float(((c.fraction[c.at] - c.fraction[j]) / c.fraction[c.at]) @ base)


def _removal(curves: Sequence[_Curve], skip: _Curve | None = None) -> list[tuple[Group, np.ndarray]]:
    return [(c.group, c.removed(c.at)) for c in curves if c.at and c is not skip]
