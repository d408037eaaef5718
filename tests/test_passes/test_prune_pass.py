"""The prune pass as a whole: contract, Constant-node weights, pipeline, dry-run listing, LeNet-5."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from _helpers import assert_equivalent, run_ort
from calibration.datasets import NpzDataset, input_specs
from onnxslim.pipeline import run_pipeline
from passes._base import RunContext, Tolerance
from passes.prune import STRUCTURAL, Analysis, PruneChannelsPass, PruneOptions, analyze, render_stats
from passes.prune._reconstruct import REFIT_LABEL
from passes.prune._sensitivity import PROBE_LABEL
from test_prune_apply import _zero_channels
from test_prune_models import conv_bn_relu_conv, output_conv, squeeze_excite

TIGHT = Tolerance(rtol=1e-5, atol=1e-6)


def test_nothing_to_prune_returns_the_model_unchanged() -> None:
    model = output_conv()
    before = model.SerializeToString()
    result = PruneChannelsPass(PruneOptions(ratio=0.5)).apply(model, RunContext())
    assert not result.changed
    assert result.model is model and model.SerializeToString() == before
    assert result.stats["groups_prunable"] == 0 and result.stats["frozen: graph output"] == 1


def test_ratio_zero_changes_nothing() -> None:
    result = PruneChannelsPass(PruneOptions(ratio=0.0, round_to=1)).apply(conv_bn_relu_conv(), RunContext())
    assert not result.changed


def _constants_as_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every initializer turned into a Constant node (as PaddleOCR exports)."""
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    del model.graph.initializer[:]
    body = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + body)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_weights_in_constant_nodes_are_pruned() -> None:
    model = squeeze_excite()
    _zero_channels(model)
    model = _constants_as_nodes(model)
    result = PruneChannelsPass(PruneOptions(ratio=0.5, per_layer=True, round_to=1)).apply(model, RunContext())
    assert result.changed and result.stats["groups_pruned"] == 2
    assert not any(n.op_type == "Constant" for n in result.model.graph.node)
    onnx.checker.check_model(result.model, full_check=True)
    assert_equivalent(model, result.model, tol=TIGHT)


def test_pipeline_verifies_prune_structurally() -> None:
    model = conv_bn_relu_conv()
    feeds = [{"x": np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)}]
    report = run_pipeline(model, [PruneChannelsPass(PruneOptions(ratio=0.5, round_to=1))], RunContext(), verify_feeds=feeds)
    assert PruneChannelsPass.tolerance == STRUCTURAL
    assert report.steps[0].verified == "passed" and report.steps[0].changed


def test_stats_count_groups_channels_params_and_macs() -> None:
    result = PruneChannelsPass(PruneOptions(ratio=0.5, per_layer=True, round_to=1)).apply(conv_bn_relu_conv(), RunContext())
    stats = result.stats
    assert (stats["groups_total"], stats["groups_prunable"], stats["groups_frozen"], stats["groups_pruned"]) == (3, 1, 2, 1)
    assert (stats["channels_before"], stats["channels_after"]) == (8, 4)
    # conv1 8·3·9 + 8, BN 4·8, conv2 4·8·9 + 4 = 224 + 32 + 292; then 4 channels instead of 8
    assert (stats["params_before"], stats["params_after"]) == (548, 112 + 16 + 148)
    assert stats["macs_before"] == 2 * 64 * (8 * 27 + 4 * 72) and stats["macs_after"] == stats["macs_before"] // 2
    [row] = stats["groups"]
    assert row["producers"] == ["conv1"] and row["consumers"] == ["conv2"]
    table = render_stats(stats)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    assert ["0", "8 → 4", "conv1"] == cells[2][:3] and any(row[0] == "total" for row in cells)


def test_analysis_lists_groups_and_frozen_reasons() -> None:
    analysis = analyze(squeeze_excite(), PruneOptions(ratio=0.5, round_to=1, per_layer=True))
    assert isinstance(analysis, Analysis)
    data = analysis.to_dict()
    assert (data["groups_total"], data["groups_prunable"], data["groups_frozen"]) == (4, 2, 2)
    assert data["frozen_reasons"] == {"graph input": 1, "graph output": 1}
    main = next(g for g in data["groups"] if g["producers"] == ["conv", "se_e"])
    assert (main["channels"], main["keep"], main["consumers"]) == (8, 4, ["se_s", "c"])
    text = analysis.render()
    assert "2 prunable" in text and "Frozen groups:" in text and "graph output ('y')" in text


@pytest.fixture(scope="module")
def lenet(lenet_path) -> onnx.ModelProto:
    return onnx.load(str(lenet_path))


def test_lenet_groups(lenet: onnx.ModelProto) -> None:
    analysis = analyze(lenet, PruneOptions(ratio=0.5, per_layer=True, round_to=1))
    assert [(g.channels, g.keep, g.producers) for g in analysis.prunable] == [
        (6, 3, ("/conv1/Conv",)), (16, 8, ("/conv2/Conv",)), (120, 60, ("/fc1/Gemm",)), (84, 42, ("/fc2/Gemm",))]
    assert analysis.frozen_reasons() == {"graph input": 1, "graph output": 1}


def test_lenet_half_pruned_with_reconstruction_keeps_its_accuracy(lenet: onnx.ModelProto, repo_root) -> None:
    calib = NpzDataset(repo_root / "models" / "lenet5_digits_calib.npz", input_specs(lenet))
    options = PruneOptions(ratio=0.5, per_layer=True, round_to=1, calib_samples=256)
    result = PruneChannelsPass(options).apply(lenet, RunContext(dataset=calib))
    assert (result.stats["params_before"], result.stats["params_after"]) == (61_706, 15_738)  # Torch-Pruning's numbers
    test = np.load(repo_root / "models" / "lenet5_digits_test.npz")
    logits = run_ort(result.model, {"input": test["input"]})["logits"]
    assert float(np.mean(logits.argmax(axis=1) == test["labels"])) >= 0.95


def test_dataset_may_be_a_one_shot_iterator(lenet: onnx.ModelProto, repo_root) -> None:
    arrays = np.load(repo_root / "models" / "lenet5_digits_calib.npz")["input"][:16]
    samples = ({"input": row[None]} for row in arrays)
    options = PruneOptions(ratio=0.5, per_layer=True, round_to=1, calib_samples=16)
    result = PruneChannelsPass(options).apply(lenet, RunContext(dataset=samples))
    assert result.stats["reconstructed"] == 4


def test_stats_of_constant_initializer_model_keep_names(lenet: onnx.ModelProto) -> None:
    result = PruneChannelsPass(PruneOptions(ratio=0.5, per_layer=True, round_to=1)).apply(lenet, RunContext())
    names = [t.name for t in result.model.graph.initializer]
    assert names == [t.name for t in lenet.graph.initializer]
    assert numpy_helper.to_array(next(t for t in result.model.graph.initializer if t.name == "fc1.weight")).shape == (60, 200)


def test_progress_reports_the_probes_and_the_refit_with_growing_counts() -> None:
    model = conv_bn_relu_conv()
    rng = np.random.default_rng(0)
    calib = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    calls: list[tuple[str, int, int]] = []
    options = PruneOptions(ratio=0.3, allocation="sensitivity", round_to=1, reconstruct=True)
    result = PruneChannelsPass(options).apply(model, RunContext(dataset=calib, progress=lambda *c: calls.append(c)))
    assert result.changed
    by_label: dict[str, list[tuple[int, int]]] = {}
    for label, done, total in calls:
        by_label.setdefault(label, []).append((done, total))
    assert list(by_label) == [PROBE_LABEL, REFIT_LABEL]  # the probes first, then the re-fit
    probes = by_label[PROBE_LABEL]
    assert [d for d, _ in probes] == list(range(1, len(probes) + 1))  # one call per probe run
    assert len(probes) == result.stats["sensitivity_probes"] and all(d <= t for d, t in probes)
    refit = by_label[REFIT_LABEL]
    assert refit[0][0] == 0 and refit[-1][0] == refit[-1][1] > 0  # from nothing to every layer
    assert all(a[0] < b[0] for a, b in itertools.pairwise(refit))


def test_without_progress_nothing_is_called_and_the_result_is_the_same() -> None:
    model = conv_bn_relu_conv()
    rng = np.random.default_rng(0)
    calib = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    options = PruneOptions(ratio=0.3, allocation="sensitivity", round_to=1, reconstruct=True)
    quiet = PruneChannelsPass(options).apply(model, RunContext(dataset=calib))
    loud = PruneChannelsPass(options).apply(model, RunContext(dataset=calib, progress=lambda *c: None))
    assert quiet.model.SerializeToString() == loud.model.SerializeToString()
