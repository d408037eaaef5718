"""Pruning channels that carry nothing changes nothing: exact equivalence on every topology.

For each tiny model, every other channel of every prunable group is made dead (all its
parameter slices set to zero, normalization variances kept), then removed — directly with an
explicit plan, and through the pass with L1 importance, which must pick exactly those channels.
The result must compute the same outputs (rtol 1e-5), pass the full checker, keep its interface,
and be physically smaller.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from _helpers import assert_equivalent
from passes._base import RunContext, Tolerance
from passes.prune import PruneChannelsPass, PruneOptions
from passes.prune._apply import apply_removal
from passes.prune._prune import plan_pruning
from test_prune_models import TOPOLOGIES, flatten_gemm, split_concat

TIGHT = Tolerance(rtol=1e-5, atol=1e-6)


def _zero_channels(model: onnx.ModelProto) -> dict[int, np.ndarray]:
    """Zero every other channel of every prunable group in place; returns the plan removing them."""
    plan = plan_pruning(model, PruneOptions(), None)
    arrays = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    removal = {}
    for group in plan.groups.groups:
        if not group.prunable:
            continue
        units = np.arange(0, group.size, 2)
        removal[group.id] = units
        for p in group.params:
            if p.role == "norm_stat" and p.space.slot == 4:
                continue  # a BatchNormalization variance stays positive
            index = group.indices[p.space][units].reshape(-1)
            moved = np.moveaxis(arrays[p.initializer], p.axis, 0)
            moved[index] = 0
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(arrays[init.name], init.name))
    return removal


def _interface(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(v.name, str(v.type)) for v in [*model.graph.input, *model.graph.output]]


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_removing_dead_channels_is_exact(name: str) -> None:
    model = TOPOLOGIES[name]()
    removal = _zero_channels(model)
    assert removal, "the topology must have a prunable group"
    plan = plan_pruning(model, PruneOptions(), None)
    apply_removal(plan.model, plan.groups, removal)
    onnx.checker.check_model(plan.model, full_check=True)
    assert _interface(plan.model) == _interface(model)
    assert _params(plan.model) < _params(model)
    assert_equivalent(model, plan.model, tol=TIGHT)


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_pass_with_l1_removes_exactly_the_dead_channels(name: str) -> None:
    model = TOPOLOGIES[name]()
    _zero_channels(model)
    before = model.SerializeToString()
    options = PruneOptions(ratio=0.5, per_layer=True, round_to=1)
    result = PruneChannelsPass(options).apply(model, RunContext())
    assert model.SerializeToString() == before, "the pass must not modify its input"
    assert result.changed
    onnx.checker.check_model(result.model, full_check=True)
    assert _interface(result.model) == _interface(model)
    assert result.stats["params_after"] < result.stats["params_before"]
    assert_equivalent(model, result.model, tol=TIGHT)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _const(model: onnx.ModelProto, name: str) -> list[int]:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name)).tolist()


def _pruned(model: onnx.ModelProto) -> onnx.ModelProto:
    removal = _zero_channels(model)
    plan = plan_pruning(model, PruneOptions(), None)
    apply_removal(plan.model, plan.groups, removal)
    return plan.model


def test_split_sizes_are_rewritten() -> None:
    model = _pruned(split_concat())
    split = _node(model, "split")
    assert _const(model, split.input[1]) == [2, 2]


def test_split_without_sizes_gets_them() -> None:
    model = _pruned(split_concat(explicit_sizes=False))
    split = _node(model, "split")
    assert len(split.input) == 2 and _const(model, split.input[1]) == [2, 2]


def test_slice_bounds_are_rewritten() -> None:
    model = _pruned(TOPOLOGIES["slice_branch"]())
    node = _node(model, "slice")
    # channels 2..5 of 8; the even ones (0, 2, 4, 6) are gone: 2:6 becomes 1:3 of the 4 left
    assert (_const(model, node.input[1]), _const(model, node.input[2])) == ([1], [3])


def test_reshape_target_is_rewritten() -> None:
    model = _pruned(flatten_gemm(reshape="0,64"))
    assert _const(model, _node(model, "reshape").input[1]) == [0, 32]


def test_depthwise_group_attribute_follows_the_channels() -> None:
    model = _pruned(TOPOLOGIES["depthwise_block"]())
    group = next(a.i for a in _node(model, "dw").attribute if a.name == "group")
    assert group == 4


def test_shared_initializer_is_copied_for_the_use_that_shrinks() -> None:
    model = TOPOLOGIES["concat_branches"]()
    zeros = numpy_helper.from_array(np.zeros(8, np.float32), "zeros8")
    model.graph.initializer.append(zeros)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "b8.w"))
    conv_b = _node(model, "b")
    conv_b.input[1], conv_b.input[2] = "b8.w", "zeros8"
    _node(model, "a").input[2] = "zeros8"
    c_w = next(t for t in model.graph.initializer if t.name == "c.w")
    c_w.CopyFrom(numpy_helper.from_array(np.zeros((4, 16, 3, 3), np.float32), "c.w"))
    onnx.checker.check_model(model, full_check=True)
    plan = plan_pruning(model, PruneOptions(), None)
    group_a = next(g for g in plan.groups.groups if g.nodes("out") == ["a"])
    apply_removal(plan.model, plan.groups, {group_a.id: np.array([0, 1])})
    onnx.checker.check_model(plan.model, full_check=True)
    assert _node(plan.model, "b").input[2] == "zeros8" and len(_const(plan.model, "zeros8")) == 8
    renamed = _node(plan.model, "a").input[2]
    assert renamed != "zeros8" and len(_const(plan.model, renamed)) == 6
