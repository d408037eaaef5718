"""Structured channel pruning on ONNX graphs: physically smaller layers, same interface.

Rewrite: for each channel *group* (output channels of a layer plus everything that must shrink
with them: its bias, normalization, depthwise convs, element-wise partners, the input channels of
the layers reading them, Concat/Split segments, flattened features), remove the channels with the
lowest importance::

    W_prod[kept, …], B[kept], BN[kept], W_dw[kept, …], W_cons[:, kept, …]   (no masks)

and rewrite the constants that encode channel counts (Reshape targets, Split sizes, Slice bounds,
Resize sizes, a depthwise Conv's ``group``). With calibration data, each layer that lost inputs
gets ``b += Σ_removed W[:, f]·mean(x_f)`` and, with ``reconstruct``, a least-squares re-fit of
its weights and bias to the unpruned model's outputs.

How many channels each group loses (``allocation``): a global ranking or the same share of
every group (``ratio`` of the channels), or, with calibration data, ``sensitivity``: ``ratio``
of the model's MACs, removed step by step where the measured output damage per MAC saved is
least.

Modules: ``_spaces`` (vocabulary), ``_context``/``_rules``/``_rules_shape`` (the per-op rule
table), ``_groups`` (union-find, groups, freezing), ``_importance`` (scores, counts),
``_sensitivity``/``_allocate`` (probing groups on calibration data, spending a MAC budget),
``_apply`` (slicing), ``_collect``/``_layers``/``_reconstruct`` (calibration statistics and
repair), ``_cost`` (params, MACs), ``_report`` (dry-run listing), ``_prune`` (the flow).

The pass is lossy by design: its :attr:`PruneChannelsPass.tolerance` only asks that outputs stay
finite where the input model's are and keep their names and shapes (cosine ≥ −1); fidelity is
measured with ``--eval`` on real data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np
import onnx

from passes._base import STRUCTURAL, Pass, PassResult, RunContext
from passes._errors import PreconditionError
from passes.prune._collect import Samples
from passes.prune._groups import Group
from passes.prune._importance import CRITERIA
from passes.prune._options import PruneOptions
from passes.prune._prune import plan_pruning, prune_model
from passes.prune._report import Analysis, GroupSummary, render_stats, summarize_group
from passes.prune._rules import CHANNEL_RULES
from passes.prune._spaces import ChannelSpace, IndexMap, ParamSlice

__all__ = [
    "STRUCTURAL",
    "CRITERIA",
    "CHANNEL_RULES",
    "PruneOptions",
    "PruneChannelsPass",
    "Analysis",
    "GroupSummary",
    "Group",
    "ChannelSpace",
    "IndexMap",
    "ParamSlice",
    "analyze",
    "prune_model",
    "render_stats",
]



def _check(options: PruneOptions, dataset: object) -> None:
    if dataset is None and options.criterion == "activation":
        raise PreconditionError("criterion 'activation' needs calibration data (--calib)")
    if dataset is None and options.allocation == "sensitivity":
        raise PreconditionError("the sensitivity allocation needs calibration data (--calib)")
    if dataset is None and options.reconstruct:
        raise PreconditionError("reconstruction needs calibration data (--calib)")


def analyze(
    model: onnx.ModelProto,
    options: PruneOptions | None = None,
    *,
    dataset: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> Analysis:
    """List the channel groups of ``model`` and what ``options`` would remove; ``model`` is not changed.

    Raises:
        PreconditionError: the criterion needs calibration data and none was given.
    """
    options = options or PruneOptions()
    _check(options, dataset)
    samples = Samples(dataset, options.calib_samples) if dataset is not None else None
    plan = plan_pruning(model, options, samples)
    groups = tuple(
        summarize_group(g, plan.scores.get(g.id), len(plan.removal.get(g.id, ()))) for g in plan.groups.groups
    )
    return Analysis(groups, plan.groups.ignored, plan.criterion, options.ratio,
                    tuple(f"{k} ({v} groups)" for k, v in sorted(plan.notes.items())), plan.allocation)


class PruneChannelsPass(Pass):
    """Remove the least important channels of every prunable group (see the module docstring)."""

    name: ClassVar[str] = "prune"
    tolerance = STRUCTURAL

    def __init__(self, options: PruneOptions | None = None) -> None:
        self.options = options or PruneOptions()

    def __repr__(self) -> str:
        return f"PruneChannelsPass({self.options})"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Prune a copy of ``model`` using ``ctx.dataset`` as calibration data when given.

        Raises:
            PreconditionError: the options need calibration data and ``ctx.dataset`` is ``None``.
        """
        _check(self.options, ctx.dataset)
        pruned, changed, stats = prune_model(model, self.options, dataset=ctx.dataset, progress=ctx.progress)
        ctx.logger.debug("prune: %s", {k: v for k, v in stats.items() if k != "groups"})
        return PassResult(pruned, changed, stats)

