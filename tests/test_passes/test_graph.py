"""GraphIndex, NameAllocator, constant lookup, topological sort, removal and rewiring."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from _helpers import assert_equivalent, op_counts, run_ort
from passes._errors import UnknownNameError, UsageError
from passes._graph import (
    GraphIndex,
    NameAllocator,
    check_names,
    opset_version,
    remove_nodes,
    replace_uses,
    topological_sort,
)

CHAIN = """
<ir_version: 8, opset_import: ["" : 13]>
chain (float[2, 3] x) => (float[2, 3] z) <float[3] bias = {1.0, 2.0, 3.0}>
{
    two = Constant <value_float = 2.0> ()
    y = Mul(x, two)
    i = Identity(y)
    s = Add(i, bias)
    z = Relu(s)
}
"""


def _chain() -> onnx.ModelProto:
    model = onnx.parser.parse_model(CHAIN)
    onnx.checker.check_model(model, full_check=True)
    return model


def _if_model() -> onnx.ModelProto:
    """y = If(cond, then: x * w, else: x) — both branches read outer values x and w."""
    w = numpy_helper.from_array(np.array([1.5, -2.0, 0.5], dtype=np.float32), "w")
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", onnx.TensorProto.FLOAT, [3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", onnx.TensorProto.FLOAT, [3])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Neg", ["x_in"], ["x"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
        ],
        "if_model",
        [
            helper.make_tensor_value_info("x_in", onnx.TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def test_index_maps_producers_consumers_and_constants() -> None:
    model = _chain()
    index = GraphIndex.build(model.graph)
    assert index.producer["y"].op_type == "Mul"
    assert [(n.op_type, slot) for n, slot in index.consumers["two"]] == [("Mul", 1)]
    assert index.graph_inputs == {"x"}
    assert index.graph_outputs == {"z"}
    assert set(index.initializers) == {"bias"}
    np.testing.assert_array_equal(index.constant("bias"), [1.0, 2.0, 3.0])
    assert index.constant("two") == np.float32(2.0)
    assert index.constant("y") is None  # computed, not constant
    assert index.use_count("z") == 1  # read only as a graph output
    assert index.use_count("y") == 1


def test_index_counts_reads_from_subgraphs() -> None:
    model = _if_model()
    index = GraphIndex.build(model.graph)
    # x and w are read only inside the If branches, never as direct node inputs.
    assert "x" not in index.consumers and "w" not in index.consumers
    assert [n.op_type for n in index.users("x")] == ["If", "If"]  # one per branch
    assert index.use_count("w") == 1


def test_name_allocator_avoids_every_name_in_the_model_and_its_subgraphs() -> None:
    model = _if_model()
    names = NameAllocator(model.graph)
    assert names.fresh("t_out") == "t_out__1"  # t_out exists only in a subgraph
    assert names.fresh("t_out") == "t_out__2"
    assert names.fresh("brand new") == "brand_new"
    assert names.fresh("brand new") == "brand_new__1"
    names.reserve("k")
    assert names.fresh("k") == "k__1"


def test_replace_uses_and_remove_nodes_keep_the_numbers() -> None:
    model = _chain()
    before = onnx.ModelProto()
    before.CopyFrom(model)
    index = GraphIndex.build(model.graph)
    identity = index.producer["i"]
    assert replace_uses(model.graph, "i", "y") == 1
    assert remove_nodes(model.graph, [identity]) == 1
    onnx.checker.check_model(model, full_check=True)
    assert op_counts(model) == {"Constant": 1, "Mul": 1, "Add": 1, "Relu": 1}
    assert_equivalent(before, model)


def test_replace_uses_reaches_into_subgraphs_and_respects_shadowing() -> None:
    model = _if_model()
    before = onnx.ModelProto()
    before.CopyFrom(model)
    # Insert x2 = Identity(x) and make everything (including branches) read x2 instead.
    model.graph.node.insert(1, helper.make_node("Identity", ["x"], ["x2"]))
    replace_uses(model.graph, "x", "x2")
    model.graph.node[1].input[0] = "x"  # the new Identity itself still reads x
    onnx.checker.check_model(model, full_check=True)
    branch_inputs = {i for n in model.graph.node[2].attribute for sub in [n.g] for m in sub.node for i in m.input}
    assert "x2" in branch_inputs and "x" not in branch_inputs
    feeds = {"x_in": np.array([1.0, 2.0, 3.0], np.float32)}
    for cond in (True, False):
        feeds["cond"] = np.array(cond)
        assert_equivalent(before, model, feeds)


def test_topological_sort_restores_order_and_detects_cycles() -> None:
    model = _chain()
    before = onnx.ModelProto()
    before.CopyFrom(model)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    topological_sort(model.graph)
    onnx.checker.check_model(model, full_check=True)
    assert_equivalent(before, model)

    cyc = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 13]> g (float[1] x) => (float[1] b) { a = Add(x, b) b = Relu(a) }'
    )
    with pytest.raises(ValueError, match="cycle"):
        topological_sort(cyc.graph)


def test_topological_sort_keeps_a_valid_order_unchanged() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] r, float[2] s)
        {
            a = Neg(x)
            b = Abs(a)
            r = Relu(b)
            s = Sigmoid(b)
        }
        """
    )
    before = model.SerializeToString()
    topological_sort(model.graph)
    assert model.SerializeToString() == before  # stable: both orders are valid, keep the given one


def test_initializer_listed_as_input_is_not_a_constant() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x, float[2] w) => (float[2] y) <float[2] w = {1.0, 2.0}, float[2] k = {3.0, 4.0}>
        {
            t = Mul(x, w)
            y = Add(t, k)
        }
        """
    )
    index = GraphIndex.build(model.graph)
    assert index.overridable == {"w"} and index.graph_inputs == {"x"}
    assert index.constant("w") is None  # the caller may feed another w
    np.testing.assert_array_equal(index.constant("k"), [3.0, 4.0])
    out = run_ort(model, {"x": np.ones(2, np.float32), "w": np.full(2, 5.0, np.float32)})
    np.testing.assert_allclose(out["y"], [8.0, 9.0])  # ORT honours the override


def test_topological_sort_orders_subgraph_reads() -> None:
    model = _if_model()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))  # If (reads x in its branches) before Neg
    topological_sort(model.graph)
    assert [n.op_type for n in model.graph.node] == ["Neg", "If"]
    out = run_ort(model, {"x_in": np.ones(3, np.float32), "cond": np.array(True)})
    np.testing.assert_allclose(out["y"], [-1.5, 2.0, -0.5])


def test_opset_version() -> None:
    model = _chain()
    assert opset_version(model) == 13
    assert opset_version(model, "ai.onnx") == 13
    assert opset_version(model, "com.microsoft") is None


def test_check_names_accepts_nodes_and_op_types_of_the_model_and_its_subgraphs() -> None:
    model = _if_model()
    model.graph.node[0].name = "neg"
    model.graph.node[1].attribute[0].g.node[0].name = "then_mul"  # exists only inside an If branch
    check_names(model, nodes={"--exclude-node": ["neg", "then_mul"]}, ops={"--exclude-op": ["Neg", "Mul", "If"]})
    check_names(model)  # nothing given: nothing to check


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": {"--exclude-node": ["neg", "then_mull"]}},
         "--exclude-node 'then_mull' is not a node of the model (closest: 'then_mul')"),
        ({"ops": {"--block-op": ["Identity", "Mull"]}},
         "--block-op 'Mull' is not an op type of the model (closest: 'Mul')"),
        ({"nodes": {"--block-node": ["zzz"]}}, "--block-node 'zzz' is not a node of the model"),
        # a node name is not an op type, nor the reverse
        ({"ops": {"--exclude-op": ["neg"]}}, "--exclude-op 'neg' is not an op type of the model (closest: 'Neg')"),
        ({"nodes": {"--exclude-node": ["Neg"]}}, "--exclude-node 'Neg' is not a node of the model (closest: 'neg')"),
    ],
)
def test_check_names_refuses_an_unknown_name_naming_the_flag_and_the_closest(kwargs, message) -> None:
    model = _if_model()
    model.graph.node[0].name = "neg"
    model.graph.node[1].attribute[0].g.node[0].name = "then_mul"
    model.graph.node[1].attribute[1].g.node[0].name = "else_id"
    with pytest.raises(UnknownNameError) as err:
        check_names(model, **kwargs)
    assert str(err.value) == message
    assert isinstance(err.value, UsageError)


def test_check_names_offers_at_most_three_closest_names() -> None:
    nodes = [helper.make_node("Relu", [f"x{i}" if i else "x"], [f"x{i + 1}"], name=f"/conv{i}/Relu") for i in range(6)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("x6", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with pytest.raises(UnknownNameError, match=r"\(closest: '/conv\d/Relu', '/conv\d/Relu', '/conv\d/Relu'\)$"):
        check_names(model, nodes={"--exclude-node": ["/conv9/Relu"]})
    with pytest.raises(UnknownNameError, match="^--exclude-node '/conv9/Reluu' is not"):
        check_names(model, nodes={"--exclude-node": ["/conv1/Relu", "/conv9/Reluu"]})
