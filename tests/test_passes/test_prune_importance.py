"""Importance scores (hand-computed golden values), kept counts, rounding and exclusions."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from passes._errors import OnnxSlimError
from passes.prune import PruneOptions, analyze
from passes.prune._collect import Samples
from passes.prune._importance import plan_removal, rounded_keep
from passes.prune._prune import plan_pruning
from test_prune_models import by_producer, concat_branches, conv_bn_relu_conv, groups_of, make_model


def _golden_model(with_bn: bool):
    """Conv(1→2, 1x1): W1 = [1, -2], B1 = [0.5, 0.5]; [BN γ = [0.1, -0.2]]; Relu; Conv(2→1): W2 = [3, -4]."""
    params = {
        "w1": np.array([1.0, -2.0]).reshape(2, 1, 1, 1), "b1": np.array([0.5, 0.5]),
        "w2": np.array([3.0, -4.0]).reshape(1, 2, 1, 1),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv1", kernel_shape=[1, 1])]
    src = "c"
    if with_bn:
        params.update({"g": np.array([0.1, -0.2]), "beta": np.array([1.0, 1.0]), "mu": np.zeros(2), "var": np.ones(2)})
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["n"], name="bn"))
        src = "n"
    nodes += [helper.make_node("Relu", [src], ["r"], name="relu"),
              helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", kernel_shape=[1, 1])]
    return make_model(nodes, params, shape=(1, 1, 4, 4))


@pytest.mark.parametrize(
    ("criterion", "with_bn", "expected"),
    [
        ("l1", False, [1 + 3, 2 + 4]),  # |W1[c]| + |W2[:, c]|; biases are not counted
        ("l2", False, [np.sqrt(1 + 9), np.sqrt(4 + 16)]),
        ("l1", True, [1 + 3 + 0.1, 2 + 4 + 0.2]),  # the BN scale counts, its shift and stats do not
        ("bn", True, [0.1, 0.2]),
    ],
)
def test_golden_scores(criterion: str, with_bn: bool, expected: list[float]) -> None:
    plan = plan_pruning(_golden_model(with_bn), PruneOptions(criterion=criterion), None)
    group = next(g for g in plan.groups.groups if g.nodes("out") == ["conv1"])
    np.testing.assert_allclose(plan.scores[group.id], expected, rtol=1e-6)


def test_bn_criterion_without_bn_falls_back_to_l1_with_a_note() -> None:
    plan = plan_pruning(_golden_model(False), PruneOptions(criterion="bn"), None)
    group = next(g for g in plan.groups.groups if g.nodes("out") == ["conv1"])
    np.testing.assert_allclose(plan.scores[group.id], [4, 6])
    assert plan.notes == {"bn: no normalization scale in the group, used l1": 1}


def test_activation_criterion_uses_mean_absolute_consumer_input() -> None:
    model = _golden_model(False)
    x = np.full((1, 1, 4, 4), 1.0, np.float32)
    plan = plan_pruning(model, PruneOptions(criterion="activation"), Samples([{"x": x}], 1))
    group = next(g for g in plan.groups.groups if g.nodes("out") == ["conv1"])
    # relu(1·1 + 0.5) = 1.5 and relu(−2 + 0.5) = 0
    np.testing.assert_allclose(plan.scores[group.id], [1.5, 0.0])


def test_default_criterion_is_activation_with_data_and_l1_without() -> None:
    model = _golden_model(False)
    x = np.full((1, 1, 4, 4), 1.0, np.float32)
    with_data = plan_pruning(model, PruneOptions(), Samples([{"x": x}], 1))
    without = plan_pruning(model, PruneOptions(), None)
    assert (with_data.criterion, without.criterion) == ("activation", "l1")
    group = next(g for g in with_data.groups.groups if g.nodes("out") == ["conv1"])
    np.testing.assert_allclose(with_data.scores[group.id], [1.5, 0.0])  # the activation scores above
    np.testing.assert_allclose(without.scores[group.id], [4, 6])  # the L1 scores above
    assert analyze(model, PruneOptions(), dataset=[{"x": x}]).criterion == "activation"


@pytest.mark.parametrize(
    ("size", "target", "round_to", "expected"),
    [
        (6, 3, 8, 6),  # no multiple of 8 below 6: keep all, never zero
        (16, 11, 8, 8),
        (120, 60, 8, 64),  # 56 and 64 are as near: the larger wins
        (84, 42, 8, 40),
        (10, 0, 1, 1),  # never zero
        (10, 7, 1, 7),
        (24, 16, 8, 16),
    ],
)
def test_rounded_keep(size: int, target: int, round_to: int, expected: int) -> None:
    assert rounded_keep(size, target, round_to) == expected


def test_per_layer_plan_removes_the_lowest_scores() -> None:
    groups = groups_of(conv_bn_relu_conv())
    group = by_producer(groups)["conv1"]
    scores = {group.id: np.array([5.0, 1.0, 7.0, 0.5, 3.0, 2.0, 9.0, 8.0])}
    removal = plan_removal(groups, scores, ratio=0.5, per_layer=True, round_to=1, max_ratio=0.9)
    assert removal[group.id].tolist() == [1, 3, 4, 5]


def test_max_ratio_caps_one_group() -> None:
    groups = groups_of(conv_bn_relu_conv())
    group = by_producer(groups)["conv1"]
    removal = plan_removal(groups, {group.id: np.arange(8.0)}, ratio=0.99, per_layer=True, round_to=1, max_ratio=0.5)
    assert len(removal[group.id]) == 4


def test_global_plan_follows_normalized_scores() -> None:
    groups = groups_of(concat_branches())
    a, b = by_producer(groups)["a"], by_producer(groups)["b"]
    # both groups have mean score 1, so normalized scores are the scores themselves
    scores = {a.id: np.ones(8), b.id: np.array([0.1, 0.1, 0.1, 1.9, 1.9, 1.9])}
    removal = plan_removal(groups, scores, ratio=0.25, per_layer=False, round_to=1, max_ratio=0.9)
    # 14 channels keep int(14·0.75) = 10: b's three 0.1 go first, then the first of a's 1.0
    assert removal[b.id].tolist() == [0, 1, 2]
    assert removal[a.id].tolist() == [0]


def test_round_to_default_keeps_small_groups_whole() -> None:
    analysis = analyze(conv_bn_relu_conv(), PruneOptions(ratio=0.3))  # 8 channels, round_to 8
    assert [g.keep for g in analysis.prunable] == [8]


def test_options_are_checked() -> None:
    with pytest.raises(OnnxSlimError, match="ratio"):
        PruneOptions(ratio=1.0)
    with pytest.raises(OnnxSlimError, match="criterion"):
        PruneOptions(criterion="random")
    with pytest.raises(OnnxSlimError, match="round_to"):
        PruneOptions(round_to=0)
