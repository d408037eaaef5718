"""Repair from calibration data: mean compensation, then the least-squares re-fit, lower the error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from _helpers import run_ort
from passes._base import RunContext
from passes._errors import PreconditionError
from passes.prune import PruneChannelsPass, PruneOptions
from test_prune_models import conv_transpose_up, depthwise_block, flatten_gemm, make_model, matmul_mlp


def _redundant_model() -> onnx.ModelProto:
    """x[N, 4, 6, 6] → Conv a(4→8, 1x1) → Relu → Conv b(8→4, 3x3): a's 8 channels overlap."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (4, 4))
    w_a = np.concatenate([base, base + 0.1 * rng.normal(0, 1, (4, 4))]).reshape(8, 4, 1, 1)
    params = {"a.w": w_a, "a.b": rng.normal(0.5, 0.1, 8), "b.w": rng.normal(0, 0.3, (4, 8, 3, 3)), "b.b": np.zeros(4)}
    nodes = [
        helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="a", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "b.w", "b.b"], ["y"], name="b", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    return make_model(nodes, params, shape=("N", 4, 6, 6), out_shape=["N", 4, 6, 6])


def _samples(shape: tuple[int, ...], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0.2, 1.0, (1, *shape)).astype(np.float32)} for _ in range(count)]


def _error(reference: onnx.ModelProto, candidate: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> float:
    errors = [np.mean((run_ort(reference, s)["y"] - run_ort(candidate, s)["y"]) ** 2) for s in samples]
    return float(np.mean(errors))


@pytest.mark.parametrize(
    ("builder", "shape"),
    [(_redundant_model, (4, 6, 6)), (flatten_gemm, (1, 6, 6)), (matmul_mlp, (5, 6)), (conv_transpose_up, (3, 8, 8)),
     (depthwise_block, (3, 8, 8))],
    ids=["conv", "flatten_gemm", "matmul", "conv_transpose", "depthwise"],
)
def test_reconstruction_lowers_the_error(builder, shape) -> None:
    model = builder()
    if builder is not _redundant_model:  # the builders' fixed batch 2 becomes one sample per run
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    calib, held_out = _samples(shape, 64, seed=1), _samples(shape, 16, seed=2)
    errors = {}
    for label, data, reconstruct in (("plain", None, None), ("mean", calib, False), ("refit", calib, True)):
        # the same channels in every variant: L1 (the default with data would be activation)
        options = PruneOptions(ratio=0.5, criterion="l1", per_layer=True, round_to=1, reconstruct=reconstruct)
        result = PruneChannelsPass(options).apply(model, RunContext(dataset=data))
        onnx.checker.check_model(result.model, full_check=True)
        errors[label] = _error(model, result.model, held_out)
        if data is not None:
            assert result.stats["mean_compensated"] >= 1
        if reconstruct:
            assert result.stats["reconstructed"] >= 1
    assert errors["refit"] < errors["mean"] < errors["plain"], errors


def test_refit_alone_is_near_exact_when_channels_are_duplicates() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (4, 4))
    w_b = np.concatenate([1 + np.abs(rng.normal(0, 1, (3, 4))), 0.01 * rng.normal(0, 1, (3, 4))], axis=1)
    w_b = w_b.reshape(3, 8, 1, 1)  # the copies are read with tiny weights: lowest L1, so they go
    params = {"a.w": np.concatenate([w, w]).reshape(8, 4, 1, 1), "a.b": np.zeros(8), "b.w": w_b, "b.b": np.zeros(3)}
    nodes = [helper.make_node("Conv", ["x", "a.w", "a.b"], ["a"], name="a", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "b.w", "b.b"], ["y"], name="b", kernel_shape=[1, 1])]
    model = make_model(nodes, params, shape=("N", 4, 5, 5), out_shape=["N", 3, 5, 5])
    calib = _samples((4, 5, 5), 32, seed=1)
    result = PruneChannelsPass(PruneOptions(ratio=0.5, criterion="l1", per_layer=True, round_to=1, ridge=1e-8)).apply(
        model, RunContext(dataset=calib))
    assert _error(model, result.model, _samples((4, 5, 5), 8, seed=2)) < 1e-8


def test_reconstruction_needs_data() -> None:
    with pytest.raises(PreconditionError, match="calibration data"):
        PruneChannelsPass(PruneOptions(reconstruct=True)).apply(_redundant_model(), RunContext())
    with pytest.raises(PreconditionError, match="calibration data"):
        PruneChannelsPass(PruneOptions(criterion="activation")).apply(_redundant_model(), RunContext())
