"""``onnxslim prune --dry-run``: the groups, their sizes, importance, planned cut and frozen reasons.

Data first (:class:`Analysis` with :meth:`Analysis.to_dict`), rendered as Markdown by
:meth:`Analysis.render`; :func:`render_stats` renders the per-group table a pruning run leaves
in its ``stats``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from passes._text import markdown_table
from passes.prune._groups import Group

__all__ = ["GroupSummary", "Analysis", "summarize_group", "render_stats"]


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """One group as listed.

    Attributes:
        id: the group's number.
        channels: its size.
        keep: planned channel count (``None`` when frozen).
        producers: nodes whose output channels these are.
        consumers: nodes that read them through weights.
        others: other nodes with parameters in the group (depthwise, normalization, ...).
        spaces: number of tensor axes the group spans.
        importance: ``(min, median, max)`` of the channel scores (``None`` when frozen).
        frozen: why it may not be pruned, or ``None``.
        reasons: every reason.
    """

    id: int
    channels: int
    keep: int | None
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    others: tuple[str, ...]
    spaces: int
    importance: tuple[float, float, float] | None
    frozen: str | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def summarize_group(group: Group, scores: np.ndarray | None, removed: int) -> GroupSummary:
    """The listing row of ``group`` given its scores and the number of channels to remove."""
    importance = None
    if scores is not None and len(scores):
        importance = (float(np.min(scores)), float(np.median(scores)), float(np.max(scores)))
    producers, consumers = group.nodes("out"), group.nodes("in")
    others = [n for n in group.nodes("dw", "norm_scale", "norm_shift", "norm_stat", "operand", "bias")
              if n not in producers and n not in consumers]
    return GroupSummary(
        id=group.id, channels=group.size, keep=None if group.frozen else group.size - removed,
        producers=tuple(producers), consumers=tuple(consumers), others=tuple(others),
        spaces=len(group.spaces), importance=importance, frozen=group.frozen, reasons=group.reasons,
    )


@dataclasses.dataclass(frozen=True)
class Analysis:
    """The dry-run result.

    Attributes:
        groups: every channel group, in graph order.
        ignored: coupled index sets that hold no parameter (spatial axes, shape vectors).
        criterion: the importance criterion used.
        ratio: the ratio the plan was made for.
        notes: fallbacks and other remarks.
        allocation: how the counts were chosen (``global``, ``uniform`` or ``sensitivity``).
    """

    groups: tuple[GroupSummary, ...]
    ignored: int
    criterion: str
    ratio: float
    notes: tuple[str, ...] = ()
    allocation: str = "global"

    @property
    def prunable(self) -> list[GroupSummary]:
        """Groups that may lose channels."""
        return [g for g in self.groups if g.frozen is None]

    def frozen_reasons(self) -> Counter[str]:
        """Number of frozen groups per first reason."""
        return Counter(g.frozen.split(" (")[0] for g in self.groups if g.frozen is not None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "criterion": self.criterion,
            "ratio": self.ratio,
            "allocation": self.allocation,
            "groups_total": len(self.groups),
            "groups_prunable": len(self.prunable),
            "groups_frozen": len(self.groups) - len(self.prunable),
            "frozen_reasons": dict(self.frozen_reasons()),
            "ignored_index_sets": self.ignored,
            "notes": list(self.notes),
            "groups": [g.to_dict() for g in self.groups],
        }

    def render(self) -> str:
        """Markdown: a summary line, the prunable groups, the frozen groups with reasons."""
        prunable = self.prunable
        channels = sum(g.channels for g in prunable)
        kept = sum(g.keep or 0 for g in prunable)
        lines = [
            f"{len(self.groups)} channel groups: {len(prunable)} prunable ({channels:,} channels, "
            f"{kept:,} kept at ratio {self.ratio:g} of the {_BUDGET[self.allocation]}, {self.allocation} allocation, "
            f"criterion {self.criterion}), "
            f"{len(self.groups) - len(prunable)} frozen.",
            "",
        ]
        rows = [[g.id, g.channels, g.keep, ", ".join(g.producers) or "-", ", ".join(g.consumers) or "-",
                 "/".join(f"{v:.3g}" for v in g.importance) if g.importance else "-"] for g in prunable]
        lines += [markdown_table(["group", "channels", "keep", "produced by", "read by", "importance min/median/max"], rows), ""]
        frozen = [[g.id, g.channels, ", ".join(g.producers) or "-", g.frozen] for g in self.groups if g.frozen]
        if frozen:
            lines += ["Frozen groups:", "", markdown_table(["group", "channels", "produced by", "reason"], frozen), ""]
        counts = self.frozen_reasons()
        if counts:
            lines.append("Frozen by reason: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


#: What ``ratio`` is a share of, per allocation.
_BUDGET = {"global": "channels", "uniform": "channels of each group", "sensitivity": "MACs"}


#: Below this measured output SQNR (dB) the report warns that accuracy is likely lost. A rule of
#: thumb, not a promise: on the zoo, pruned models at 19 dB lost most of a detector's mAP while
#: classifiers kept theirs at lower figures; the task metric (--eval) is the judge.
FIDELITY_WARN_DB = 20.0


def render_stats(stats: Mapping[str, Any]) -> str:
    """Markdown of a pruning run's ``stats``: per-group and total params/MACs before and after."""
    rows = [[r["id"], f"{r['channels_before']} → {r['channels_after']}", ", ".join(r["producers"]) or "-",
             f"{_count(r['params_before'])} → {_count(r['params_after'])}",
             f"{_count(r['macs_before'])} → {_count(r['macs_after'])}"]
            for r in stats.get("groups", []) if r["channels_after"] != r["channels_before"]]
    rows.append(["total", f"{_count(stats.get('channels_before'))} → {_count(stats.get('channels_after'))}", "",
                 f"{_count(stats.get('params_before'))} → {_count(stats.get('params_after'))}",
                 f"{_count(stats.get('macs_before'))} → {_count(stats.get('macs_after'))}"])
    header = ["group", "channels", "produced by", "params (tensors it slices)", "MACs (layers it touches)"]
    table = markdown_table(header, rows)
    note = "Per-group figures count only what the group touches, with only that group pruned; the totals are recounted."
    if stats.get("allocation") == "sensitivity":
        note += f"\nSensitivity allocation: {stats.get('sensitivity_probes')} probes."
    measured = stats.get("output_sqnr_db")
    if measured is not None:
        note += (f"\nFidelity of the pruned model, measured on {stats.get('fidelity_samples')} calibration samples "
                 f"(after the re-fit): output SQNR {measured} dB against the unpruned model.")
        if measured < FIDELITY_WARN_DB:
            note += (f"\nWARNING: below {FIDELITY_WARN_DB:g} dB the pruned model is likely to lose task accuracy: "
                     "check it with --eval, or let --search (with --eval and --max-drop) find a ratio that holds.")
        if stats.get("sensitivity_budget_met") is False:
            note += ("\nThe MAC budget was not reached: every group that may shrink is at its smallest count "
                     "(--round-to, frozen groups and the 90 % per-group cap limit it).")
    return f"{table}\n\n{note}\n"
