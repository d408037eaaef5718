"""What every channel rule may ask about the graph: shapes, constants, attributes, spaces.

Shapes come from ``onnx.shape_inference`` (with data propagation) on a copy of the model whose
dynamic input dims are fixed when the caller knows them; a dim nobody could infer is ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx.version_converter
from onnx import helper

from passes._graph import GraphIndex, opset_version
from passes.prune._spaces import ChannelSpace, RuleResult

__all__ = ["Dims", "infer_dims", "GraphContext"]

log = logging.getLogger(__name__)

Dims = tuple[int | None, ...]


def _dims_of(value: onnx.ValueInfoProto) -> Dims | None:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
    )


def infer_dims(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Dims]:
    """Dims of every value and initializer of the main graph (``None`` for an unknown dim).

    Args:
        model: the model (not modified).
        shapes: whole shapes of some graph inputs, used to fix their dynamic dims first.
    """
    light = onnx.ModelProto()
    light.CopyFrom(model)
    del light.graph.value_info[:]  # exporters write stale or -1 dims there; infer afresh
    for value in light.graph.input:
        if value.name in (shapes or {}):
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    table = _inferred(light)
    if (opset_version(light) or 14) < 14:
        # Before opset 14 shape inference ignores Reshape targets computed in the graph; the
        # same model converted to opset 14 (same semantics) fills in what it can.
        try:
            upgraded = onnx.version_converter.convert_version(light, 14)
        except Exception as err:  # conversion is best effort too
            log.debug("opset conversion for shape inference failed: %s", err)
        else:
            for name, dims in _inferred(upgraded).items():
                old = table.get(name)
                if old is None or (len(old) == len(dims) and old.count(None) > dims.count(None)):
                    table[name] = dims
    for init in model.graph.initializer:
        table[init.name] = tuple(int(d) for d in init.dims)
    return table


def _inferred(model: onnx.ModelProto) -> dict[str, Dims]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as err:  # inference is best effort: unknown dims freeze what needs them
        log.debug("shape inference failed: %s", err)
        inferred = model
    graph = inferred.graph
    table: dict[str, Dims] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = _dims_of(value)
        if dims is not None:
            table[value.name] = dims
    return table


class GraphContext:
    """Read-only facts about one graph for the channel rules."""

    def __init__(self, model: onnx.ModelProto, dims: Mapping[str, Dims]) -> None:
        self.model = model
        self.graph = model.graph
        self.index = GraphIndex.build(model.graph)
        self.dims = dict(dims)
        self.opset = opset_version(model) or 1
        self.nodes = list(model.graph.node)
        self._consts: dict[str, np.ndarray | None] = {}

    # ------------------------------------------------------------------------- values

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is a constant (initializer not overridable, Constant)."""
        if not name:
            return None
        if name not in self._consts:
            self._consts[name] = self.index.constant(name)
        return self._consts[name]

    def is_param(self, name: str) -> bool:
        """Whether ``name`` is a constant initializer (a parameter that can be sliced)."""
        return bool(name) and name in self.index.initializers and name not in self.index.overridable

    def rank(self, name: str) -> int | None:
        """Rank of ``name`` when known."""
        dims = self.dims.get(name)
        return None if dims is None else len(dims)

    def dim(self, name: str, axis: int) -> int | None:
        """Size of ``name`` on ``axis`` when known (negative axes count from the end)."""
        dims = self.dims.get(name)
        if dims is None or not -len(dims) <= axis < len(dims):
            return None
        return dims[axis]

    def act(self, name: str, axis: int) -> ChannelSpace | None:
        """The activation space ``name[axis]``, or ``None`` when its size is unknown."""
        rank = self.rank(name)
        if rank is None or not -rank <= axis < rank:
            return None
        axis %= rank
        size = self.dims[name][axis]
        return None if size is None else ChannelSpace(name, axis, size)

    def need(self, result: RuleResult, name: str, axis: int) -> ChannelSpace | None:
        """Like :meth:`act`, but an unknown size freezes the whole tensor in ``result``."""
        space = self.act(name, axis)
        if space is None:
            result.freeze(name, None, "shape unknown", f"'{name}' has no inferred size on axis {axis}")
        return space

    def param(self, node: int, slot: int, axis: int) -> ChannelSpace | None:
        """The space of the parameter read by ``node`` at input ``slot`` on ``axis``."""
        name = self.nodes[node].input[slot] if slot < len(self.nodes[node].input) else ""
        value = self.const(name)
        if value is None or not -value.ndim <= axis < value.ndim:
            return None
        axis %= value.ndim
        return ChannelSpace(name, axis, int(value.shape[axis]), user=node, slot=slot)

    # ------------------------------------------------------------------------- attributes

    @staticmethod
    def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
        """Attribute ``name`` of ``node`` as a Python value, or ``default``."""
        for attribute in node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default

    def ints_input_or_attr(self, node: onnx.NodeProto, slot: int, name: str) -> list[int] | None:
        """An int list given as constant input ``slot`` (newer opsets) or attribute ``name``.

        Returns ``None`` when it is given by neither, and raises ``LookupError`` when the input
        exists but is not a constant.
        """
        if slot < len(node.input) and node.input[slot]:
            value = self.const(node.input[slot])
            if value is None:
                raise LookupError(node.input[slot])
            return [int(v) for v in np.asarray(value).reshape(-1)]
        value = self.attr(node, name)
        return None if value is None else [int(v) for v in value]

    def node_label(self, index: int) -> str:
        """``'name'`` of node ``index``, or ``OpType#index`` when it has no name."""
        node = self.nodes[index]
        return node.name or f"{node.op_type}#{index}"
