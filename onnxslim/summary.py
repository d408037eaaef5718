"""What ``onnxslim inspect`` shows: a model's interface, ops, parameters and MACs.

The summary is data first (frozen dataclasses with :meth:`ModelSummary.to_dict`), rendered as
text by :func:`render_summary`. Nothing here runs onnxruntime.

MACs (multiply-accumulates) are counted for the default-domain Conv, ConvTranspose, Gemm and
MatMul nodes of the main graph, from shapes found by ``onnx.shape_inference`` on a light copy
of the model whose dynamic input dims are fixed to the user's ``--shape`` values:

- Conv: ``N·C_out·∏(out spatial)·(C_in/group)·∏(kernel)`` = ``numel(Y)·∏(W.shape[1:])``;
- ConvTranspose: ``N·C_in·∏(in spatial)·(C_out/group)·∏(kernel)``
  = ``numel(X)·∏(W.shape[1:])`` (weight ``[C_in, C_out/group, k…]``);
- Gemm: ``M·K·N`` with ``transA``/``transB`` respected;
- MatMul: ``∏(broadcast batch dims)·M·K·N``; a 1-D operand follows numpy (no M or no N).

A node whose dims are not all known numbers (symbolic, or not inferred) has unknown MACs: the
total is then ``None`` ("unknown") and the number of such nodes is reported. Nothing is guessed.
Reshape before opset 14 ignores shapes computed inside the graph, so for older models whose MACs
stay unknown the light copy is converted to opset 14 (same semantics) and inferred once more.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import onnx
import onnx.version_converter

from onnxslim.runtime import input_specs
from passes._errors import DataError, UsageError
from passes._graph import is_onnx_domain, iter_subgraphs, opset_version

__all__ = [
    "MACS_SCOPE",
    "TensorInfo",
    "ParamStats",
    "OpMacs",
    "ModelSummary",
    "summarize",
    "parameter_stats",
    "dtype_name",
]

_logger = logging.getLogger(__name__)

MACS_SCOPE = "main graph"

_Dim = int | str | None
_Shape = tuple[_Dim, ...]

# Sub-byte element types are stored packed; everything else uses numpy's item size.
_SUB_BYTE_BITS = {
    onnx.TensorProto.UINT4: 4,
    onnx.TensorProto.INT4: 4,
    onnx.TensorProto.FLOAT4E2M1: 4,
    onnx.TensorProto.UINT2: 2,
    onnx.TensorProto.INT2: 2,
    onnx.TensorProto.FLOAT6E2M3: 6,
    onnx.TensorProto.FLOAT6E3M2: 6,
}
# Initializers up to this many elements keep their data in the shape-inference copy (shape
# tensors for Reshape, Slice, Resize…); larger ones become typed graph inputs.
_KEEP_DATA_ELEMENTS = 1024
# The first opset whose Reshape reads shape values propagated through the graph.
_RESHAPE_DATA_OPSET = 14


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A graph input or output.

    Attributes:
        name: the value's name.
        dtype: element type name (``"float32"``, ``"int64"``…), or the kind of a non-tensor.
        shape: dims (an int, a symbolic dim's name, or ``None`` when unnamed and unknown);
            ``None`` when the rank itself is unknown.
    """

    name: str
    dtype: str
    shape: _Shape | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"name", "dtype", "shape"}`` (shape a list or ``None``)."""
        shape = None if self.shape is None else list(self.shape)
        return {"name": self.name, "dtype": self.dtype, "shape": shape}


@dataclasses.dataclass(frozen=True)
class ParamStats:
    """Parameters of one element type (initializers and Constant-node tensors)."""

    dtype: str
    count: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class OpMacs:
    """MACs of one op type in the main graph.

    Attributes:
        op_type: ``Conv``, ``ConvTranspose``, ``Gemm`` or ``MatMul``.
        nodes: number of such nodes.
        macs: their total, or ``None`` when any of them has unknown MACs.
        known_macs: the total over the nodes whose MACs are known.
        unknown_nodes: number of nodes whose MACs are unknown.
    """

    op_type: str
    nodes: int
    macs: int | None
    known_macs: int
    unknown_nodes: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Everything ``onnxslim inspect`` reports about one model.

    Attributes:
        graph_name: the main graph's name.
        ir_version: the model's IR version.
        producer_name: tool that wrote the model (may be empty).
        producer_version: its version (may be empty).
        opsets: domain -> opset version; the default domain is shown as ``"ai.onnx"``.
        inputs: the real graph inputs (initializers excluded).
        outputs: the graph outputs.
        node_count: number of nodes in the main graph.
        op_counts: main-graph node count by op type, largest first; non-default domains are
            keyed ``"domain::Op"``.
        subgraph_nodes: number of nodes inside If/Loop/Scan bodies (at any depth).
        params_by_dtype: parameter count and bytes per element type, largest first.
        total_params: parameters over all initializers and Constant tensors (with subgraphs).
        total_param_bytes: their size in bytes.
        macs_by_op: MACs per op type, largest first.
        total_macs: MACs of the main graph, ``None`` when any node's MACs are unknown.
        known_macs: MACs of the main-graph nodes whose MACs are known.
        macs_unknown_nodes: number of nodes whose MACs are unknown.
        macs_scope: what MACs cover (``"main graph"``: subgraph nodes are not included).
        fixed_shapes: the input shapes given by the caller and used for MACs.
        file_size: size of the model file in bytes, when known.
    """

    graph_name: str
    ir_version: int
    producer_name: str
    producer_version: str
    opsets: Mapping[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    node_count: int
    op_counts: Mapping[str, int]
    subgraph_nodes: int
    params_by_dtype: tuple[ParamStats, ...]
    total_params: int
    total_param_bytes: int
    macs_by_op: tuple[OpMacs, ...]
    total_macs: int | None
    known_macs: int
    macs_unknown_nodes: int
    macs_scope: str
    fixed_shapes: Mapping[str, tuple[int, ...]]
    file_size: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict whose keys are the field names (stable across versions).

        Nested values: ``inputs``/``outputs`` are lists of ``{"name", "dtype", "shape"}``;
        ``params_by_dtype`` maps dtype -> ``{"count", "bytes"}``; ``macs_by_op`` maps op type
        -> ``{"nodes", "macs", "known_macs", "unknown_nodes"}``; ``fixed_shapes`` maps input
        name -> list of dims. Unknown values are ``null``.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["opsets"] = dict(self.opsets)
        out["op_counts"] = dict(self.op_counts)
        out["inputs"] = [t.to_dict() for t in self.inputs]
        out["outputs"] = [t.to_dict() for t in self.outputs]
        out["params_by_dtype"] = {
            p.dtype: {"count": p.count, "bytes": p.bytes} for p in self.params_by_dtype
        }
        out["macs_by_op"] = {
            m.op_type: {k: v for k, v in dataclasses.asdict(m).items() if k != "op_type"}
            for m in self.macs_by_op
        }
        out["fixed_shapes"] = {k: list(v) for k, v in self.fixed_shapes.items()}
        return out


# ----------------------------------------------------------------------------- types and shapes


def dtype_name(elem_type: int) -> str:
    """Name of an ONNX element type as numpy spells it (``FLOAT`` -> ``"float32"``)."""
    if elem_type == onnx.TensorProto.STRING:
        return "string"
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        return f"type{elem_type}"


def _element_bits(elem_type: int) -> int:
    if elem_type in _SUB_BYTE_BITS:
        return _SUB_BYTE_BITS[elem_type]
    try:
        return 8 * onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, ValueError, TypeError):
        return 0


def _type_shape(type_proto: onnx.TypeProto) -> _Shape | None:
    """Dims of a tensor type; ``None`` when it is not a tensor or has no shape."""
    if type_proto.WhichOneof("value") != "tensor_type":
        return None
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[_Dim] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return tuple(dims)


def _value_info(value: onnx.ValueInfoProto) -> TensorInfo:
    kind = value.type.WhichOneof("value")
    if kind == "tensor_type":
        dtype = dtype_name(value.type.tensor_type.elem_type)
    else:
        dtype = (kind or "unknown").removesuffix("_type")
    return TensorInfo(value.name, dtype, _type_shape(value.type))


def _product(dims: Iterator[_Dim] | tuple[_Dim, ...]) -> int | None:
    """Product of dims, or ``None`` if any of them is not a known number."""
    total = 1
    for dim in dims:
        if not isinstance(dim, int):
            return None
        total *= dim
    return total


# ----------------------------------------------------------------------------- ops and params


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if is_onnx_domain(node) else f"{node.domain}::{node.op_type}"


def _walk_subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """Every graph nested in ``graph``'s nodes, at any depth (``graph`` itself excluded)."""
    for node in graph.node:
        for sub in iter_subgraphs(node):
            yield sub
            yield from _walk_subgraphs(sub)


def _op_counts(graph: onnx.GraphProto) -> dict[str, int]:
    counts = Counter(_op_key(node) for node in graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _tensor_params(tensor: onnx.TensorProto) -> tuple[int, int, int]:
    """``(element type, element count, bytes)`` read from dims, without loading the data."""
    count = math.prod(tensor.dims)
    if tensor.data_type == onnx.TensorProto.STRING:
        return tensor.data_type, count, sum(len(s) for s in tensor.string_data)
    return tensor.data_type, count, (count * _element_bits(tensor.data_type) + 7) // 8


def _sparse_params(sparse: onnx.SparseTensorProto) -> tuple[int, int, int]:
    elem, count, nbytes = _tensor_params(sparse.values)
    return elem, count, nbytes + _tensor_params(sparse.indices)[2]


def _constant_params(node: onnx.NodeProto) -> Iterator[tuple[int, int, int]]:
    """Parameters held by a default-domain Constant node's attribute."""
    if node.op_type != "Constant" or not is_onnx_domain(node):
        return
    for attr in node.attribute:
        if attr.name == "value":
            yield _tensor_params(attr.t)
        elif attr.name == "sparse_value":
            yield _sparse_params(attr.sparse_tensor)
        elif attr.name in ("value_float", "value_int"):
            elem = onnx.TensorProto.FLOAT if attr.name == "value_float" else onnx.TensorProto.INT64
            yield elem, 1, _element_bits(elem) // 8
        elif attr.name in ("value_floats", "value_ints"):
            values = attr.floats if attr.name == "value_floats" else attr.ints
            elem = onnx.TensorProto.FLOAT if attr.name == "value_floats" else onnx.TensorProto.INT64
            yield elem, len(values), len(values) * _element_bits(elem) // 8
        elif attr.name in ("value_string", "value_strings"):
            values = [attr.s] if attr.name == "value_string" else list(attr.strings)
            yield onnx.TensorProto.STRING, len(values), sum(len(v) for v in values)


def _graph_params(graph: onnx.GraphProto) -> Iterator[tuple[int, int, int]]:
    yield from (_tensor_params(t) for t in graph.initializer)
    yield from (_sparse_params(t) for t in graph.sparse_initializer)
    for node in graph.node:
        yield from _constant_params(node)


def parameter_stats(model: onnx.ModelProto) -> tuple[ParamStats, ...]:
    """Parameter count and bytes by dtype over initializers and Constant tensors (with subgraphs)."""
    count: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for graph in (model.graph, *_walk_subgraphs(model.graph)):
        for elem, n, b in _graph_params(graph):
            count[dtype_name(elem)] += n
            nbytes[dtype_name(elem)] += b
    order = sorted(count, key=lambda d: (-nbytes[d], d))
    return tuple(ParamStats(d, count[d], nbytes[d]) for d in order)


# ----------------------------------------------------------------------------- shape inference


def _check_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise ``DataError`` naming the input when a given shape cannot be that input's
    (``UsageError`` for a dim below 1)."""
    if not shapes:
        return
    specs = {spec.name: spec for spec in input_specs(model)}
    declared = {v.name: v for v in model.graph.input}
    for name, shape in shapes.items():
        if any(d < 1 for d in shape):
            raise UsageError(f"--shape {name}: every dim must be at least 1, got {min(shape)}")
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(specs) or "none"
            raise DataError(f"--shape names unknown input '{name}' (inputs: {known})")
        declared_shape = _type_shape(declared[name].type)
        if declared_shape is not None and len(shape) != len(declared_shape):
            raise DataError(
                f"--shape {name}: {len(shape)} dims given, the input has {len(spec.dims)} "
                f"({spec.shape_text()})"
            )
        for want, got in zip(spec.dims, shape):
            if isinstance(want, int) and want >= 0 and want != got:  # -1: dynamic (Paddle)
                raise DataError(
                    f"--shape {name}: fixed dim {want} given as {got} ({spec.shape_text()})"
                )


def _light_copy(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]
) -> onnx.ModelProto:
    """A copy for shape inference: large initializers become typed inputs, given dims fixed.

    The model's own ``value_info`` is dropped so that stale intermediate shapes cannot
    contradict the fixed input dims.
    """
    src = model.graph
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = src.name
    graph.node.extend(src.node)
    graph.output.extend(src.output)
    graph.sparse_initializer.extend(src.sparse_initializer)
    graph.input.extend(src.input)
    listed = {v.name for v in src.input}
    for tensor in src.initializer:
        if math.prod(tensor.dims) <= _KEEP_DATA_ELEMENTS:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    for value in graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape
            dims.ClearField("dim")
            for size in shapes[value.name]:
                dims.dim.add().dim_value = size
    return light


def _infer(light: onnx.ModelProto) -> dict[str, _Shape | None]:
    """Value name -> shape in the main graph of ``light`` after ONNX shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(
            light, check_type=False, strict_mode=False, data_prop=True
        )
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as err:
        _logger.warning("shape inference failed, MACs may be unknown: %s", str(err).splitlines()[0])
        inferred = light
    graph = inferred.graph
    table: dict[str, _Shape | None] = {t.name: tuple(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        shape = _type_shape(value.type)
        if shape is not None or value.name not in table:
            table[value.name] = shape
    return table


def _upgraded(light: onnx.ModelProto) -> onnx.ModelProto | None:
    """``light`` converted to opset 14, or ``None`` when the converter refuses it."""
    try:
        return onnx.version_converter.convert_version(light, _RESHAPE_DATA_OPSET)
    except (onnx.version_converter.ConvertError, RuntimeError, ValueError) as err:
        _logger.debug("opset upgrade for shape inference failed: %s", str(err).splitlines()[0])
        return None


def _shape_table(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, _Shape | None]:
    """Value name -> shape in the main graph, with the dims in ``shapes`` fixed.

    Reshape before opset 14 ignores shapes computed in the graph (``Shape -> Gather ->
    Concat``), which leaves everything after a dynamic flatten unknown. When that happens the
    light copy is converted to opset 14 (same semantics) and inferred again.
    """
    light = _light_copy(model, shapes)
    table = _infer(light)
    if (opset_version(model) or _RESHAPE_DATA_OPSET) >= _RESHAPE_DATA_OPSET:
        return table
    if not any(m.unknown_nodes for m in _mac_stats(model.graph, table)):
        return table
    upgraded = _upgraded(light)
    if upgraded is None:
        return table
    found = {name: shape for name, shape in _infer(upgraded).items() if shape is not None}
    return {**table, **found}


# ----------------------------------------------------------------------------- MACs

_ShapeOf = Callable[[str], _Shape | None]


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _conv_macs(node: onnx.NodeProto, shape_of: _ShapeOf) -> int | None:
    """``numel(Y)·∏(W.shape[1:])``: each output element reads ``C_in/group·∏k`` inputs."""
    y, w = shape_of(node.output[0]), shape_of(node.input[1])
    if y is None or w is None or len(w) < 2:
        return None
    return _product((*y, *w[1:]))


def _conv_transpose_macs(node: onnx.NodeProto, shape_of: _ShapeOf) -> int | None:
    """``numel(X)·∏(W.shape[1:])``: each input element feeds ``C_out/group·∏k`` outputs."""
    x, w = shape_of(node.input[0]), shape_of(node.input[1])
    if x is None or w is None or len(w) < 2:
        return None
    return _product((*x, *w[1:]))


def _gemm_macs(node: onnx.NodeProto, shape_of: _ShapeOf) -> int | None:
    """``M·K·N``; A is ``[M, K]`` (``[K, M]`` if transA), B ``[K, N]`` (``[N, K]`` if transB)."""
    a, b = shape_of(node.input[0]), shape_of(node.input[1])
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    m, k_a = (a[1], a[0]) if _attr_int(node, "transA", 0) else a
    k_b, n = (b[1], b[0]) if _attr_int(node, "transB", 0) else b
    return _product((m, k_a if isinstance(k_a, int) else k_b, n))


def _broadcast(x: _Shape, y: _Shape) -> _Shape:
    """Numpy broadcasting of two batch shapes; a dim that cannot be decided is ``None``."""
    rank = max(len(x), len(y))
    x = (1,) * (rank - len(x)) + x
    y = (1,) * (rank - len(y)) + y
    out: list[_Dim] = []
    for p, q in zip(x, y):
        if p == 1 or p == q:
            out.append(q)
        elif q == 1:
            out.append(p)
        elif isinstance(p, int) and isinstance(q, int):
            out.append(None)  # incompatible: not a valid model, never guess
        else:
            out.append(p if isinstance(p, int) else q if isinstance(q, int) else None)
    return tuple(out)


def _matmul_macs(node: onnx.NodeProto, shape_of: _ShapeOf) -> int | None:
    """``∏(broadcast batch)·M·K·N``; a 1-D A has no M, a 1-D B has no N (numpy rules)."""
    a, b = shape_of(node.input[0]), shape_of(node.input[1])
    if not a or not b:
        return None
    m = a[-2] if len(a) >= 2 else 1
    k = a[-1] if isinstance(a[-1], int) else b[-2] if len(b) >= 2 else b[0]
    n = b[-1] if len(b) >= 2 else 1
    return _product((*_broadcast(a[:-2], b[:-2]), m, k, n))


_MAC_RULES: dict[str, Callable[[onnx.NodeProto, _ShapeOf], int | None]] = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
    "Gemm": _gemm_macs,
    "MatMul": _matmul_macs,
}


def _mac_stats(graph: onnx.GraphProto, table: Mapping[str, _Shape | None]) -> tuple[OpMacs, ...]:
    """MACs per op type over the main graph's default-domain nodes."""
    nodes: Counter[str] = Counter()
    known: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for node in graph.node:
        rule = _MAC_RULES.get(node.op_type) if is_onnx_domain(node) else None
        if rule is None:
            continue
        macs = rule(node, table.get)
        nodes[node.op_type] += 1
        if macs is None:
            unknown[node.op_type] += 1
            _logger.debug("MACs of %s '%s' unknown: dims not all known", node.op_type, node.name)
        else:
            known[node.op_type] += macs
    stats = [
        OpMacs(op, nodes[op], None if unknown[op] else known[op], known[op], unknown[op])
        for op in nodes
    ]
    return tuple(sorted(stats, key=lambda m: (-m.known_macs, m.op_type)))


# ----------------------------------------------------------------------------- summarize


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {(entry.domain or "ai.onnx"): int(entry.version) for entry in model.opset_import}


def _inputs(graph: onnx.GraphProto) -> tuple[TensorInfo, ...]:
    inits = {t.name for t in graph.initializer}
    inits.update(t.values.name for t in graph.sparse_initializer)
    return tuple(_value_info(v) for v in graph.input if v.name not in inits)


def summarize(
    model: onnx.ModelProto,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    file_size: int | None = None,
) -> ModelSummary:
    """Summarize ``model``; ``model`` itself is not modified.

    Args:
        model: the model (external data need not be loaded: sizes are read from dims).
        shapes: whole shapes of some inputs (``--shape NAME=D1xD2…``), used to fix their
            dynamic dims before shape inference for MACs.
        file_size: the model file's size in bytes, shown when given.

    Returns:
        The summary; MACs are ``None`` when some dims stay unknown.

    Raises:
        UsageError: a ``shapes`` dim is below 1.
        DataError: ``shapes`` names an unknown input, has the wrong rank, or changes a fixed dim.
        OnnxSlimError: an input is not a tensor while ``shapes`` is given.
    """
    fixed = {name: tuple(int(d) for d in dims) for name, dims in (shapes or {}).items()}
    _check_shapes(model, fixed)
    macs = _mac_stats(model.graph, _shape_table(model, fixed))
    params = parameter_stats(model)
    unknown = sum(m.unknown_nodes for m in macs)
    known = sum(m.known_macs for m in macs)
    return ModelSummary(
        graph_name=model.graph.name,
        ir_version=int(model.ir_version),
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        opsets=_opsets(model),
        inputs=_inputs(model.graph),
        outputs=tuple(_value_info(v) for v in model.graph.output),
        node_count=len(model.graph.node),
        op_counts=_op_counts(model.graph),
        subgraph_nodes=sum(len(g.node) for g in _walk_subgraphs(model.graph)),
        params_by_dtype=params,
        total_params=sum(p.count for p in params),
        total_param_bytes=sum(p.bytes for p in params),
        macs_by_op=macs,
        total_macs=None if unknown else known,
        known_macs=known,
        macs_unknown_nodes=unknown,
        macs_scope=MACS_SCOPE,
        fixed_shapes=fixed,
        file_size=file_size,
    )
