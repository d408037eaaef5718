"""Channel importance, summed over the whole group, and how many channels each group keeps.

Criteria (score of channel ``u`` of a group; higher means more important):

- ``l1``: ``Σ_p Σ |w|`` over every weight slice of the group (roles ``out``, ``dw``, ``in`` and
  normalization scales; biases and running statistics are left out, as in Torch-Pruning);
- ``l2``: ``sqrt(Σ_p Σ w²)`` over the same slices (the group's L2 norm of channel ``u``);
- ``bn``: ``Σ |γ|`` over the group's normalization scales (BatchNormalization must not be folded
  yet); a group without one falls back to ``l1``;
- ``activation``: ``Σ mean|x|`` over the inputs of the layers that consume the group (per
  channel, averaged over calibration samples and every other axis); a group without measured
  consumer inputs falls back to ``l1``.

How many channels a group keeps:

- per layer: ``keep = int(n·(1 − ratio))`` (Torch-Pruning's count);
- global: scores are divided by their group's mean, the ``n_total − int(n_total·(1 − ratio))``
  lowest over all prunable groups are marked, and each group keeps the rest;
- then at least ``n·(1 − max_ratio)``, rounded to the nearest count the kernels like: a multiple
  of ``round_to`` below ``n``, or ``n`` itself (ties go to the larger count), never zero.

The channels removed are the lowest-scoring ones of each group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from passes.prune._groups import Group
from passes.prune._spaces import MAGNITUDE_ROLES

__all__ = ["CRITERIA", "group_scores", "rounded_keep", "plan_removal"]

CRITERIA = ("l1", "l2", "bn", "activation")

ActivationStats = Mapping[tuple[str, int], np.ndarray]


def _per_unit(array: np.ndarray, axis: int, indices: np.ndarray, reduce: str) -> np.ndarray:
    """``Σ |w|`` or ``Σ w²`` of each channel's slices (``indices`` is ``[size, k]``)."""
    taken = np.moveaxis(np.take(array, indices.reshape(-1), axis=axis), axis, 0).astype(np.float64)
    flat = taken.reshape(indices.size, -1)
    per_index = np.abs(flat).sum(axis=1) if reduce == "l1" else np.square(flat).sum(axis=1)
    return per_index.reshape(indices.shape).sum(axis=1)


def _magnitude(group: Group, arrays: Mapping[str, np.ndarray], reduce: str, roles: frozenset[str]) -> np.ndarray | None:
    total = np.zeros(group.size, dtype=np.float64)
    found = False
    for p in group.params:
        if p.role in roles and p.space in group.indices:
            total += _per_unit(arrays[p.initializer], p.axis, group.indices[p.space], reduce)
            found = True
    return total if found else None


def _activation(group: Group, stats: ActivationStats) -> np.ndarray | None:
    total = np.zeros(group.size, dtype=np.float64)
    found = False
    for space in dict.fromkeys(c.data for c in group.consumers if c.kind != "Depthwise"):
        per_index = stats.get((space.tensor, space.axis))
        if per_index is not None and space in group.indices:
            total += per_index[group.indices[space]].sum(axis=1)
            found = True
    return total if found else None


def group_scores(
    group: Group,
    arrays: Mapping[str, np.ndarray],
    criterion: str,
    activations: ActivationStats | None = None,
) -> tuple[np.ndarray, str | None]:
    """Importance of each channel of ``group`` and a note when ``criterion`` fell back to L1.

    Args:
        group: the group.
        arrays: initializer name -> value.
        criterion: one of :data:`CRITERIA`.
        activations: ``(tensor, axis)`` -> mean ``|x|`` per index, for ``activation``.
    """
    if criterion == "l2":
        squares = _magnitude(group, arrays, "l2", MAGNITUDE_ROLES)
        return (np.sqrt(squares) if squares is not None else np.zeros(group.size)), None
    if criterion == "bn":
        scores = _magnitude(group, arrays, "l1", frozenset({"norm_scale"}))
        if scores is not None:
            return scores, None
        note = "bn: no normalization scale in the group, used l1"
    elif criterion == "activation":
        scores = _activation(group, activations or {})
        if scores is not None:
            return scores, None
        note = "activation: no measured consumer input, used l1"
    elif criterion == "l1":
        note = None
    else:
        raise ValueError(f"unknown criterion '{criterion}' (choose from {', '.join(CRITERIA)})")
    scores = _magnitude(group, arrays, "l1", MAGNITUDE_ROLES)
    return (scores if scores is not None else np.zeros(group.size)), note


def rounded_keep(size: int, target: int, round_to: int) -> int:
    """The kept count nearest ``target``: a multiple of ``round_to`` below ``size``, or ``size``.

    Ties go to the larger count; the result is never zero.
    """
    target = min(max(target, 1), size)
    if round_to <= 1:
        return target
    candidates = list(range(round_to, size, round_to)) + [size]
    return min(candidates, key=lambda c: (abs(c - target), -c))


def _floor_keep(size: int, ratio: float) -> int:
    return int(size * (1.0 - ratio) + 1e-9)


def plan_removal(
    groups: Sequence[Group],
    scores: Mapping[int, np.ndarray],
    *,
    ratio: float,
    per_layer: bool,
    round_to: int,
    max_ratio: float,
) -> dict[int, np.ndarray]:
    """Channels to remove per prunable group id (lowest scores first), possibly empty."""
    prunable = [g for g in groups if g.prunable and g.id in scores]
    targets: dict[int, int] = {}
    if per_layer:
        targets = {g.id: _floor_keep(g.size, ratio) for g in prunable}
    elif prunable:
        normalized = []
        for g in prunable:
            mean = float(np.mean(scores[g.id]))
            normalized.append(scores[g.id] / mean if mean > 0 else np.ones(g.size))
        flat = np.concatenate(normalized)
        owner = np.repeat([g.id for g in prunable], [g.size for g in prunable])
        n_remove = len(flat) - _floor_keep(len(flat), ratio)
        marked = owner[np.argsort(flat, kind="stable")[:n_remove]]
        counts = dict(zip(*np.unique(marked, return_counts=True))) if n_remove > 0 else {}
        targets = {g.id: g.size - int(counts.get(g.id, 0)) for g in prunable}
    removal: dict[int, np.ndarray] = {}
    for g in prunable:
        floor = math.ceil(g.size * (1.0 - max_ratio) - 1e-9)
        keep = rounded_keep(g.size, max(targets[g.id], floor), round_to)
        order = np.argsort(scores[g.id], kind="stable")
        removal[g.id] = np.sort(order[: g.size - keep])
    return removal
