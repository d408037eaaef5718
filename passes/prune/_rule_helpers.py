"""Helpers the channel rules share: freezing a node, registering parameters, identity couplings."""

from __future__ import annotations

from passes.prune._context import GraphContext
from passes.prune._spaces import ChannelSpace, ParamSlice, RuleResult

__all__ = ["freeze_node", "param_space", "input_space", "couple_identity"]


def freeze_node(ctx: GraphContext, index: int, category: str, detail: str = "") -> RuleResult:
    """Freeze every input and output of node ``index`` on every axis."""
    result = RuleResult()
    node = ctx.nodes[index]
    for name in [*node.input, *node.output]:
        if name:
            result.freeze(name, None, category, detail or f"node '{ctx.node_label(index)}'")
    return result


def param_space(ctx: GraphContext, r: RuleResult, index: int, slot: int, axis: int, role: str) -> ChannelSpace | None:
    """The space of parameter input ``slot`` on ``axis``, registered in ``r`` with ``role``."""
    space = ctx.param(index, slot, axis)
    if space is not None:
        r.params.append(ParamSlice(space, role, ctx.node_label(index)))
    return space


def input_space(ctx: GraphContext, r: RuleResult, index: int, slot: int, axis: int) -> ChannelSpace | None:
    """Input ``slot``'s space: a parameter use (role ``operand``) when it is a constant, else an activation."""
    if ctx.is_param(ctx.nodes[index].input[slot]):
        return param_space(ctx, r, index, slot, axis, "operand")
    return ctx.act(ctx.nodes[index].input[slot], axis)


def couple_identity(ctx: GraphContext, r: RuleResult, index: int, slot: int, axis: int, y: str, y_axis: int) -> None:
    """Couple input ``slot`` on ``axis`` with ``y`` on ``y_axis``; freeze both unless sizes are known and equal."""
    a, b = input_space(ctx, r, index, slot, axis), ctx.act(y, y_axis)
    if a is not None and b is not None and a.size == b.size:
        r.couple(a, b)
    elif a is not None or b is not None:
        r.freeze(ctx.nodes[index].input[slot], axis, "shape unknown", f"'{ctx.node_label(index)}'")
        r.freeze(y, y_axis, "shape unknown", f"'{ctx.node_label(index)}'")
