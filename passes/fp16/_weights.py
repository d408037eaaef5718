"""Weights-only mode: float32 weights stored as float16, each cast back to float32 once.

For every float32 initializer (not listed as a graph input, so not overridable) and every
``Constant`` node holding a float32 tensor, in every scope, with at least ``min_elements``
elements and every finite value within ±65504:

    W (float32)  ->  W_fp16 (float16 initializer or Constant) -> Cast(to=FLOAT) -> W

The Cast's output keeps the original name, so no reader changes and compute stays float32.
onnxruntime folds these Casts into float32 initializers when the session is created (constant
folding, graph optimization level basic and above), so the file halves and latency does not move.
Smaller tensors (scalars, Resize scales, clip bounds) are left as they are: they weigh nothing
and some readers want them constant. Values that do not fit are kept float32 and reported.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import onnx
from onnx import helper, numpy_helper

from passes._graph import NameAllocator, is_onnx_domain
from passes.fp16._facts import (
    FLOAT,
    FP16_MAX,
    LossCounts,
    constant_attr_value,
    insert_after_sources,
    to_fp16,
    walk_graphs,
)

__all__ = ["WeightsResult", "store_weights_fp16"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class WeightsResult:
    """Counters of one weights-only conversion."""

    weights_converted: int = 0
    casts_inserted: int = 0
    skipped_small: int = 0
    skipped_overridable: int = 0
    out_of_range: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    losses: LossCounts = dataclasses.field(default_factory=LossCounts)

    @property
    def changed(self) -> bool:
        return self.weights_converted > 0


def _convertible(name: str, kind: str, array: Any, min_elements: int, result: WeightsResult) -> bool:
    if array.size < min_elements:
        result.skipped_small += 1
        return False
    finite = abs(array[abs(array) < float("inf")]) if array.size else array
    peak = float(finite.max()) if finite.size else 0.0
    if peak > FP16_MAX:
        result.out_of_range.append({"tensor": name, "kind": kind, "max_abs": peak})
        log.debug("weight %s kept float32: max |x| %.3g > 65504", name, peak)
        return False
    return True


def _cast(alloc: NameAllocator, source: str, target: str, result: WeightsResult) -> onnx.NodeProto:
    result.casts_inserted += 1
    return helper.make_node("Cast", [source], [target], name=alloc.fresh(f"{target}_cast_fp32"), to=FLOAT)


def _graph_weights(graph: onnx.GraphProto, alloc: NameAllocator, min_elements: int, result: WeightsResult) -> None:
    listed = {v.name for v in graph.input}
    casts = []
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        if init.name in listed:
            result.skipped_overridable += 1
            continue
        array = numpy_helper.to_array(init)
        if _convertible(init.name, "initializer", array, min_elements, result):
            name, stored = init.name, alloc.fresh(f"{init.name}_fp16")
            init.CopyFrom(numpy_helper.from_array(to_fp16(array, result.losses), stored))
            casts.append(_cast(alloc, stored, name, result))
            result.weights_converted += 1
    for node in graph.node:
        if node.op_type != "Constant" or not is_onnx_domain(node) or not node.output:
            continue
        array = constant_attr_value(node)
        if array is not None and _convertible(node.output[0], "Constant", array, min_elements, result):
            name, stored = node.output[0], alloc.fresh(f"{node.output[0]}_fp16")
            del node.attribute[:]
            stored_value = numpy_helper.from_array(to_fp16(array, result.losses))
            node.attribute.append(helper.make_attribute("value", stored_value))
            node.output[0] = stored
            casts.append(_cast(alloc, stored, name, result))
            result.weights_converted += 1
    if casts:
        insert_after_sources(graph, casts)


def store_weights_fp16(model: onnx.ModelProto, *, min_elements: int) -> WeightsResult:
    """Store ``model``'s float32 weights as float16 in place (see the module docstring)."""
    result = WeightsResult()
    alloc = NameAllocator(model.graph)
    # Innermost graphs first: sorting a graph rebuilds its nodes (copies), which would detach
    # references to the subgraphs inside them.
    for graph in reversed(list(walk_graphs(model.graph))):
        _graph_weights(graph, alloc, min_elements, result)
    return result
