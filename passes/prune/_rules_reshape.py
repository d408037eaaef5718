"""Channel rules of the ops that re-view axes: Reshape (constant target), Flatten, Squeeze, Unsqueeze.

Axes are aligned by their products (from the left, then from the right): an axis kept as is
couples by identity; when several input axes merge into one output axis
(``[N, C, H, W] → [N, C·H·W]``) the outermost couples by a *stride mapping* (channel ``c`` owns
features ``c·HW … c·HW + HW − 1``), and when an axis is split, the reverse; inner merged axes
and anything that cannot be aligned are frozen. A positive Reshape target entry of a coupled
axis is rewritten after pruning; ``0`` (copy) and ``-1`` (inferred) need nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx

from passes.prune._context import GraphContext
from passes.prune._rule_helpers import freeze_node
from passes.prune._spaces import IndexMap, RuleResult, ShapeEdit

__all__ = ["RESHAPE_RULES", "align_axes"]

Sym = int | str | None  # a known size, a symbol shared by equal unknown dims, or unknown


def _symbols(dims: Sequence[int | None]) -> list[Sym]:
    return [d if d is not None else f"s{k}" for k, d in enumerate(dims)]


def _take_group(src: list[Sym], dst: list[Sym], i: int, j: int, step: int) -> tuple[list[int], list[int]] | None:
    """One aligned group starting at ``src[i]``/``dst[j]`` walking by ``step`` (+1 or −1)."""
    a, b = src[i], dst[j]
    if not isinstance(a, int) or not isinstance(b, int):
        return ([i], [j]) if a is not None and a == b else None
    gi, gj, pa, pb = [i], [j], a, b
    while pa != pb:
        if pa < pb:
            i += step
            if not 0 <= i < len(src) or not isinstance(src[i], int):
                return None
            pa, gi = pa * src[i], gi + [i]
        else:
            j += step
            if not 0 <= j < len(dst) or not isinstance(dst[j], int):
                return None
            pb, gj = pb * dst[j], gj + [j]
    return gi, gj


def align_axes(src: list[Sym], dst: list[Sym]) -> tuple[list[tuple[list[int], list[int]]], set[int], set[int]]:
    """Align the axes of a reshape from ``src`` to ``dst`` dims.

    Returns the aligned groups (input axes, output axes, each in order) found from the left and
    from the right, plus the input and output axes nobody could align.
    """
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        group = _take_group(src, dst, i, j, 1)
        if group is None:
            break
        groups.append(group)
        i, j = group[0][-1] + 1, group[1][-1] + 1
    ti, tj = len(src) - 1, len(dst) - 1
    while ti >= i and tj >= j:
        group = _take_group(src, dst, ti, tj, -1)
        if group is None or min(group[0]) < i or min(group[1]) < j:
            break
        groups.append((sorted(group[0]), sorted(group[1])))
        ti, tj = min(group[0]) - 1, min(group[1]) - 1
    left_in = {k for k in range(i, ti + 1) if src[k] != 1}
    left_out = {k for k in range(j, tj + 1) if dst[k] != 1}
    return groups, left_in, left_out


def _resolve_target(src: list[Sym], target: list[int], allow_zero: bool) -> list[Sym] | None:
    """Target dims as symbols: ``0`` copies the input dim, ``-1`` is inferred when possible."""
    if allow_zero and 0 in target:
        return None
    out: list[Sym] = [src[j] if t == 0 and j < len(src) else (t if t > 0 else None) for j, t in enumerate(target)]
    if None in out:
        left = Counter(s for s in src if isinstance(s, str))
        left.subtract(s for s in out if isinstance(s, str))
        known_in = math.prod(s for s in src if isinstance(s, int))
        known_out = math.prod(s for s in out if isinstance(s, int))
        if all(v == 0 for v in left.values()) and known_out and known_in % known_out == 0:
            out[out.index(None)] = known_in // known_out
    return out


def _couple_aligned(
    ctx: GraphContext, r: RuleResult, i: int, x: str, y: str, src: list[Sym], dst: list[Sym],
    target_slot: int = -1, target: Sequence[int] = (),
) -> RuleResult:
    groups, left_in, left_out = align_axes(src, dst)
    label = f"'{ctx.node_label(i)}'"
    for k in left_in:
        r.freeze(x, k, "axes merged or split by a reshape", label)
    for k in left_out:
        r.freeze(y, k, "axes merged or split by a reshape", label)
    for gi, gj in groups:
        gi = [k for k in gi if src[k] != 1]
        gj = [k for k in gj if dst[k] != 1]
        if not gi or not gj:
            continue
        for k in gi[1:]:
            r.freeze(x, k, "axes merged or split by a reshape", label)
        for k in gj[1:]:
            r.freeze(y, k, "axes merged or split by a reshape", label)
        a, b = ctx.act(x, gi[0]), ctx.act(y, gj[0])
        if a is None or b is None:
            continue
        if a.size == b.size:
            r.couple(a, b)
        elif b.size % a.size == 0:
            k = b.size // a.size
            r.couple(a, b, IndexMap(0, k, k))
        elif a.size % b.size == 0:
            k = a.size // b.size
            r.couple(b, a, IndexMap(0, k, k))
        else:
            r.freeze(x, gi[0], "axes merged or split by a reshape", label)
            r.freeze(y, gj[0], "axes merged or split by a reshape", label)
            continue
        if target_slot >= 0 and gj[0] < len(target) and target[gj[0]] > 0:
            r.edits.append(ShapeEdit(i, target_slot, "", gj[0], "kept", b, int(target[gj[0]])))
    return r


def _reshape(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    target_value = ctx.const(node.input[1]) if len(node.input) > 1 else None
    if target_value is None or x not in ctx.dims:
        return freeze_node(ctx, i, "Reshape target computed in the graph" if x in ctx.dims else "shape unknown")
    target = [int(v) for v in np.asarray(target_value).reshape(-1)]
    src = _symbols(ctx.dims[x])
    dst = _resolve_target(src, target, bool(ctx.attr(node, "allowzero", 0)))
    if dst is None:
        return freeze_node(ctx, i, "Reshape with allowzero")
    return _couple_aligned(ctx, RuleResult(), i, x, y, src, dst, target_slot=1, target=target)


def _flatten(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    if x not in ctx.dims:
        return freeze_node(ctx, i, "shape unknown")
    src = _symbols(ctx.dims[x])
    axis = int(ctx.attr(node, "axis", 1)) % (len(src) + 1) if src else 0

    def product(part: list[Sym]) -> Sym:
        if len(part) == 1:
            return part[0]
        return math.prod(part) if all(isinstance(s, int) for s in part) else None

    dst = [product(src[:axis]) if axis else 1, product(src[axis:]) if axis < len(src) else 1]
    return _couple_aligned(ctx, RuleResult(), i, x, y, src, dst)


def _squeeze_like(ctx: GraphContext, i: int, node: onnx.NodeProto) -> RuleResult:
    x, y = node.input[0], node.output[0]
    if x not in ctx.dims or y not in ctx.dims:
        return freeze_node(ctx, i, "shape unknown")
    src, dst = _symbols(ctx.dims[x]), _symbols(ctx.dims[y])
    return _couple_aligned(ctx, RuleResult(), i, x, y, src, dst)


RESHAPE_RULES = {"Reshape": _reshape, "Flatten": _flatten, "Squeeze": _squeeze_like, "Unsqueeze": _squeeze_like}
