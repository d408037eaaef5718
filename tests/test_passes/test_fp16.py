"""Tests of :mod:`passes.fp16`: typing, Casts, blocking, ranges, subgraphs, weights-only, idempotence.

Tiny models are pinned to IR 8 / opset 17 (13 where an older schema matters) and seeded. Every
converted model passes ``onnx.checker`` (full check) and is compared with its float32 source in
onnxruntime under the pass's tolerance (``rtol=1e-2, atol=1e-3``, STYLE §8d). The zoo tests at the
end are marked ``zoo``.

Run as a script (``PYTHONPATH=tests:. python tests/test_passes/test_fp16.py``), this module prints
the onnxruntime probe table of :mod:`passes.fp16._kernels`.
"""

from __future__ import annotations

import collections
import itertools
import sys
import types
from collections.abc import Mapping

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import TensorProto, defs, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from _helpers import assert_equivalent, op_counts, run_ort
from passes._base import RunContext
from passes._errors import CalibrationError, OnnxSlimError
from passes.fp16 import FP16_TOLERANCE, ConvertFloat16Pass, Fp16Options, ranges_from
from passes.fp16._facts import walk_graphs
from passes.fp16._kernels import ORT_UNSUPPORTED

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


# -- helpers -----------------------------------------------------------------------------------
def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _parse(text: str, opset: int = 17) -> onnx.ModelProto:
    model = onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["" : {opset}]>\n{text}')
    onnx.checker.check_model(model, full_check=True)
    return model


def _model(nodes, inputs, outputs, inits=None, *, opset: int = 17, extra_opsets=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def _info(name: str, shape, elem: int = F32) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _convert(model: onnx.ModelProto, ctx: RunContext | None = None, **options):
    result = ConvertFloat16Pass(Fp16Options(**options)).apply(model, ctx or RunContext())
    onnx.checker.check_model(result.model, full_check=True)
    return result


def _casts(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for g in walk_graphs(model.graph) for n in g.node if n.op_type == "Cast"]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for graph in walk_graphs(inferred.graph):
        for v in (*graph.input, *graph.output, *graph.value_info):
            out[v.name] = v.type.tensor_type.elem_type
        out.update({t.name: t.data_type for t in graph.initializer})
    return out




def assert_no_redundant_casts(model: onnx.ModelProto, original: onnx.ModelProto | None = None) -> None:
    """No Cast→Cast chain, no two Casts of one tensor to one type, no Cast to its input's type —
    among the Casts the pass added (those of ``original`` are the model's own business)."""
    types = _types(model)
    own = {n.output[0] for n in _casts(original)} if original is not None else set()

    def added(node: onnx.NodeProto) -> bool:
        return node.output[0] not in own

    for graph in walk_graphs(model.graph):
        producer = {o: n for n in graph.node for o in n.output}
        seen: dict[tuple[str, int], list[onnx.NodeProto]] = collections.defaultdict(list)
        for node in (n for n in graph.node if n.op_type == "Cast"):
            seen[(node.input[0], node.attribute[0].i)].append(node)
            before = producer.get(node.input[0])
            if before is not None and before.op_type == "Cast":
                assert not (added(node) or added(before)), f"Cast chain {before.name} -> {node.name}"
            if added(node):
                assert types.get(node.input[0]) != node.attribute[0].i, f"{node.name} casts to its input's type"
        duplicates = [key for key, nodes in seen.items() if len(nodes) > 1 and any(map(added, nodes))]
        assert not duplicates, f"tensors cast twice to one type: {duplicates}"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float(np.array_equal(a, b))


def observed_ranges(model: onnx.ModelProto, feeds_list) -> dict[str, tuple[float, float]]:
    """min/max of every float32 tensor of the main graph over ``feeds_list`` (onnxruntime)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    types = _types(model)
    present = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in present and types.get(out) == F32:
                probe.graph.output.append(_info(out, None))
                present.add(out)
    ranges: dict[str, tuple[float, float]] = {}
    for feeds in feeds_list:
        ranges_feed = {k: v for k, v in feeds.items()}
        for name, value in {**run_ort(probe, feeds), **ranges_feed}.items():
            if value.dtype == np.float32 and value.size:
                lo, hi = float(value.min()), float(value.max())
                old = ranges.get(name, (lo, hi))
                ranges[name] = (min(old[0], lo), max(old[1], hi))
    return ranges


# -- basic conversion --------------------------------------------------------------------------
def _conv_relu() -> onnx.ModelProto:
    rng = _rng()
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    inits = {"w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32)}
    return _model(nodes, [_info("x", [1, 2, 5, 5])], [_info("y", [1, 4, 5, 5])], inits)


def test_full_conversion_keeps_float32_io_with_one_cast_each() -> None:
    model = _conv_relu()
    result = _convert(model)
    out = result.model
    assert result.changed
    assert op_counts(out) == {"Cast": 2, "Conv": 1, "Relu": 1}
    assert [i.type.tensor_type.elem_type for i in out.graph.input] == [F32]
    assert [o.name for o in out.graph.output] == ["y"]
    assert out.graph.output[0].type.tensor_type.elem_type == F32
    assert {t.name: t.data_type for t in out.graph.initializer} == {"w": F16, "b": F16}
    assert result.stats["nodes_fp16"] == 2 and result.stats["casts_inserted"] == 2
    assert result.stats["weight_bytes_after"] * 2 == result.stats["weight_bytes_before"]
    assert_equivalent(model, out, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


def test_without_keep_io_types_inputs_and_outputs_become_float16() -> None:
    model = _conv_relu()
    out = _convert(model, keep_io_types=False).model
    assert op_counts(out) == {"Conv": 1, "Relu": 1}
    assert out.graph.input[0].type.tensor_type.elem_type == F16
    assert out.graph.output[0].type.tensor_type.elem_type == F16
    x = _rng().standard_normal((1, 2, 5, 5)).astype(np.float32)
    ref = run_ort(model, {"x": x})["y"]
    got = run_ort(out, {"x": x.astype(np.float16)})["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_input_model_is_not_modified_and_second_run_changes_nothing() -> None:
    model = _conv_relu()
    before = model.SerializeToString()
    first = _convert(model)
    assert model.SerializeToString() == before
    again = _convert(first.model)
    assert not again.changed
    assert again.model.SerializeToString() == first.model.SerializeToString()


def test_model_already_in_float16_is_unchanged() -> None:
    rng = _rng()
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = _model(nodes, [_info("x", [2, 3], F16)], [_info("y", [2, 4], F16)],
                   {"w": rng.standard_normal((3, 4)).astype(np.float16)})
    before = model.SerializeToString()
    for options in ({}, {"keep_io_types": False}, {"weights_only": True}):
        result = _convert(model, **options)
        assert not result.changed
        assert result.model.SerializeToString() == before


def test_graph_output_produced_by_a_converted_node_keeps_its_name_and_type() -> None:
    model = _parse("""
    g (float[2,3] x) => (float[2,3] y, float[2,3] z) {
        y = Relu(x)
        z = Mul(y, y)
    }""")
    out = _convert(model).model
    assert [(o.name, o.type.tensor_type.elem_type) for o in out.graph.output] == [("y", F32), ("z", F32)]
    producer = {o: n for n in out.graph.node for o in n.output}
    assert producer["y"].op_type == "Cast" and producer["z"].op_type == "Cast"
    relu = next(n for n in out.graph.node if n.op_type == "Relu")
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert relu.output[0] != "y" and list(mul.input) == [relu.output[0]] * 2  # reads the fp16 tensor
    assert len(_casts(out)) == 3
    assert_equivalent(model, out, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


def test_tensor_read_by_fp16_and_fp32_nodes_is_cast_once() -> None:
    model = _parse("""
    g (float[2,3] x) => (float[2,3] y, float[2,3] z, float[2,3] w) {
        a = Relu(x)
        y = Sigmoid(a)
        z = Exp(a)
        w = Tanh(a)
    }""")
    model.graph.node[2].name = "keep_me"
    result = _convert(model, block_nodes=("keep_me",))
    out = result.model
    exp = next(n for n in out.graph.node if n.op_type == "Exp")
    to_fp32 = [c for c in _casts(out) if c.input[0] == "a" or c.output[0] == exp.input[0]]
    assert len(to_fp32) == 1 and to_fp32[0].attribute[0].i == F32
    assert result.stats["kept fp32: blocked by user (node)"] == 1
    assert result.stats["kept_fp32"] == [{"node": "keep_me", "op": "Exp", "reason": "blocked by user (node)"}]
    assert_equivalent(model, out, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


def test_block_op_keeps_every_node_of_that_type() -> None:
    model = _parse("""
    g (float[2,3] x) => (float[2,3] y) {
        a = Relu(x)
        b = Sigmoid(a)
        y = Relu(b)
    }""")
    result = _convert(model, block_ops=("Relu",))
    assert result.stats["nodes_fp16"] == 1 and result.stats["nodes_fp32"] == 2
    sig = next(n for n in result.model.graph.node if n.op_type == "Sigmoid")
    assert all(c.input[0] != "x" for c in _casts(result.model))  # x reaches the fp32 Relu as is
    assert op_counts(result.model)["Cast"] == 2 and sig.input[0] != "a"
    assert_equivalent(model, result.model, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(result.model)


# -- constants -----------------------------------------------------------------------------------
def test_constant_nodes_become_float16_tensors() -> None:
    model = _parse("""
    g (float[2,3] x) => (float[2,3] y) {
        c = Constant <value = float[3] {0.5, 1.0, 2.0}> ()
        s = Constant <value_float = 3.0> ()
        v = Constant <value_floats = [0.25, 0.5, 0.75]> ()
        m = Mul(x, c)
        a = Add(m, s)
        y = Sub(a, v)
    }""")
    result = _convert(model)
    out = result.model
    constants = [n for n in out.graph.node if n.op_type == "Constant"]
    assert [(a.name, a.t.data_type) for n in constants for a in n.attribute] == [("value", F16)] * 3
    assert result.stats["constants_converted"] == 3 and result.stats["casts_inserted"] == 2
    assert_equivalent(model, out, tol=FP16_TOLERANCE)


def test_out_of_range_constant_is_kept_and_its_reader_stays_fp32() -> None:
    rng = _rng()
    nodes = [helper.make_node("Mul", ["x", "big"], ["m"], name="scale"),
             helper.make_node("Div", ["m", "big"], ["d"], name="unscale"),
             helper.make_node("Add", ["d", "tiny"], ["y"], name="add")]
    inits = {"big": np.full(3, 1e6, np.float32), "tiny": np.array([1e-9, 1e-6, 0.5], np.float32)}
    model = _model(nodes, [_info("x", [2, 3])], [_info("y", [2, 3])], inits)
    result = _convert(model)
    stats = result.stats
    assert stats["out_of_range"] == [{"tensor": "big", "kind": "initializer", "max_abs": 1e6}]
    assert {k["node"] for k in stats["kept_fp32"]} == {"scale", "unscale"}
    assert stats["kept fp32: reads a constant beyond fp16 range (|x| > 65504)"] == 2
    assert {k["max_abs"] for k in stats["kept_fp32"]} == {1e6}
    inits_out = {t.name: t for t in result.model.graph.initializer}
    assert inits_out["big"].data_type == F32  # not clamped to 1e4 (onnxconverter-common's default)
    assert numpy_helper.to_array(inits_out["big"]).tolist() == [1e6] * 3
    assert stats["flushed_to_zero"] == 1 and stats["subnormal_values"] == 1  # 1e-9 -> 0, 1e-6 subnormal
    assert numpy_helper.to_array(inits_out["tiny"]).tolist()[0] == 0.0
    assert_equivalent(model, result.model, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(result.model)


def test_cast_feeding_fp16_and_fp32_readers_is_not_chained() -> None:
    model = _parse("""
    g (int64[3] n, float[3] x) => (float[3] y, float[3] z) {
        f = Cast <to = 1> (n)
        y = Mul(f, x)
        z = Sqrt(f)
    }""")
    out = _convert(model, block_ops=("Sqrt",)).model
    assert_no_redundant_casts(out)
    from_n = sorted(c.attribute[0].i for c in _casts(out) if c.input[0] == "n")
    assert from_n == [F32, F16]  # the original Cast, and its float16 sibling read by Mul
    feeds = {"n": np.array([1, 4, 9], np.int64), "x": np.array([0.5, 1.5, -2.0], np.float32)}
    assert_equivalent(model, out, feeds, tol=FP16_TOLERANCE)


# -- schema-driven typing ------------------------------------------------------------------------
def _naive_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """What a converter that ignores schemas does: every float32 tensor becomes float16."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for graph in walk_graphs(out.graph):
        for init in graph.initializer:
            if init.data_type == F32:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
        for node in graph.node:
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == F32:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.type.tensor_type.elem_type == F32:
                value.type.tensor_type.elem_type = F16
    return out


def _resize_range() -> onnx.ModelProto:
    return _parse("""
    g (float[1,1,4,4] x) => (float[1,1,8,8] y) {
        scales = Constant <value = float[4] {1.0, 1.0, 2.0, 2.0}> ()
        r = Resize <mode = "nearest"> (x, , scales)
        zero = Constant <value = float {0.0}> ()
        eight = Constant <value = float {8.0}> ()
        step = Constant <value = float {1.0}> ()
        ramp = Range(zero, eight, step)
        y = Add(r, ramp)
    }""")


def test_resize_scales_and_range_stay_float32_where_a_naive_converter_breaks() -> None:
    model = _resize_range()
    naive = _naive_fp16(model)
    with pytest.raises(onnx.shape_inference.InferenceError, match="Range"):
        onnx.checker.check_model(naive, full_check=True)
    with pytest.raises(OnnxSlimError, match="scales"):
        run_ort(naive, {"x": np.zeros((1, 1, 4, 4), np.float16)})
    result = _convert(model)
    out = result.model
    resize = next(n for n in out.graph.node if n.op_type == "Resize")
    types = _types(out)
    assert types[resize.input[0]] == F16 and types[resize.input[2]] == F32  # X fp16, scales float
    assert [k["op"] for k in result.stats["kept_fp32"]] == ["Range"]
    assert result.stats["kept fp32: schema: Range type T does not allow float16"] == 1
    assert_equivalent(model, out, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


def test_topk_and_nms_index_inputs_keep_their_types() -> None:
    model = _parse("""
    g (float[1,6,4] boxes, float[1,1,6] scores) => (float[1,1,3] top, int64[1,1,3] idx, int64[n,3] keep) {
        half = Constant <value = float {0.5}> ()
        b = Mul(boxes, half)
        s = Sigmoid(scores)
        k = Constant <value = int64[1] {3}> ()
        top, idx = TopK <axis = -1> (s, k)
        limit = Constant <value = int64[1] {4}> ()
        iou = Constant <value = float[1] {0.5}> ()
        keep = NonMaxSuppression(b, s, limit, iou)
    }""")
    result = _convert(model)
    out = result.model
    types = _types(out)
    topk = next(n for n in out.graph.node if n.op_type == "TopK")
    nms = next(n for n in out.graph.node if n.op_type == "NonMaxSuppression")
    assert types[topk.input[0]] == F16 and types[topk.input[1]] == TensorProto.INT64
    assert [types[i] for i in nms.input] == [F32, F32, TensorProto.INT64, F32]
    assert {t.name: t.data_type for t in out.graph.initializer} == {}
    rng = _rng()
    corners = np.sort(rng.uniform(0, 10, (1, 6, 2, 2)), axis=2).reshape(1, 6, 4).astype(np.float32)
    feeds = {"boxes": corners, "scores": rng.standard_normal((1, 1, 6)).astype(np.float32)}
    assert_equivalent(model, out, feeds, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


def test_custom_domain_node_reads_float32() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Gelu", ["a"], ["b"], domain="com.microsoft"),
             helper.make_node("Relu", ["b"], ["y"])]
    model = _model(nodes, [_info("x", [2, 3])], [_info("y", [2, 3])], extra_opsets={"com.microsoft": 1})
    result = ConvertFloat16Pass().apply(model, RunContext())
    out = result.model
    gelu = next(n for n in out.graph.node if n.op_type == "Gelu")
    assert _types(out).get(gelu.input[0], F32) == F32
    assert result.stats["kept fp32: custom domain 'com.microsoft'"] == 1
    assert_equivalent(model, out, tol=FP16_TOLERANCE)


# -- subgraphs -------------------------------------------------------------------------------------
def _if_model() -> onnx.ModelProto:
    return _parse("""
    g (bool cond, float[2,3] x) => (float[2,3] y) {
        w = Constant <value = float[3] {0.5, -1.0, 2.0}> ()
        y = If (cond) <
            then_branch = then_g () => (float[2,3] a) { a = Mul(x, w) },
            else_branch = else_g () => (float[2,3] b) { t = Relu(x)  b = Add(t, w) }
        >
    }""")


def test_if_branches_reading_outer_values_are_converted() -> None:
    model = _if_model()
    result = _convert(model)
    out = result.model
    if_node = next(n for n in out.graph.node if n.op_type == "If")
    branches = [a.g for a in if_node.attribute]
    assert all("Cast" not in op_counts_of(g) for g in branches)  # both produce fp16: If output fp16
    assert all(g.output[0].type.tensor_type.elem_type == F16 for g in branches)
    x16 = next(c.output[0] for c in out.graph.node if c.op_type == "Cast" and c.input[0] == "x")
    assert next(n for n in branches[0].node if n.op_type == "Mul").input[0] == x16  # outer fp16 version
    assert op_counts(out) == {"Constant": 1, "Cast": 2, "If": 1}
    rng = _rng()
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": rng.standard_normal((2, 3)).astype(np.float32)}
        assert_equivalent(model, out, feeds, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)
    assert not _convert(out).changed


def op_counts_of(graph: onnx.GraphProto) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in graph.node))


def test_if_with_a_blocked_branch_casts_inside_the_other() -> None:
    model = _if_model()
    model.graph.node[1].attribute[1].g.node[0].name = "keep_relu"
    out = _convert(model, block_nodes=("keep_relu",)).model
    if_node = next(n for n in out.graph.node if n.op_type == "If")
    then_g, else_g = (a.g for a in if_node.attribute)
    assert then_g.output[0].type.tensor_type.elem_type == F16  # Add still runs in fp16 in the else branch
    assert op_counts_of(else_g) == {"Relu": 1, "Add": 1, "Cast": 1}  # Relu's fp32 result cast to fp16
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": _rng().standard_normal((2, 3)).astype(np.float32)}
        assert_equivalent(model, out, feeds, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


def test_loop_body_with_outer_reads_keeps_the_loop_interface() -> None:
    model = _parse("""
    g (int64 n, float[3] x0) => (float[3] y) {
        w = Constant <value = float[3] {0.5, 0.25, 2.0}> ()
        keep_going = Constant <value = bool {1}> ()
        y = Loop (n, keep_going, x0) <body = body (int64 i, bool c, float[3] v) => (bool c_out, float[3] v_out) {
            c_out = Identity(c)
            t = Mul(v, w)
            v_out = Add(t, w)
        }>
    }""")
    result = _convert(model)
    out = result.model
    loop = next(n for n in out.graph.node if n.op_type == "Loop")
    body = loop.attribute[0].g
    assert [v.type.tensor_type.elem_type for v in body.input] == [TensorProto.INT64, TensorProto.BOOL, F32]
    assert [v.type.tensor_type.elem_type for v in body.output] == [TensorProto.BOOL, F32]
    assert op_counts_of(body) == {"Identity": 1, "Mul": 1, "Add": 1, "Cast": 2}
    w = next(n for n in out.graph.node if n.op_type == "Constant" and n.output[0] == "w")
    assert w.attribute[0].t.data_type == F16
    feeds = {"n": np.array(3, np.int64), "x0": np.array([1.0, -2.0, 0.5], np.float32)}
    assert_equivalent(model, out, feeds, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)
    assert not _convert(out).changed


def test_scan_body_is_converted_behind_its_float32_interface() -> None:
    model = _parse("""
    g (float[2] init, float[4,2] xs) => (float[2] final, float[4,2] ys) {
        final, ys = Scan <num_scan_inputs = 1, body = body (float[2] s, float[2] x) => (float[2] s_out, float[2] y) {
            s_out = Add(s, x)
            y = Relu(s_out)
        }> (init, xs)
    }""")
    result = _convert(model)
    body = next(a.g for a in result.model.graph.node[0].attribute if a.name == "body")
    assert op_counts_of(body) == {"Cast": 4, "Add": 1, "Relu": 1}  # two inputs in, two outputs out
    assert result.stats["nodes_fp16"] == 2
    assert_equivalent(model, result.model, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(result.model)


def test_constant_of_shape_value_becomes_float16() -> None:
    model = _parse("""
    g (float[2,3] x) => (float[2,3] y) {
        shp = Shape(x)
        c = ConstantOfShape <value = float[1] {2.5}> (shp)
        zeros = ConstantOfShape (shp)
        m = Mul(x, c)
        y = Add(m, zeros)
    }""")
    out = _convert(model).model
    values = [a.t.data_type for n in out.graph.node if n.op_type == "ConstantOfShape" for a in n.attribute]
    assert values == [F16, F16]
    shape = next(n for n in out.graph.node if n.op_type == "Shape")
    assert shape.input[0] == "x"  # Shape reads x in whatever type it has: no Cast for it
    assert_equivalent(model, out, tol=FP16_TOLERANCE)


def _wrap_in_if(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``'s graph as the then-branch of an If on a new bool input (else: zeros)."""
    graph = model.graph
    then_g = helper.make_graph(list(graph.node), "then", [], list(graph.output), list(graph.initializer))
    zero_nodes, zero_outs = [], []
    for k, out in enumerate(graph.output):
        name = f"zero_{k}"
        shape = [d.dim_value or 1 for d in out.type.tensor_type.shape.dim]
        zeros = numpy_helper.from_array(np.zeros(shape, np.float32))
        zero_nodes.append(helper.make_node("Constant", [], [name], value=zeros))
        zero_outs.append(_info(name, shape))
    else_g = helper.make_graph(zero_nodes, "else", [], zero_outs)
    outs = [o.name + "_wrapped" for o in graph.output]
    node = helper.make_node("If", ["run"], outs, then_branch=then_g, else_branch=else_g)
    inputs = [_info("run", [], TensorProto.BOOL), *graph.input]
    shapes = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output]
    outer = helper.make_graph([node], "wrapped", inputs, [_info(n, s) for n, s in zip(outs, shapes)])
    return helper.make_model(outer, opset_imports=model.opset_import, ir_version=model.ir_version)


def test_a_whole_model_inside_an_if_branch() -> None:
    model = _wrap_in_if(_conv_relu())
    out = _convert(model).model
    feeds = {"run": np.array(True), "x": _rng().standard_normal((1, 2, 5, 5)).astype(np.float32)}
    assert_equivalent(model, out, feeds, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(out)


# -- range-aware blocking --------------------------------------------------------------------------
def _overflow_model() -> onnx.ModelProto:
    # Reshape has a native float16 kernel in onnxruntime's CPU provider, so the float16 sum is
    # materialized there (elsewhere onnxruntime computes fp16 nodes in fp32 and may drop the
    # Cast pair between two of them, hiding the overflow; a GPU provider would not).
    return _parse("""
    g (float[1,64] x) => (float[1] y) {
        k = Constant <value = float {100000.0}> ()
        big = Mul(x, k)
        s = ReduceSum <keepdims = 0> (big)
        one = Constant <value = int64[1] {1}> ()
        y = Reshape(s, one)
    }""")


def test_overflowing_reduction_is_kept_fp32_with_ranges_and_breaks_without() -> None:
    model = _overflow_model()
    x = _rng().uniform(0.05, 0.3, (1, 64)).astype(np.float32)  # x·1e5 fits, the sum does not
    ref = run_ort(model, {"x": x})["y"]
    assert abs(float(ref[0])) > 65504  # the sum does not fit float16

    plain = _convert(model)
    assert [k["node"] for k in plain.stats["kept_fp32"]] == ["Mul:big"]  # only the 1e5 constant's reader
    assert not np.isfinite(run_ort(plain.model, {"x": x})["y"]).all()  # fp16 ReduceSum overflows
    with np.errstate(over="ignore"):
        spec = ReferenceEvaluator(plain.model).run(None, {"x": x})[0]
    assert not np.isfinite(spec).all()  # so says the ONNX reference implementation

    ranges = observed_ranges(model, [{"x": x}])
    guarded = _convert(model, ranges=ranges)
    kept = {k["op"]: k for k in guarded.stats["kept_fp32"]}
    assert set(kept) == {"Mul", "ReduceSum", "Reshape"}
    assert kept["ReduceSum"]["reason"].startswith("observed range exceeds fp16 safe range")
    assert kept["ReduceSum"]["tensor"] == "s" and kept["ReduceSum"]["range"][1] == pytest.approx(float(ref[0]))
    assert guarded.stats["casts_inserted"] == 0
    assert_equivalent(model, guarded.model, {"x": x}, tol=FP16_TOLERANCE)


def test_ranges_come_from_the_run_context_calibration_table() -> None:
    from calibration.table import CalibrationTable, TensorRange

    model = _overflow_model()
    x = _rng().uniform(0.05, 0.3, (1, 64)).astype(np.float32)  # x·1e5 fits, the sum does not
    observed = observed_ranges(model, [{"x": x}])
    table = CalibrationTable("sha", "minmax", 1, {k: TensorRange(*v) for k, v in observed.items()})
    assert ranges_from(table) == observed
    result = _convert(model, RunContext(calibration=table))
    assert {k["op"] for k in result.stats["kept_fp32"]} == {"Mul", "ReduceSum", "Reshape"}


def test_an_empty_calibration_table_is_an_error_not_a_crash() -> None:
    """A table that observed nothing used to crash ('CalibrationTable' object is not iterable)."""
    from calibration.table import CalibrationTable

    empty = CalibrationTable("sha", "minmax", 4, {})
    assert ranges_from(empty) == {}
    with pytest.raises(CalibrationError, match="holds no tensor ranges"):
        _convert(_overflow_model(), RunContext(calibration=empty))
    weights_only = _convert(_overflow_model(), RunContext(calibration=empty), weights_only=True)
    assert weights_only.stats["mode"] == "weights-only"  # ranges are not used there


def test_ranges_from_reads_mappings_and_range_objects() -> None:
    assert ranges_from({"x": (-1, 2)}) == {"x": (-1.0, 2.0)}
    assert ranges_from(types.SimpleNamespace(ranges={"a": (0, 1)})) == {"a": (0.0, 1.0)}
    assert ranges_from(None) == {}


def test_mean_reduction_whose_accumulator_would_overflow_is_kept() -> None:
    model = _parse("""
    g (float[1,4096] x) => (float[1,1] y, float[1,1] z) {
        y = ReduceMean <axes = [1]> (x)
        z = ReduceMax <axes = [1]> (x)
    }""", opset=13)
    ranges = {"x": (0.0, 100.0), "y": (40.0, 60.0), "z": (99.0, 100.0)}
    result = _convert(model, ranges=ranges)
    assert [(k["op"], k["accumulator"]) for k in result.stats["kept_fp32"]] == [("ReduceMean", 60.0 * 4096)]


def test_safe_max_is_the_threshold() -> None:
    model = _parse("""
    g (float[4] x) => (float[4] y) {
        y = Relu(x)
    }""")
    ranges = {"x": (-1.0, 40000.0), "y": (0.0, 40000.0)}
    assert _convert(model, ranges=ranges).stats["nodes_fp32"] == 1  # default: 65504 / 2
    assert _convert(model, ranges=ranges, safe_max=60000.0).stats["nodes_fp32"] == 0


# -- weights-only ----------------------------------------------------------------------------------
def test_weights_only_stores_fp16_and_casts_each_weight_once() -> None:
    model = _conv_relu()
    result = _convert(model, weights_only=True, min_weight_elements=4)
    out = result.model
    assert op_counts(out) == {"Cast": 2, "Conv": 1, "Relu": 1}
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert sorted(inits.values()) == [F16, F16]
    producer = {o: n for n in out.graph.node for o in n.output}
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert list(conv.input) == ["x", "w", "b"]  # readers unchanged: the Casts keep the names
    assert all(producer[n].op_type == "Cast" and producer[n].attribute[0].i == F32 for n in ("w", "b"))
    assert out.graph.input[0].type.tensor_type.elem_type == F32
    assert result.stats["weights_converted"] == 2 and result.stats["mode"] == "weights-only"
    assert_equivalent(model, out, tol=FP16_TOLERANCE)
    assert not _convert(out, weights_only=True).changed


def test_weights_only_leaves_small_overridable_and_out_of_range_tensors() -> None:
    rng = _rng()
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["a"]),
             helper.make_node("Mul", ["a", "huge"], ["p"]), helper.make_node("Mul", ["p", "scale"], ["y"])]
    inits = {"w": rng.standard_normal((4, 32)).astype(np.float32), "bias": rng.standard_normal(32).astype(np.float32),
             "huge": np.full(32, 1e5, np.float32), "scale": np.array(0.5, np.float32)}
    model = _model(nodes, [_info("x", [2, 4]), _info("bias", [32])], [_info("y", [2, 32])], inits)
    result = _convert(model, weights_only=True)
    stats = result.stats
    assert stats["weights_converted"] == 1  # w only
    assert stats["skipped: overridable (graph input)"] == 1 and stats["skipped: smaller than min_weight_elements"] == 1
    assert stats["out_of_range"] == [{"tensor": "huge", "kind": "initializer", "max_abs": 1e5}]
    assert_equivalent(model, result.model, {"x": rng.standard_normal((2, 4)).astype(np.float32)}, tol=FP16_TOLERANCE)


def test_weights_only_converts_constant_nodes_inside_subgraphs() -> None:
    model = _parse("""
    g (bool cond, float[2,16] x) => (float[2,16] y) {
        y = If (cond) <
            then_branch = then_g () => (float[2,16] a) {
                w = Constant <value = float[16] {1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16}> ()
                a = Mul(x, w)
            },
            else_branch = else_g () => (float[2,16] b) { b = Identity(x) }
        >
    }""")
    result = _convert(model, weights_only=True)
    assert result.stats["weights_converted"] == 1
    then_g = result.model.graph.node[0].attribute[0].g
    assert op_counts_of(then_g) == {"Constant": 1, "Cast": 1, "Mul": 1}
    feeds = {"cond": np.array(True), "x": _rng().standard_normal((2, 16)).astype(np.float32)}
    assert_equivalent(model, result.model, feeds, tol=FP16_TOLERANCE)


# -- the pipeline, the bundled LeNet-5 ----------------------------------------------------------
def test_pipeline_verifies_the_conversion(lenet_path) -> None:
    from onnxslim.pipeline import run_pipeline

    model = onnx.load(lenet_path)
    data = np.load(lenet_path.with_name("lenet5_digits_test.npz"))
    feeds = [{"input": data["input"][i:i + 8]} for i in range(0, 32, 8)]
    for options in (Fp16Options(), Fp16Options(weights_only=True)):
        report = run_pipeline(model, [ConvertFloat16Pass(options)], RunContext(), verify_feeds=feeds)
        assert report.steps[0].verified == "passed"
        again = run_pipeline(report.model, [ConvertFloat16Pass(options)], RunContext(), verify_feeds=feeds)
        assert again.steps[0].verified == "unchanged"


@pytest.mark.parametrize("weights_only", [False, True], ids=["full", "weights-only"])
def test_lenet_accuracy_is_kept(lenet_path, weights_only: bool) -> None:
    model = onnx.load(lenet_path)
    data = np.load(lenet_path.with_name("lenet5_digits_test.npz"))
    result = _convert(model, weights_only=weights_only)
    ref = run_ort(model, {"input": data["input"]})["logits"]
    got = run_ort(result.model, {"input": data["input"]})["logits"]
    accuracy = [float(np.mean(np.argmax(v, axis=1) == data["labels"])) for v in (ref, got)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.005
    if weights_only:
        assert round(accuracy[0], 3) == round(accuracy[1], 3)
    assert _cosine(ref, got) >= 0.999
    assert result.stats["weight_bytes_after"] <= result.stats["weight_bytes_before"] * 0.51


# -- the onnxruntime probe behind passes.fp16._kernels -----------------------------------------------
_F, _H = "tensor(float)", "tensor(float16)"
_PROBE_ATTRS = {
    "AveragePool": {"kernel_shape": [1, 1]}, "MaxPool": {"kernel_shape": [1, 1]}, "LpPool": {"kernel_shape": [1, 1]},
    "MaxUnpool": {"kernel_shape": [1, 1]}, "MaxRoiPool": {"pooled_shape": [1, 1]}, "Concat": {"axis": 0},
    "DepthToSpace": {"blocksize": 1}, "SpaceToDepth": {"blocksize": 1}, "Einsum": {"equation": "ij->ij"},
    "GroupNormalization": {"num_groups": 1}, "LRN": {"size": 1}, "TopK": {"k": 1}, "Unsqueeze": {"axes": [0]},
    "Pad": {"pads": [0, 0]}, "Slice": {"starts": [0], "ends": [1]}, "Upsample": {"scales": [1.0, 1.0]},
    "BitShift": {"direction": "LEFT"}, "RandomNormal": {"shape": [1]}, "RandomUniform": {"shape": [1]},
    "LSTM": {"hidden_size": 1}, "GRU": {"hidden_size": 1}, "RNN": {"hidden_size": 1},
    "LinearAttention": {"q_num_heads": 1, "kv_num_heads": 1},
}
_ELEM = {"tensor(float)": F32, "tensor(float16)": F16, "tensor(double)": TensorProto.DOUBLE,
         "tensor(int64)": TensorProto.INT64, "tensor(int32)": TensorProto.INT32, "tensor(bool)": TensorProto.BOOL,
         "tensor(uint8)": TensorProto.UINT8, "tensor(int8)": TensorProto.INT8}
_OTHER = ("tensor(int64)", "tensor(int32)", "tensor(bool)", "tensor(uint8)")  # for variables without float


def _probe_model(schema: defs.OpSchema, binding: Mapping[str, str]) -> onnx.ModelProto | None:
    """A one-node model of ``schema`` with its type variables bound as ``binding`` says."""
    inputs, infos = [], []
    for k, param in enumerate(schema.inputs):
        optional = param.option == defs.OpSchema.FormalParameterOption.Optional
        if optional and binding.get(param.type_str) not in (_F, _H) and not (schema.name == "Resize" and k == 2):
            inputs.append("")
            continue
        elem = _ELEM.get(binding.get(param.type_str, param.type_str))
        if elem is None:
            return None
        inputs.append(f"i{k}")
        infos.append(helper.make_tensor_value_info(f"i{k}", elem, None))
    while inputs and not inputs[-1]:
        inputs.pop()
    outputs, out_infos = [], []
    for k, param in enumerate(schema.outputs):
        if k and param.option == defs.OpSchema.FormalParameterOption.Optional:
            break
        elem = _ELEM.get(binding.get(param.type_str, param.type_str))
        if elem is None:
            return None
        outputs.append(f"o{k}")
        out_infos.append(helper.make_tensor_value_info(f"o{k}", elem, None))
    attrs = {k: v for k, v in _PROBE_ATTRS.get(schema.name, {}).items() if k in schema.attributes}
    out_type = _ELEM.get(binding.get(schema.outputs[0].type_str, schema.outputs[0].type_str), F32)
    if schema.name == "Cast":
        attrs["to"] = out_type
    elif schema.name == "ConstantOfShape":
        attrs["value"] = numpy_helper.from_array(np.zeros(1, helper.tensor_dtype_to_np_dtype(out_type)))
    attrs.update({key: out_type for key in ("dtype", "output_datatype") if key in schema.attributes})
    graph = helper.make_graph([helper.make_node(schema.name, inputs, outputs, **attrs)], "probe", infos, out_infos)
    version = max(schema.since_version, 7)
    opset = [helper.make_opsetid("", version)]
    return helper.make_model(graph, opset_imports=opset, ir_version=10 if version > 18 else 8)


def _loads(model: onnx.ModelProto | None) -> bool:
    if model is None:
        return False
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal counts
        return False
    return True


def probe_unsupported() -> dict[tuple[str, int], list[frozenset[str]]]:
    """(op, since_version) -> float16 bindings the installed onnxruntime refuses (see _kernels)."""
    found = {}
    for schema in defs.get_all_schemas_with_history():
        if schema.domain or schema.deprecated or schema.name in ("If", "Loop", "Scan", "SequenceMap", "Constant"):
            continue
        if schema.since_version < 7:
            try:
                if defs.get_schema(schema.name, 7, "").since_version != schema.since_version:
                    continue
            except defs.SchemaError:
                continue
        allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
        capable = sorted(v for v, types in allowed.items() if _F in types and _H in types)
        base = {v: _F if _F in types else next((t for t in _OTHER if t in types), types[0])
                for v, types in allowed.items()}
        if not capable or not _loads(_probe_model(schema, base)):
            continue
        bad = [frozenset(subset) for n in range(1, len(capable) + 1) for subset in itertools.combinations(capable, n)
               if not _loads(_probe_model(schema, base | {v: _H for v in subset}))]
        if bad:
            found[(schema.name, schema.since_version)] = bad
    return found


def test_every_float16_binding_onnxruntime_refuses_is_in_the_table() -> None:
    missing = {key: [sorted(s) for s in bad if s not in ORT_UNSUPPORTED.get(key, ())]
               for key, bad in probe_unsupported().items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"onnxruntime {ort.__version__} refuses float16 bindings not in _kernels: {missing}"


if __name__ == "__main__":  # regenerate passes.fp16._kernels.ORT_UNSUPPORTED
    for key, bad in sorted(probe_unsupported().items()):
        sets = ", ".join("frozenset({" + ", ".join(f'"{v}"' for v in sorted(s)) + "})" for s in bad)
        print(f"    {key!r}: ({sets},),", file=sys.stdout)


# -- real models (zoo) -----------------------------------------------------------------------------
def _zoo_feeds(name: str) -> dict[str, np.ndarray]:
    """Realistic inputs: OCR images normalized to [-1, 1], YOLO images in [0, 1], audio for Silero."""
    rng = np.random.default_rng(0)
    shapes = {"ppocr-det": (1, 3, 320, 320), "ppocr-rec": (1, 3, 48, 320), "ppocr-cls": (1, 3, 48, 192)}
    if name in shapes:
        return {"x": rng.uniform(-1, 1, shapes[name]).astype(np.float32)}
    if name == "yolov8n-nudenet":
        return {"images": rng.uniform(0, 1, (1, 3, 320, 320)).astype(np.float32)}
    return {"input": (0.1 * rng.standard_normal((1, 576))).astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}


ZOO = ["ppocr-det", "ppocr-rec", "ppocr-cls", "yolov8n-nudenet", "silero-vad"]
MODES = {
    "full": {},
    "full-ranges": {"ranges": "observed"},
    "weights-only": {"weights_only": True},
}


def _check_real_conversion(model: onnx.ModelProto, feeds: dict[str, np.ndarray], options: dict) -> dict:
    if options.get("ranges") == "observed":
        options = options | {"ranges": observed_ranges(model, [feeds])}
    result = _convert(model, **options)  # full checker inside
    ref, got = run_ort(model, feeds), run_ort(result.model, feeds)
    for name, value in ref.items():
        if value.dtype == np.float32:
            assert got[name].dtype == np.float32
            assert _cosine(value, got[name]) >= 0.999, name
    assert_equivalent(model, result.model, feeds, tol=FP16_TOLERANCE)
    assert_no_redundant_casts(result.model, model)
    assert not ConvertFloat16Pass(Fp16Options(**options)).apply(result.model, RunContext()).changed
    return result.stats


@pytest.mark.zoo
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_converts(name: str, mode: str, zoo_model) -> None:
    model = onnx.load(zoo_model(name))
    stats = _check_real_conversion(model, _zoo_feeds(name), dict(MODES[mode]))
    assert stats["weight_bytes_after"] <= 0.51 * stats["weight_bytes_before"]


@pytest.mark.zoo
def test_ppocr_det_variance_beyond_fp16_is_kept_not_clamped(zoo_model) -> None:
    result = _convert(onnx.load(zoo_model("ppocr-det")))
    assert [(e["tensor"], e["kind"]) for e in result.stats["out_of_range"]] == [("batch_norm_0.w_2", "Constant")]
    assert [k["op"] for k in result.stats["kept_fp32"]] == ["BatchNormalization"]


@pytest.mark.zoo
@pytest.mark.parametrize("weights_only", [False, True], ids=["full", "weights-only"])
def test_silero_wrapped_in_an_if_converts(zoo_model, weights_only: bool) -> None:
    model = _wrap_in_if(onnx.load(zoo_model("silero-vad")))
    feeds = {"run": np.array(True), **_zoo_feeds("silero-vad")}
    _check_real_conversion(model, feeds, {"weights_only": weights_only})
