"""Tiny seeded models for the pruning tests, and the group listing each one must give.

Every builder returns a checked model (opset 13, IR 8, weights from ``default_rng(0)``) whose
input is ``x`` ``[2, 3, 8, 8]`` (``[2, 1, 6, 6]`` for the Flatten/Reshape heads, ``[2, 5, 6]`` for
the MatMul one) and output ``y``. The other pruning test modules import them from here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes.prune import PruneOptions
from passes.prune._groups import Group
from passes.prune._prune import plan_pruning

OPSET = 13


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_model(nodes: list[onnx.NodeProto], params: dict[str, np.ndarray], *, shape=(2, 3, 8, 8),
               out_shape=None, opset: int = OPSET) -> onnx.ModelProto:
    """A checked model with input ``x`` of ``shape`` and output ``y``."""
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in params.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if out_shape is None:  # declare the inferred output shape
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.output[0].CopyFrom(next(v for v in inferred.graph.output if v.name == "y"))
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(rng: np.random.Generator, name: str, c_out: int, c_in: int, k: int = 3, group: int = 1) -> dict[str, np.ndarray]:
    return {f"{name}.w": rng.normal(0, 0.5, (c_out, c_in // group, k, k)), f"{name}.b": rng.normal(0, 0.1, c_out)}


def conv_node(name: str, x: str, y: str, *, k: int = 3, group: int = 1, bias: bool = True) -> onnx.NodeProto:
    inputs = [x, f"{name}.w"] + ([f"{name}.b"] if bias else [])
    return helper.make_node("Conv", inputs, [y], name=name, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)


def conv_bn_relu_conv() -> onnx.ModelProto:
    """Conv(3→8) → BatchNormalization → Relu → Conv(8→4)."""
    rng = _rng()
    p = {**_conv(rng, "conv1", 8, 3), **_conv(rng, "conv2", 4, 8)}
    p.update({"bn.scale": rng.uniform(0.5, 1.5, 8), "bn.bias": rng.normal(0, 0.1, 8),
              "bn.mean": rng.normal(0, 0.1, 8), "bn.var": rng.uniform(0.5, 1.5, 8)})
    nodes = [
        conv_node("conv1", "x", "c1"),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"], name="bn"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu"),
        conv_node("conv2", "r1", "y"),
    ]
    return make_model(nodes, p)


def residual_add() -> onnx.ModelProto:
    """Conv a(3→8) → Relu → r; Conv b(8→8) on r; Add(r, b) → Relu → Conv c(8→4)."""
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "b", 8, 8), **_conv(rng, "c", 4, 8)}
    nodes = [
        conv_node("a", "x", "a_out"), helper.make_node("Relu", ["a_out"], ["r"], name="relu_a"),
        conv_node("b", "r", "b_out"), helper.make_node("Add", ["r", "b_out"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["rs"], name="relu_s"), conv_node("c", "rs", "y"),
    ]
    return make_model(nodes, p)


def depthwise_block() -> onnx.ModelProto:
    """Conv pw1(3→8) → Relu → depthwise Conv(8, group 8) → Relu → Conv pw2(8→4)."""
    rng = _rng()
    p = {**_conv(rng, "pw1", 8, 3, 1), **_conv(rng, "dw", 8, 8, 3, 8), **_conv(rng, "pw2", 4, 8, 1)}
    nodes = [
        conv_node("pw1", "x", "p1", k=1), helper.make_node("Relu", ["p1"], ["r1"], name="relu1"),
        conv_node("dw", "r1", "d", group=8), helper.make_node("Relu", ["d"], ["r2"], name="relu2"),
        conv_node("pw2", "r2", "y", k=1),
    ]
    return make_model(nodes, p)


def concat_branches() -> onnx.ModelProto:
    """Conv a(3→8) and Conv b(3→6) → Concat(axis 1) → Relu → Conv c(14→4)."""
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "b", 6, 3), **_conv(rng, "c", 4, 14)}
    nodes = [
        conv_node("a", "x", "a_out"), conv_node("b", "x", "b_out"),
        helper.make_node("Concat", ["a_out", "b_out"], ["cat"], name="concat", axis=1),
        helper.make_node("Relu", ["cat"], ["r"], name="relu"), conv_node("c", "r", "y"),
    ]
    return make_model(nodes, p)


def split_concat(*, explicit_sizes: bool = True) -> onnx.ModelProto:
    """Conv a(3→8) → Split(axis 1, 4+4); Conv b on the first half; Concat(b, Relu(second)) → Conv c(8→4)."""
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "b", 4, 4), **_conv(rng, "c", 4, 8)}
    split_inputs = ["a_out"]
    if explicit_sizes:
        p["split.sizes"] = np.array([4, 4], dtype=np.int64)
        split_inputs.append("split.sizes")
    nodes = [
        conv_node("a", "x", "a_out"),
        helper.make_node("Split", split_inputs, ["s0", "s1"], name="split", axis=1),
        conv_node("b", "s0", "b_out"), helper.make_node("Relu", ["s1"], ["r1"], name="relu"),
        helper.make_node("Concat", ["b_out", "r1"], ["cat"], name="concat", axis=1), conv_node("c", "cat", "y"),
    ]
    return make_model(nodes, p)


def slice_branch() -> onnx.ModelProto:
    """Conv a(3→8); Conv b reads channels 2:6 of it, Conv c reads all of it; y = b + c."""
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "b", 4, 4), **_conv(rng, "c", 4, 8)}
    p.update({"sl.starts": np.array([2], np.int64), "sl.ends": np.array([6], np.int64), "sl.axes": np.array([1], np.int64)})
    nodes = [
        conv_node("a", "x", "a_out"), helper.make_node("Relu", ["a_out"], ["r"], name="relu"),
        helper.make_node("Slice", ["r", "sl.starts", "sl.ends", "sl.axes"], ["part"], name="slice"),
        conv_node("b", "part", "b_out"), conv_node("c", "r", "c_out"),
        helper.make_node("Add", ["b_out", "c_out"], ["y"], name="add"),
    ]
    return make_model(nodes, p)


def flatten_gemm(*, reshape: str | None = None) -> onnx.ModelProto:
    """Conv(1→4, 3x3, no pad) on 6x6 → Relu → Flatten (or Reshape to ``reshape``) → Gemm(64→5) → Relu → Gemm(5→3)."""
    rng = _rng()
    p = {"conv.w": rng.normal(0, 0.5, (4, 1, 3, 3)), "conv.b": rng.normal(0, 0.1, 4),
         "fc1.w": rng.normal(0, 0.3, (5, 64)), "fc1.b": rng.normal(0, 0.1, 5),
         "fc2.w": rng.normal(0, 0.3, (3, 5)), "fc2.b": rng.normal(0, 0.1, 3)}
    if reshape is None:
        flat = helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1)
    else:
        p["shape"] = np.array([int(v) for v in reshape.split(",")], np.int64)
        flat = helper.make_node("Reshape", ["r", "shape"], ["f"], name="reshape")
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"), flat,
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g"], name="fc1", transB=1),
        helper.make_node("Relu", ["g"], ["rg"], name="relu2"),
        helper.make_node("Gemm", ["rg", "fc2.w", "fc2.b"], ["y"], name="fc2", transB=1),
    ]
    return make_model(nodes, p, shape=(2, 1, 6, 6))


def squeeze_excite() -> onnx.ModelProto:
    """Conv(3→8) → Relu → x1; GAP → Conv s(8→2) → Relu → Conv e(2→8) → HardSigmoid; x1·se → Conv c(8→4)."""
    rng = _rng()
    p = {**_conv(rng, "conv", 8, 3), **_conv(rng, "se_s", 2, 8, 1), **_conv(rng, "se_e", 8, 2, 1), **_conv(rng, "c", 4, 8)}
    nodes = [
        conv_node("conv", "x", "c0"), helper.make_node("Relu", ["c0"], ["x1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["x1"], ["g"], name="gap"),
        conv_node("se_s", "g", "s1", k=1), helper.make_node("Relu", ["s1"], ["s2"], name="se_relu"),
        conv_node("se_e", "s2", "e1", k=1), helper.make_node("HardSigmoid", ["e1"], ["e2"], name="se_gate"),
        helper.make_node("Mul", ["x1", "e2"], ["m"], name="scale"), conv_node("c", "m", "y"),
    ]
    return make_model(nodes, p)


def matmul_mlp() -> onnx.ModelProto:
    """x[2, 5, 6] → MatMul(6→8) → Add bias → Relu → MatMul(8→3)."""
    rng = _rng()
    p = {"w1": rng.normal(0, 0.5, (6, 8)), "b1": rng.normal(0, 0.1, 8), "w2": rng.normal(0, 0.5, (8, 3))}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    return make_model(nodes, p, shape=(2, 5, 6))


def pool_resize() -> onnx.ModelProto:
    """Conv a(3→8) → MaxPool 2x2 → Resize ×2 (nearest) → Relu → Conv b(8→4)."""
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "b", 4, 8), "roi": np.zeros(0, np.float32),
         "scales": np.array([1, 1, 2, 2], np.float32)}
    nodes = [
        conv_node("a", "x", "a_out"),
        helper.make_node("MaxPool", ["a_out"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p", "roi", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Relu", ["up"], ["r"], name="relu"), conv_node("b", "r", "y"),
    ]
    return make_model(nodes, p)


def conv_transpose_up() -> onnx.ModelProto:
    """Conv a(3→8) → Relu → ConvTranspose(8→4, 2x2, stride 2) → Relu → Conv b(4→2)."""
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "b", 2, 4), "up.w": rng.normal(0, 0.5, (8, 4, 2, 2)),
         "up.b": rng.normal(0, 0.1, 4)}
    nodes = [
        conv_node("a", "x", "a_out"), helper.make_node("Relu", ["a_out"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "up.w", "up.b"], ["u"], name="up", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["u"], ["ru"], name="relu_up"), conv_node("b", "ru", "y"),
    ]
    return make_model(nodes, p)


def output_conv() -> onnx.ModelProto:
    """A single Conv(3→4) whose output is the graph output."""
    rng = _rng()
    return make_model([conv_node("conv", "x", "y")], _conv(rng, "conv", 4, 3))


#: name -> builder, for the tests that run over every topology.
TOPOLOGIES: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv_bn_relu_conv": conv_bn_relu_conv,
    "residual_add": residual_add,
    "depthwise_block": depthwise_block,
    "concat_branches": concat_branches,
    "split_concat": split_concat,
    "split_equal": lambda: split_concat(explicit_sizes=False),
    "slice_branch": slice_branch,
    "flatten_gemm": flatten_gemm,
    "reshape_gemm": lambda: flatten_gemm(reshape="-1,64"),
    "reshape0_gemm": lambda: flatten_gemm(reshape="0,64"),
    "squeeze_excite": squeeze_excite,
    "matmul_mlp": matmul_mlp,
    "pool_resize": pool_resize,
    "conv_transpose_up": conv_transpose_up,
}


def groups_of(model: onnx.ModelProto, **options) -> list[Group]:
    """The channel groups of ``model`` (prepared as the pass prepares it)."""
    return list(plan_pruning(model, PruneOptions(**options), None).groups.groups)


def by_producer(groups: list[Group]) -> dict[str, Group]:
    """Groups keyed by their producers' names joined with '+' (``'-'`` when none)."""
    return {"+".join(g.nodes("out")) or "-": g for g in groups}


# ----------------------------------------------------------------------------- group listings


def _summary(group: Group) -> tuple:
    return (group.size, tuple(group.nodes("out")), tuple(group.nodes("in")), group.frozen is None)


EXPECTED = {
    "conv_bn_relu_conv": {
        "-": (3, (), ("conv1",), False),
        "conv1": (8, ("conv1",), ("conv2",), True),
        "conv2": (4, ("conv2",), (), False),
    },
    "residual_add": {
        "-": (3, (), ("a",), False),
        "a+b": (8, ("a", "b"), ("b", "c"), True),
        "c": (4, ("c",), (), False),
    },
    "depthwise_block": {
        "-": (3, (), ("pw1",), False),
        "pw1": (8, ("pw1",), ("pw2",), True),
        "pw2": (4, ("pw2",), (), False),
    },
    "concat_branches": {
        "-": (3, (), ("a", "b"), False),
        "a": (8, ("a",), ("c",), True),
        "b": (6, ("b",), ("c",), True),
        "c": (4, ("c",), (), False),
    },
    "flatten_gemm": {
        "-": (1, (), ("conv",), False),
        "conv": (4, ("conv",), ("fc1",), True),
        "fc1": (5, ("fc1",), ("fc2",), True),
        "fc2": (3, ("fc2",), (), False),
    },
    "squeeze_excite": {
        "-": (3, (), ("conv",), False),
        "conv+se_e": (8, ("conv", "se_e"), ("se_s", "c"), True),
        "se_s": (2, ("se_s",), ("se_e",), True),
        "c": (4, ("c",), (), False),
    },
    "conv_transpose_up": {
        "-": (3, (), ("a",), False),
        "a": (8, ("a",), ("up",), True),
        "up": (4, ("up",), ("b",), True),
        "b": (2, ("b",), (), False),
    },
    "matmul_mlp": {
        "-": (6, (), ("fc1",), False),
        "fc1": (8, ("fc1",), ("fc2",), True),
        "fc2": (3, ("fc2",), (), False),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_group_listing(name: str) -> None:
    got = {k: _summary(g) for k, g in by_producer(groups_of(TOPOLOGIES[name]())).items()}
    assert got == EXPECTED[name]


def test_conv_bn_group_holds_every_parameter() -> None:
    group = by_producer(groups_of(conv_bn_relu_conv()))["conv1"]
    roles = sorted((p.node_name, p.role) for p in group.params)
    assert roles == [("bn", "norm_scale"), ("bn", "norm_shift"), ("bn", "norm_stat"), ("bn", "norm_stat"),
                     ("conv1", "bias"), ("conv1", "out"), ("conv2", "in")]
    assert {s.tensor for s in group.spaces if not s.is_param} == {"c1", "b1", "r1"}


def test_depthwise_conv_is_one_group_with_its_neighbours() -> None:
    group = by_producer(groups_of(depthwise_block()))["pw1"]
    assert group.nodes("dw") == ["dw"]
    assert {s.tensor for s in group.spaces if not s.is_param} == {"p1", "r1", "d", "r2"}


def test_concat_segments_map_to_offsets() -> None:
    groups = by_producer(groups_of(concat_branches()))
    w_in = lambda g: next(idx for s, idx in g.indices.items() if s.tensor == "c.w" and s.axis == 1)  # noqa: E731
    assert w_in(groups["a"]).reshape(-1).tolist() == list(range(8))
    assert w_in(groups["b"]).reshape(-1).tolist() == list(range(8, 14))


def test_split_halves_are_separate_groups() -> None:
    groups = groups_of(split_concat())
    conv_a = [g for g in groups if g.nodes("out") == ["a"]]
    assert sorted(g.size for g in conv_a) == [4, 4]
    first = next(g for g in conv_a if "b" in g.nodes("in"))
    second = next(g for g in conv_a if "c" in g.nodes("in"))
    assert first.indices[next(s for s in first.spaces if s.tensor == "a.w")].reshape(-1).tolist() == [0, 1, 2, 3]
    assert second.indices[next(s for s in second.spaces if s.tensor == "a.w")].reshape(-1).tolist() == [4, 5, 6, 7]


def test_slice_splits_the_sliced_channels_off() -> None:
    groups = [g for g in groups_of(slice_branch()) if g.nodes("out") == ["a"]]
    assert sorted((g.size, tuple(g.nodes("in"))) for g in groups) == [(4, ("b", "c")), (4, ("c",))]


def test_flatten_maps_each_channel_to_its_features() -> None:
    group = by_producer(groups_of(flatten_gemm()))["conv"]
    features = next(idx for s, idx in group.indices.items() if s.tensor == "fc1.w")
    assert features.shape == (4, 16)
    assert features[1].tolist() == list(range(16, 32))


@pytest.mark.parametrize("target", ["-1,64", "0,64"])
def test_reshape_into_gemm_maps_like_flatten(target: str) -> None:
    group = by_producer(groups_of(flatten_gemm(reshape=target)))["conv"]
    assert group.prunable
    assert next(idx for s, idx in group.indices.items() if s.tensor == "fc1.w").shape == (4, 16)


def test_graph_output_conv_is_frozen_with_reason() -> None:
    groups = by_producer(groups_of(output_conv()))
    assert groups["conv"].frozen == "graph output ('y')"
    assert groups["conv"].category == "graph output"


def test_op_without_rule_freezes_what_it_touches() -> None:
    model = depthwise_block()
    relu = next(n for n in model.graph.node if n.name == "relu1")
    relu.op_type = "Celu2"  # an op nobody has a rule for
    relu.domain = "custom"
    model.opset_import.append(helper.make_opsetid("custom", 1))
    group = by_producer(groups_of(model))["pw1"]
    assert group.frozen == "no rule for Celu2 (node 'relu1')"


def test_grouped_conv_is_frozen() -> None:
    rng = _rng()
    p = {**_conv(rng, "a", 8, 3), **_conv(rng, "g", 8, 8, 3, 2), **_conv(rng, "c", 4, 8)}
    nodes = [conv_node("a", "x", "a_out"), conv_node("g", "a_out", "g_out", group=2), conv_node("c", "g_out", "y")]
    groups = by_producer(groups_of(make_model(nodes, p)))
    assert groups["a"].category == "grouped Conv"
    assert groups["g"].category == "grouped Conv"


def test_excluded_node_freezes_its_groups() -> None:
    groups = by_producer(groups_of(conv_bn_relu_conv(), exclude_nodes=("conv2",)))
    assert groups["conv1"].frozen == "excluded by the user (node 'conv2')"
