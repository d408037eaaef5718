"""The vocabulary of channel-dependency analysis: spaces, index mappings, couplings, freezes.

A *channel space* is one axis of one tensor, e.g. the output of a Conv on axis 1 or its weight
on axis 0. A *coupling* says that index ``i`` of space ``a`` and the indices
``offset + i·stride + j`` (``0 <= j < block``) of space ``b`` must be removed together:

- identity (``offset 0, stride 1, block 1``): element-wise ops, Conv ``W[0] ~ Y[1]``;
- offset (``offset o``): input ``k`` of a Concat sits at ``o = Σ sizes before k`` of the output;
  output ``k`` of a Split (or a Slice) reads the input from ``o``;
- stride (``stride s, block s``): ``Flatten`` of ``[N, C, H, W]`` puts channel ``c`` at features
  ``c·HW … c·HW + HW − 1``; a depthwise Conv with multiplier ``m`` maps input channel ``c`` to
  outputs ``c·m … c·m + m − 1``.

Parameters (constant initializers) get one space *per use* (``user``/``slot`` name the reading
node and its input slot), so two layers that happen to read the same deduplicated initializer
are not tied together; the apply step gives each use its own copy when their slices differ.

A *freeze* marks a tensor (one axis, or every axis) that must keep all its indices, with a
reason: a graph input or output, an op without a rule, a grouped Conv, ...
A *shape edit* records a constant that encodes a channel count (a Reshape target, Split
sizes, Slice bounds, Resize sizes) and how to recompute it from the kept indices.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "ChannelSpace",
    "IndexMap",
    "IDENTITY",
    "Coupling",
    "Freeze",
    "ParamSlice",
    "Consumer",
    "ShapeEdit",
    "RuleResult",
    "ROLES",
    "MAGNITUDE_ROLES",
    "SOURCE_ROLES",
]

#: What a parameter axis is for. ``out``: output channels of a layer (a *source*: pruning
#: starts here); ``dw``: a depthwise kernel's channel axis; ``in``: input channels of a
#: consumer layer; ``bias``; ``norm_scale``/``norm_shift``/``norm_stat``: normalization
#: parameters; ``operand``: a constant operand of an element-wise op.
ROLES = ("out", "dw", "in", "bias", "norm_scale", "norm_shift", "norm_stat", "operand")
#: Roles whose magnitudes L1/L2 importance adds up (biases and statistics are left out, as in
#: Torch-Pruning's magnitude importance).
MAGNITUDE_ROLES = frozenset({"out", "dw", "in", "norm_scale"})
#: Roles that mark a group as having a layer that produces its channels.
SOURCE_ROLES = frozenset({"out"})


@dataclasses.dataclass(frozen=True)
class ChannelSpace:
    """One axis of one tensor.

    Attributes:
        tensor: the value or initializer name.
        axis: the axis (non-negative).
        size: its length.
        user: for a parameter use, the index (in ``graph.node``) of the node reading it; ``-1``
            for activations.
        slot: for a parameter use, the input slot of that node; ``-1`` for activations.
    """

    tensor: str
    axis: int
    size: int
    user: int = -1
    slot: int = -1

    @property
    def is_param(self) -> bool:
        """Whether this is an axis of a parameter (one use of a constant initializer)."""
        return self.user >= 0

    def label(self) -> str:
        """``name[axis]``, the way listings show it."""
        return f"{self.tensor}[{self.axis}]"


@dataclasses.dataclass(frozen=True)
class IndexMap:
    """Index ``i`` of one space maps to ``offset + i·stride + j`` (``0 <= j < block``) of another."""

    offset: int = 0
    stride: int = 1
    block: int = 1


IDENTITY = IndexMap()


@dataclasses.dataclass(frozen=True)
class Coupling:
    """Index ``i`` of ``a`` and the indices ``mapping(i)`` of ``b`` are removed together."""

    a: ChannelSpace
    b: ChannelSpace
    mapping: IndexMap = IDENTITY


@dataclasses.dataclass(frozen=True)
class Freeze:
    """``tensor`` keeps all its indices on ``axis`` (every axis when ``None``).

    Attributes:
        tensor: value or initializer name (a freeze of an initializer covers all its uses).
        axis: the axis, or ``None`` for all axes.
        category: the reason without names, for counters (e.g. ``"graph output"``).
        detail: the names that make the reason precise (e.g. ``"'logits'"``).
    """

    tensor: str
    axis: int | None
    category: str
    detail: str = ""

    @property
    def reason(self) -> str:
        """``category (detail)``."""
        return f"{self.category} ({self.detail})" if self.detail else self.category


@dataclasses.dataclass(frozen=True)
class ParamSlice:
    """A parameter axis in a group: which initializer, which use, which axis, what for."""

    space: ChannelSpace
    role: str
    node_name: str

    @property
    def initializer(self) -> str:
        """The initializer's name."""
        return self.space.tensor

    @property
    def axis(self) -> int:
        """The sliced axis."""
        return self.space.axis


@dataclasses.dataclass(frozen=True)
class Consumer:
    """A layer that reads a group's channels through its weights (a reconstruction target).

    ``Depthwise`` consumers read their own group's channels one by one: they have no removed
    input to compensate, but their inputs drift upstream, so they are re-fitted per channel.

    Attributes:
        node: index of the node in ``graph.node``.
        kind: ``"Conv"``, ``"Depthwise"``, ``"ConvTranspose"``, ``"Gemm"`` or ``"MatMul"``.
        data: the data input's channel space (``X[1]`` of a Conv, ``A[k]`` of a Gemm).
        weight: the weight's input-channel space.
    """

    node: int
    kind: str
    data: ChannelSpace
    weight: ChannelSpace


@dataclasses.dataclass(frozen=True)
class ShapeEdit:
    """A constant integer that encodes a channel count, and how to recompute it.

    Attributes:
        node: index of the node reading the constant.
        slot: input slot of the constant, or ``-1`` when it is the attribute ``attribute``.
        attribute: attribute name when ``slot == -1``.
        position: index inside the 1-D constant.
        kind: ``"scale"``: ``new = kept(space) · (old // space.size)``;
            ``"count_below"``: ``new = number of kept indices of space below old``;
            ``"kept"``: ``new = kept(space)``.
        space: the space whose kept indices decide the new value.
        old: the value before pruning (normalized: non-negative, clamped to the size).
    """

    node: int
    slot: int
    attribute: str
    position: int
    kind: str
    space: ChannelSpace
    old: int


@dataclasses.dataclass
class RuleResult:
    """What one op's rule says about one node (built by the rule, read by the analysis)."""

    couplings: list[Coupling] = dataclasses.field(default_factory=list)
    freezes: list[Freeze] = dataclasses.field(default_factory=list)
    params: list[ParamSlice] = dataclasses.field(default_factory=list)
    consumers: list[Consumer] = dataclasses.field(default_factory=list)
    edits: list[ShapeEdit] = dataclasses.field(default_factory=list)

    def couple(self, a: ChannelSpace | None, b: ChannelSpace | None, mapping: IndexMap = IDENTITY) -> None:
        """Couple ``a`` and ``b``; when one is unknown, freeze the other's whole tensor.

        The unknown side was already frozen by whoever found it unknown (see
        :meth:`GraphContext.need <passes.prune._context.GraphContext.need>`), so both ends of
        a coupling nobody can check end up frozen.
        """
        if a is not None and b is not None:
            self.couplings.append(Coupling(a, b, mapping))
            return
        known = a or b
        if known is not None:
            self.freeze(known.tensor, None, "shape unknown", f"a tensor coupled to '{known.tensor}' has no inferred shape")

    def freeze(self, tensor: str, axis: int | None, category: str, detail: str = "") -> None:
        """Freeze ``tensor`` on ``axis`` (all axes when ``None``)."""
        self.freezes.append(Freeze(tensor, axis, category, detail))
