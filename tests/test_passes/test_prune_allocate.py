"""Sensitivity-aware allocation: options, the masked model, the MAC budget and the greedy choice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from _helpers import run_ort
from passes._base import RunContext
from passes._errors import OnnxSlimError, PreconditionError
from passes.prune import PruneChannelsPass, PruneOptions
from passes.prune._allocate import allocate, keep_options
from passes.prune._collect import Samples
from passes.prune._prune import plan_pruning, prune_model
from passes.prune._sensitivity import MaskedModel, Meter, _noise, channel_moments
from test_prune_models import (concat_branches, depthwise_block, flatten_gemm, make_model, matmul_mlp, residual_add,
                               split_concat, squeeze_excite)


def _chain() -> onnx.ModelProto:
    """x[N, 3, 6, 6] → Conv a(3→16, 1x1) → Relu → Conv b(16→16, 1x1) → Relu → Conv c(16→4, 1x1).

    Two prunable groups (a's and b's outputs); b's last 8 channels are weak (weights × 0.01) and
    barely reach c (weights × 0.001).
    """
    rng = np.random.default_rng(0)
    w_b, b_b, w_c = rng.normal(0, 0.5, (16, 16, 1, 1)), rng.normal(0.3, 0.1, 16), rng.normal(0, 0.5, (4, 16, 1, 1))
    w_b[8:] *= 0.01
    b_b[8:] *= 0.01
    w_c[:, 8:] *= 1e-3
    params = {"a.w": rng.normal(0, 0.5, (16, 3, 1, 1)), "a.b": rng.normal(0.3, 0.1, 16),
              "b.w": w_b, "b.b": b_b, "c.w": w_c, "c.b": np.zeros(4)}
    nodes = [
        helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="a", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "b.w", "b.b"], ["b"], name="b", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["rb", "c.w", "c.b"], ["y"], name="c", kernel_shape=[1, 1]),
    ]
    return make_model(nodes, params, shape=("N", 3, 6, 6), out_shape=["N", 4, 6, 6])


def _samples(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0.2, 1.0, (1, 3, 6, 6)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize(
    ("size", "round_to", "max_ratio", "expected"),
    [(20, 8, 0.9, [20, 16, 8]), (16, 8, 0.5, [16, 8]), (8, 8, 0.9, [8]), (10, 1, 0.5, [10, 9, 8, 7, 6, 5])],
)
def test_keep_options_are_multiples_of_round_to_above_the_floor(size, round_to, max_ratio, expected) -> None:
    assert keep_options(size, round_to, max_ratio) == expected


def test_allocation_defaults_to_sensitivity_with_data() -> None:
    assert PruneOptions().allocation_for(True) == "sensitivity"
    assert PruneOptions().allocation_for(False) == "global"
    assert PruneOptions(per_layer=True).allocation_for(True) == "uniform"
    assert PruneOptions(allocation="global").allocation_for(True) == "global"
    with pytest.raises(OnnxSlimError, match="per_layer"):
        PruneOptions(per_layer=True, allocation="sensitivity")
    with pytest.raises(OnnxSlimError, match="allocation must be one of"):
        PruneOptions(allocation="random")


def test_sensitivity_needs_data() -> None:
    with pytest.raises(PreconditionError, match="calibration data"):
        PruneChannelsPass(PruneOptions(allocation="sensitivity")).apply(_chain(), RunContext())


@pytest.mark.parametrize("builder", [_chain, concat_branches, split_concat, residual_add, squeeze_excite, depthwise_block,
                                     flatten_gemm, matmul_mlp])
def test_masked_model_equals_pruning_with_mean_compensation(builder) -> None:
    """Probing a removal (``mean`` fill) = slicing the channels out and compensating the biases.

    ``concat_branches`` and ``split_concat`` have a layer reading two pruned groups: it must be
    compensated once, not once per group.
    """
    model = builder()
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    samples = [{"x": rng.normal(0.2, 1.0, shape).astype(np.float32)} for _ in range(4)]
    options = PruneOptions(ratio=0.5, allocation="uniform", round_to=1, reconstruct=False)
    plan = plan_pruning(model, options, Samples(samples, None))
    prunable = [g for g in plan.groups.groups if g.prunable]
    masked = MaskedModel(plan.model, prunable, {k: (v[0], None) for k, v in plan.means.items()})
    pruned, changed, _ = prune_model(model, options, dataset=samples)
    assert changed and all(masked.covers(g) for g in prunable)
    feeds = masked.feeds([(g, plan.removal[g.id]) for g in prunable])
    for sample in samples:
        np.testing.assert_allclose(masked.run([sample], feeds)[0][0], run_ort(pruned, sample)["y"], rtol=1e-4, atol=1e-4)
    assert Meter(masked, Samples(samples, None))([]) == 0.0  # nothing removed: the unpruned outputs


def test_greedy_spends_the_budget_on_the_least_sensitive_group() -> None:
    plan = plan_pruning(_chain(), PruneOptions(), None)
    groups = [g for g in plan.groups.groups if g.prunable]
    a, b = (next(g for g in groups if g.nodes("out") == [name]) for name in ("a", "b"))
    weight = {a.id: 10.0, b.id: 0.1}  # a is 100 times as sensitive per channel
    measure = lambda removal: sum(weight[g.id] * len(r) for g, r in removal)  # noqa: E731
    orders = {g.id: np.argsort(plan.scores[g.id], kind="stable") for g in groups}
    macs_b = plan.macs[2] + plan.macs[4]  # b's own MACs and c's (its consumer)
    ratio = 0.5 * macs_b / sum(plan.macs.values()) * 0.9  # reachable by halving b alone
    result = allocate(groups, orders, plan.macs, measure, ratio=ratio, round_to=8, max_ratio=0.9)
    assert result.keep == {a.id: 16, b.id: 8}
    assert result.macs_after <= result.macs_before * (1 - ratio)
    assert result.noise == pytest.approx(0.1 * 8)


def test_greedy_stops_when_nothing_is_left_to_remove() -> None:
    plan = plan_pruning(_chain(), PruneOptions(), None)
    groups = [g for g in plan.groups.groups if g.prunable]
    orders = {g.id: np.argsort(plan.scores[g.id], kind="stable") for g in groups}
    result = allocate(groups, orders, plan.macs, lambda removal: 0.0, ratio=0.99, round_to=8, max_ratio=0.5)
    assert set(result.keep.values()) == {8}
    assert result.macs_after > result.macs_before * 0.01


def test_sensitivity_pass_meets_the_mac_budget_and_keeps_the_outputs_close() -> None:
    model, samples = _chain(), _samples(16)
    options = PruneOptions(ratio=0.3, criterion="l1", round_to=8, sensitivity_samples=4)  # b's weak half has small weights
    result = PruneChannelsPass(options).apply(model, RunContext(dataset=samples))
    stats = result.stats
    assert stats["allocation"] == "sensitivity"
    assert stats["macs_after"] <= 0.7 * stats["macs_before"]
    onnx.checker.check_model(result.model, full_check=True)
    # the harmless way to 30 % is b's weak half (a uniform allocation would also cut a)
    by_node = {row["producers"][0]: row["channels_after"] for row in stats["groups"]}
    assert by_node == {"a": 16, "b": 8}
    test = _samples(8, seed=1)
    error = np.mean([np.mean((run_ort(model, s)["y"] - run_ort(result.model, s)["y"]) ** 2) for s in test])
    signal = np.mean([np.mean(run_ort(model, s)["y"] ** 2) for s in test])
    assert error < 1e-6 * signal


def _duplicated() -> onnx.ModelProto:
    """x[N, 3, 6, 6] → Conv a(3→8, 1x1, no activation) → Conv c(8→4, 3x3): a's channels 4–7 copy 0–3 × 2."""
    rng = np.random.default_rng(0)
    w_a = rng.normal(0, 0.5, (4, 3, 1, 1))
    params = {"a.w": np.concatenate([w_a, 2.0 * w_a]), "a.b": np.zeros(8), "c.w": rng.normal(0, 0.5, (4, 8, 3, 3)),
              "c.b": np.zeros(4)}
    nodes = [helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "c.w", "c.b"], ["y"], name="c", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    return make_model(nodes, params, shape=("N", 3, 6, 6), out_shape=["N", 4, 6, 6])


@pytest.mark.parametrize(("fill", "exact"), [("linear", True), ("mean", False)])
def test_linear_fill_sees_that_kept_channels_stand_in_for_removed_ones(fill: str, exact: bool) -> None:
    model, samples = _duplicated(), _samples(8)
    plan = plan_pruning(model, PruneOptions(), Samples(samples, None))
    group = next(g for g in plan.groups.groups if g.prunable)
    key = (group.consumers[0].data.tensor, group.consumers[0].data.axis)
    moments = channel_moments(plan.model, Samples(samples, None), [key])
    masked = MaskedModel(plan.model, [group], moments, fill=fill)
    assert masked.covers(group)
    noise = Meter(masked, Samples(samples, None))([(group, np.arange(4, 8))])  # the copies go
    assert noise < 1e-4 if exact else noise > 1e-2, noise  # linear: only the ridge's shrinkage is left


def test_noise_weighs_each_output_channel_so_small_scores_are_not_drowned() -> None:
    """A YOLO-like ``[1, 4 + 2, 50]``: boxes in pixels exact, class scores in [0, 1] zeroed."""
    rng = np.random.default_rng(0)
    reference = np.concatenate([rng.uniform(0, 320, (1, 4, 50)), rng.uniform(0, 1, (1, 2, 50))], axis=1)
    damaged = reference.copy()
    damaged[:, 4:] = 0.0
    whole = np.sum((damaged - reference) ** 2) / np.sum(reference ** 2)
    assert whole < 1e-4  # one ratio over the tensor barely sees it
    assert _noise([[damaged]], [[reference]]) == pytest.approx(2 / 6)  # two of six channels fully lost
