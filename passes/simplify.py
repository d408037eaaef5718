"""Simplify a model without changing what it computes: onnxsim first, then our own rewrites.

Rewrites (each is exact in real arithmetic; only float rounding differs):

1. **onnxsim** (constant folding, dead-code elimination, its own fusions) on a copy of the model,
   with its random-input check off (the pipeline verifies), subgraphs left alone, its console
   output captured and logged at DEBUG. Its result is kept only when the model's interface
   (input/output names and element types, opset, IR version) is unchanged, it has no more
   nodes than its input, and it differs from its input in more than node names or value_info.
   The original input/output declarations and ``metadata_props`` are restored on the result,
   so dynamic dims stay dynamic.
2. **BatchNormalization folding** into the producer of its input when that producer's output
   is read by the BN only, with ``f = γ / √(σ² + ε)`` per channel:

   - ``Conv`` (any ``group``; W is ``[C_out, C_in/group, k…]``):
     ``W'[c] = W[c]·f[c]``, ``B' = (B − μ)·f + β`` (``B = 0`` when absent).
   - ``ConvTranspose`` (W is ``[C_in, C_out/group, k…]``; output channel
     ``c = g·(C_out/group) + j`` comes from ``W[g·(C_in/group):(g+1)·(C_in/group), j]``):
     ``W'[i, j] = W[i, j]·f[g(i)·(C_out/group) + j]``, ``B'`` as for Conv.
   - ``Gemm`` (``Y = α·A'·B' + β_g·C``, ``B' = Bᵀ`` when ``transB``): scale column ``n`` of
     ``B'`` by ``f[n]`` and set ``C' = (β_g·C − μ)·f + β`` with ``beta = 1``; C of shape
     ``[N]``, ``[1, N]``, a scalar or absent.

   New weights are written as new initializers; shared ones are never mutated.
3. **Identity / inference Dropout removal**: readers of ``y = Identity(x)`` read ``x``. When
   ``y`` is a graph output, ``x``'s producer is renamed to output ``y`` instead, so output names
   are kept; from a graph input or initializer straight to a graph output, the node stays.
   Dropout is an identity when it cannot be in training mode (opset < 7: ``is_test=1``;
   opset ≥ 12: ``training_mode`` absent or a constant false) and its mask is unread.
4. **Initializer deduplication**: initializers of equal element type, shape and bytes (hashed,
   then compared in full) are merged into the first; those that are graph inputs (overridable)
   or graph outputs are left alone.
5. **Cleanup**: unread initializers and unread ``Constant`` nodes are removed, stale
   ``value_info`` entries dropped, and the nodes topologically sorted.

Only nodes of the default ONNX domain are rewritten; reads by subgraphs (If/Loop/Scan) count as
uses, and renames follow into subgraphs. Every skip is counted in ``stats`` as
``"skipped: <reason>"`` and logged at DEBUG.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import hashlib
import inspect
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from passes._base import EXACT, Pass, PassResult, RunContext
from passes._graph import (
    GraphIndex,
    NameAllocator,
    is_onnx_domain,
    iter_subgraphs,
    opset_version,
    remove_nodes,
    replace_uses,
    topological_sort,
)

__all__ = ["SimplifyOptions", "SimplifyPass"]

logger = logging.getLogger(__name__)

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@dataclasses.dataclass(frozen=True)
class SimplifyOptions:
    """What :class:`SimplifyPass` does.

    Attributes:
        use_onnxsim: run onnxsim before our own rewrites.
        fold_batchnorm: fold BatchNormalization into a preceding Conv/ConvTranspose/Gemm.
        remove_identity: remove Identity nodes and inference-mode Dropout.
        dedup_initializers: merge initializers with identical contents.
        onnxsim_size_limit_bytes: models whose proto is larger skip onnxsim (it serializes the
            whole model into one protobuf message, which cannot exceed 2 GiB).
    """

    use_onnxsim: bool = True
    fold_batchnorm: bool = True
    remove_identity: bool = True
    dedup_initializers: bool = True
    onnxsim_size_limit_bytes: int = 2_000_000_000


class SimplifyPass(Pass):
    """Exact simplification: onnxsim, BN folding, Identity/Dropout removal, initializer dedup."""

    name: ClassVar[str] = "simplify"
    tolerance = EXACT

    def __init__(self, options: SimplifyOptions | None = None) -> None:
        self.options = options or SimplifyOptions()

    def __repr__(self) -> str:
        return f"SimplifyPass({self.options})"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Simplify a copy of ``model``; ``model`` itself is never modified."""
        opts = self.options
        stats: dict[str, Any] = {"nodes_before": len(model.graph.node)}
        skips: collections.Counter[str] = collections.Counter()
        work: onnx.ModelProto | None = None
        if opts.use_onnxsim:
            work, stats["onnxsim"] = _run_onnxsim(model, opts)
        else:
            stats["onnxsim"] = "disabled"
        changed = work is not None
        if work is None:
            work = _copy(model)
        else:
            stats["nodes_after_onnxsim"] = len(work.graph.node)
        graph, opset = work.graph, opset_version(work) or 1
        identity = dropout = folded = deduped = 0
        if opts.remove_identity:
            identity, dropout = _remove_passthroughs(graph, opset, skips)
        if opts.fold_batchnorm:
            folded = _fold_batchnorms(graph, opset, skips)
        if opts.dedup_initializers:
            deduped = _dedup_initializers(graph, skips)
        cleanup = _remove_dead(graph)
        reordered = _sort(graph)
        counts = (identity, dropout, folded, deduped, *cleanup.values())
        changed = changed or reordered or any(counts)
        stats.update(
            bn_folded=folded,
            identity_removed=identity,
            dropout_removed=dropout,
            initializers_deduplicated=deduped,
            **cleanup,
        )
        stats.update({f"skipped: {reason}": n for reason, n in sorted(skips.items())})
        if not changed:
            stats["nodes_after"] = stats["nodes_before"]
            return PassResult(model, False, stats)
        stats["nodes_after"] = len(graph.node)
        return PassResult(work, True, stats)


# --------------------------------------------------------------------------------------------
# onnxsim


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())  # the whole message on one line
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__


def _run_onnxsim(
    model: onnx.ModelProto, opts: SimplifyOptions
) -> tuple[onnx.ModelProto | None, str]:
    """Return (onnxsim's accepted result or ``None``, a status for ``stats["onnxsim"]``)."""
    size, limit = model.ByteSize(), opts.onnxsim_size_limit_bytes
    if size > limit:
        return _rejected(f"skipped: model is {size} bytes, over the {limit}-byte limit")
    try:
        import onnxsim  # heavy import (pulls in torch when present): only when used
    except ImportError as err:
        return _rejected(f"failed: onnxsim is not importable ({_one_line(err)})")
    kwargs = _onnxsim_kwargs(onnxsim.simplify, opts, bool(_overridable(model.graph)))
    captured = io.StringIO()
    try:
        with _captured_output(captured):
            result, check_ok = onnxsim.simplify(_copy(model), **kwargs)
    except Exception as err:  # onnxsim raises many unrelated types
        return _rejected(f"failed: {_one_line(err)}")
    finally:
        if captured.getvalue().strip():
            logger.debug("onnxsim printed:\n%s", captured.getvalue().rstrip())
    if not check_ok:
        return _rejected("failed: onnxsim reported its check failed")
    problem = _interface_problem(model, result)
    if problem is not None:
        return _rejected(f"rejected: {problem}")
    before, after = len(model.graph.node), len(result.graph.node)
    if after > before:
        return _rejected(f"rejected: more nodes after onnxsim ({after} > {before})")
    del result.graph.input[:]
    del result.graph.output[:]
    del result.metadata_props[:]
    result.graph.input.extend(model.graph.input)
    result.graph.output.extend(model.graph.output)
    result.metadata_props.extend(model.metadata_props)
    if _fingerprint(result.graph) == _fingerprint(model.graph):
        logger.debug("onnxsim changed nothing but names or value_info; keeping the input")
        return None, "ok: no change"
    logger.debug("onnxsim: %d -> %d nodes", before, after)
    return result, "ok"


def _rejected(status: str) -> tuple[None, str]:
    logger.debug("onnxsim result not used: %s", status)
    return None, status


def _onnxsim_kwargs(simplify: Any, opts: SimplifyOptions, has_overridable: bool) -> dict[str, Any]:
    """Arguments for ``onnxsim.simplify``, limited to those the installed version accepts."""
    skipped = []
    if not opts.fold_batchnorm:
        skipped.append("fuse_bn_into_conv")
    if not opts.remove_identity:
        skipped += ["eliminate_identity", "eliminate_nop_dropout"]
    if not opts.dedup_initializers:
        skipped.append("eliminate_duplicate_initializer")
    wanted: dict[str, Any] = {
        "check_n": 0,
        "skipped_optimizers": skipped,
        "include_subgraph": False,
        # initializers listed as graph inputs can be overridden by the caller: keep them inputs
        # and do not fold them (onnxsim would otherwise drop them from the interface)
        "mutable_initializer": True,
        "initializers_as_constants": not has_overridable,
        "certify": False,
        "range_opt": False,
        "check_hazards": False,
        "check_gradients": False,
    }
    try:
        accepted = set(inspect.signature(simplify).parameters)
    except (TypeError, ValueError):
        accepted = {"check_n"}
    if has_overridable and "initializers_as_constants" not in accepted:
        wanted["skip_constant_folding"] = True  # older onnxsim: no finer control
    return {key: value for key, value in wanted.items() if key in accepted}


@contextlib.contextmanager
def _captured_output(buffer: io.StringIO) -> Iterator[None]:
    """Capture Python- and C-level stdout/stderr (file descriptors 1 and 2) into ``buffer``."""
    with tempfile.TemporaryFile() as sink:
        saved: list[int] = []
        try:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            with contextlib.suppress(OSError):
                saved = [os.dup(1), os.dup(2)]
                os.dup2(sink.fileno(), 1)
                os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield
        finally:
            if saved:
                _flush_c_stdio()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
                sink.seek(0)
                buffer.write(sink.read().decode("utf-8", errors="replace"))


def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _io_signature(values: Any) -> list[tuple[str, str]]:
    out = []
    for value in values:
        kind = value.type.WhichOneof("value") or ""
        elem = value.type.tensor_type.elem_type if kind == "tensor_type" else 0
        out.append((value.name, f"{kind}:{elem}"))
    return out


def _interface_problem(before: onnx.ModelProto, after: onnx.ModelProto) -> str | None:
    """Why ``after`` does not keep ``before``'s interface, or ``None``."""
    if _io_signature(before.graph.input) != _io_signature(after.graph.input):
        return "onnxsim changed the graph inputs"
    if _io_signature(before.graph.output) != _io_signature(after.graph.output):
        return "onnxsim changed the graph outputs"
    if before.ir_version != after.ir_version:
        return f"onnxsim changed ir_version {before.ir_version} -> {after.ir_version}"
    imports = {e.domain or "ai.onnx": e.version for e in before.opset_import}
    for entry in after.opset_import:
        if imports.get(entry.domain or "ai.onnx", entry.version) != entry.version:
            return f"onnxsim changed the opset of domain '{entry.domain}'"
    return None


def _fingerprint(graph: onnx.GraphProto) -> bytes:
    """Hash of what a graph computes, ignoring node names, doc strings and value_info."""
    digest = hashlib.sha256()

    def feed(*parts: bytes | str) -> None:
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "little") + data)

    for node in graph.node:
        feed(node.op_type, node.domain, *node.input, "->", *node.output, ";")
        for attr in node.attribute:
            feed(attr.SerializeToString(deterministic=True))
    for tensor in sorted(graph.initializer, key=lambda t: t.name):
        feed(tensor.SerializeToString(deterministic=True))
    for tensor in graph.sparse_initializer:
        feed(tensor.SerializeToString(deterministic=True))
    for value in (*graph.input, *graph.output):
        feed(value.SerializeToString(deterministic=True))
    return digest.digest()


# --------------------------------------------------------------------------------------------
# Renaming helper shared by the rewrites


def _rename_reads(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Make readers of each ``old`` name (in ``graph`` and its subgraphs) read ``mapping[old]``.

    Graph outputs of ``graph`` are not renamed; chains (a→b, b→c) are resolved.
    """
    resolved = {old: _resolve(mapping, old) for old in mapping}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in resolved:
                node.input[slot] = resolved[name]
        for sub in iter_subgraphs(node):
            _rename_in_scope(sub, resolved)


def _resolve(mapping: Mapping[str, str], name: str) -> str:
    seen = {name}
    while name in mapping:
        name = mapping[name]
        if name in seen:
            raise ValueError(f"rename cycle through '{name}'")
        seen.add(name)
    return name


def _rename_in_scope(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined.update(o for node in graph.node for o in node.output)
    visible = {old: new for old, new in mapping.items() if old not in defined}
    if not visible:
        return
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in visible:
                node.input[slot] = visible[name]
        for sub in iter_subgraphs(node):
            _rename_in_scope(sub, visible)
    for out in graph.output:
        if out.name in visible:
            out.name = visible[out.name]


def _skip(skips: collections.Counter[str], reason: str, node: onnx.NodeProto) -> None:
    skips[reason] += 1
    logger.debug("skipped %s '%s': %s", node.op_type, node.name or node.output[0], reason)


def _overridable(graph: onnx.GraphProto) -> set[str]:
    """Initializers that are also graph inputs: the caller may feed other values."""
    return {v.name for v in graph.input} & {t.name for t in graph.initializer}


def _constant(index: GraphIndex, name: str, overridable: set[str]) -> np.ndarray | None:
    return index.constant(name)  # GraphIndex already treats overridable initializers as non-constant


# --------------------------------------------------------------------------------------------
# Identity and inference-mode Dropout


def _passthrough_problem(
    node: onnx.NodeProto, index: GraphIndex, opset: int, overridable: set[str]
) -> str | None:
    """Why ``node`` (Identity or Dropout) is not a removable pass-through, or ``None``."""
    if not node.input or not node.input[0] or not node.output or not node.output[0]:
        return "malformed identity or dropout"
    if node.op_type == "Identity":
        return None
    attrs = {a.name: a for a in node.attribute}
    if opset < 7 and ("is_test" not in attrs or attrs["is_test"].i != 1):
        return "dropout not in test mode"
    if opset >= 12 and len(node.input) > 2 and node.input[2]:
        mode = _constant(index, node.input[2], overridable)
        if mode is None:
            return "dropout training_mode not constant"
        if bool(np.any(mode)):
            return "dropout training_mode is true"
    if len(node.output) > 1 and node.output[1] and index.use_count(node.output[1]) > 0:
        return "dropout mask is used"
    return None


def _passthroughs(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [n for n in graph.node if n.op_type in ("Identity", "Dropout") and is_onnx_domain(n)]


def _remove_passthroughs(
    graph: onnx.GraphProto, opset: int, skips: collections.Counter[str]
) -> tuple[int, int]:
    """Remove Identity and inference Dropout nodes; returns (identities, dropouts) removed."""
    index, overridable = GraphIndex.build(graph), _overridable(graph)
    removed: collections.Counter[str] = collections.Counter()
    doomed, mapping = [], {}
    for node in _passthroughs(graph):
        problem = _passthrough_problem(node, index, opset, overridable)
        if problem is not None:
            _skip(skips, problem, node)
        elif node.output[0] not in index.graph_outputs:
            mapping[node.output[0]] = node.input[0]
            doomed.append(node)
            removed[node.op_type] += 1
    if doomed:
        _rename_reads(graph, mapping)
        remove_nodes(graph, doomed)
        logger.debug("removed %d pass-through nodes", len(doomed))
    removed.update(_remove_output_passthroughs(graph, opset, skips))
    return removed["Identity"], removed["Dropout"]


def _remove_output_passthroughs(
    graph: onnx.GraphProto, opset: int, skips: collections.Counter[str]
) -> collections.Counter[str]:
    """Remove pass-throughs writing graph outputs by renaming their input's producer's output.

    One at a time, with a fresh index each time: renames can make a later candidate ineligible
    (two outputs copied from one value keep the second Identity).
    """
    removed: collections.Counter[str] = collections.Counter()
    judged: set[str] = set()
    while True:
        index, overridable = GraphIndex.build(graph), _overridable(graph)
        todo = [
            n for n in _passthroughs(graph)
            if n.output and n.output[0] in index.graph_outputs and n.output[0] not in judged
        ]
        if not todo:
            return removed
        node = todo[0]
        judged.add(node.output[0])
        if _passthrough_problem(node, index, opset, overridable) is not None:
            continue  # already counted by the first sweep
        source, target, op_type = node.input[0], node.output[0], node.op_type
        if source not in index.producer:
            _skip(skips, "identity from a graph input or initializer to a graph output", node)
            continue
        if source in index.graph_outputs:
            _skip(skips, "identity between two graph outputs", node)
            continue
        remove_nodes(graph, [node])
        for producer in graph.node:  # remove_nodes copied the nodes: find the producer again
            for slot, name in enumerate(producer.output):
                if name == source:
                    producer.output[slot] = target
        replace_uses(graph, source, target)
        removed[op_type] += 1
        logger.debug("removed %s writing graph output '%s'", op_type, target)


# --------------------------------------------------------------------------------------------
# BatchNormalization folding


@dataclasses.dataclass(frozen=True)
class _BnAffine:
    """A BN as ``y = x·factor + shift`` per channel (float64)."""

    factor: np.ndarray
    shift: np.ndarray


def _bn_affine(
    bn: onnx.NodeProto, index: GraphIndex, opset: int, overridable: set[str]
) -> _BnAffine | str:
    """The BN's per-channel affine form, or why it cannot be folded."""
    attrs = {a.name: a for a in bn.attribute}
    if "spatial" in attrs and attrs["spatial"].i == 0:
        return "bn spatial=0"
    if opset < 7 and ("is_test" not in attrs or attrs["is_test"].i != 1):
        return "bn in training mode"
    if "training_mode" in attrs and attrs["training_mode"].i != 0:
        return "bn in training mode"
    if any(o and index.use_count(o) > 0 for o in bn.output[1:]):
        return "bn training outputs used"
    if len(bn.input) != 5:
        return "bn malformed"
    params = [_constant(index, name, overridable) for name in bn.input[1:]]
    if any(p is None for p in params):
        return "bn parameters not constant"
    scale, bias, mean, var = params
    if any(p.dtype not in _FLOAT_DTYPES for p in params):
        return "bn unsupported dtype"
    if any(p.ndim != 1 or p.shape != scale.shape for p in params):
        return "bn parameters not 1-D of one length"
    eps = attrs["epsilon"].f if "epsilon" in attrs else 1e-5
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = bias.astype(np.float64) - mean.astype(np.float64) * factor
    return _BnAffine(factor, shift)


def _fold_batchnorms(graph: onnx.GraphProto, opset: int, skips: collections.Counter[str]) -> int:
    """Fold every foldable BN into its producer; returns the number folded."""
    index, overridable = GraphIndex.build(graph), _overridable(graph)
    alloc = NameAllocator(graph)
    doomed = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or not is_onnx_domain(bn):
            continue
        problem = _bn_producer_problem(bn, index)
        affine = _bn_affine(bn, index, opset, overridable) if problem is None else problem
        if isinstance(affine, str):
            _skip(skips, affine, bn)
            continue
        producer = index.producer[bn.input[0]]
        folded = _FOLDERS[producer.op_type](producer, affine, index, overridable, opset)
        if isinstance(folded, str):
            _skip(skips, folded, bn)
            continue
        weight, bias = folded
        _install(graph, alloc, producer, weight, bias)
        producer.output[0] = bn.output[0]
        doomed.append(bn)
        logger.debug("folded BN '%s' into %s '%s'", bn.name, producer.op_type, producer.name)
    return remove_nodes(graph, doomed)


def _bn_producer_problem(bn: onnx.NodeProto, index: GraphIndex) -> str | None:
    source = bn.input[0] if bn.input else ""
    producer = index.producer.get(source)
    if producer is None or not is_onnx_domain(producer) or producer.op_type not in _FOLDERS:
        return "bn without conv/convtranspose/gemm producer"
    if source in index.graph_outputs:
        return "bn producer output is a graph output"
    if index.use_count(source) > 1:
        return "bn producer has other users"
    if producer.output[0] != source:
        return "bn reads a secondary output"
    return None


_Folded = tuple[np.ndarray, np.ndarray]


def _weight_and_bias(
    node: onnx.NodeProto, index: GraphIndex, overridable: set[str], channels: int
) -> tuple[np.ndarray, np.ndarray] | str:
    weight = _constant(index, node.input[1] if len(node.input) > 1 else "", overridable)
    if weight is None:
        return "bn producer weight not constant"
    if weight.dtype not in _FLOAT_DTYPES:
        return "bn unsupported dtype"
    has_bias = len(node.input) > 2 and node.input[2]
    bias = _constant(index, node.input[2], overridable) if has_bias else np.zeros(channels)
    if bias is None:
        return "bn producer bias not constant"
    return weight, bias


def _fold_into_conv(
    conv: onnx.NodeProto, bn: _BnAffine, index: GraphIndex, overridable: set[str], opset: int
) -> _Folded | str:
    found = _weight_and_bias(conv, index, overridable, bn.factor.size)
    if isinstance(found, str):
        return found
    weight, bias = found
    if weight.ndim < 3 or weight.shape[0] != bn.factor.size or bias.shape != bn.factor.shape:
        return "bn channel count mismatch"
    factor = bn.factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_weight = (weight.astype(np.float64) * factor).astype(weight.dtype)
    return new_weight, (bias * bn.factor + bn.shift).astype(weight.dtype)


def _fold_into_conv_transpose(
    conv: onnx.NodeProto, bn: _BnAffine, index: GraphIndex, overridable: set[str], opset: int
) -> _Folded | str:
    found = _weight_and_bias(conv, index, overridable, bn.factor.size)
    if isinstance(found, str):
        return found
    weight, bias = found
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    if weight.ndim < 3 or group < 1 or weight.shape[0] % group:
        return "convtranspose group does not divide its input channels"
    per_group = weight.shape[1]  # W: [C_in, C_out/group, k...]
    if per_group * group != bn.factor.size or bias.shape != bn.factor.shape:
        return "bn channel count mismatch"
    kernel = weight.shape[2:]
    grouped = weight.astype(np.float64).reshape(group, weight.shape[0] // group, per_group, *kernel)
    factor = bn.factor.reshape(group, 1, per_group, *(1,) * len(kernel))
    new_weight = (grouped * factor).reshape(weight.shape).astype(weight.dtype)
    return new_weight, (bias * bn.factor + bn.shift).astype(weight.dtype)


def _fold_into_gemm(
    gemm: onnx.NodeProto, bn: _BnAffine, index: GraphIndex, overridable: set[str], opset: int
) -> _Folded | str:
    if opset < 7:
        return "gemm below opset 7"
    found = _weight_and_bias(gemm, index, overridable, bn.factor.size)
    if isinstance(found, str):
        return found
    weight, bias = found
    attrs = {a.name: a for a in gemm.attribute}
    trans_b = attrs["transB"].i if "transB" in attrs else 0
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    n = bn.factor.size
    if weight.ndim != 2 or weight.shape[0 if trans_b else 1] != n:
        return "bn channel count mismatch"
    if bias.size != 1 and bias.shape not in ((n,), (1, n)):
        return "gemm bias shape not [N] or [1, N]"
    factor = bn.factor[:, None] if trans_b else bn.factor[None, :]
    new_weight = (weight.astype(np.float64) * factor).astype(weight.dtype)
    new_bias = np.broadcast_to(beta * bias.astype(np.float64).reshape(-1), (n,))
    return new_weight, (new_bias * bn.factor + bn.shift).astype(weight.dtype)


_FOLDERS = {
    "Conv": _fold_into_conv,
    "ConvTranspose": _fold_into_conv_transpose,
    "Gemm": _fold_into_gemm,
}


def _install(
    graph: onnx.GraphProto,
    alloc: NameAllocator,
    node: onnx.NodeProto,
    weight: np.ndarray,
    bias: np.ndarray,
) -> None:
    """Point ``node`` at new weight and bias initializers (a Gemm also gets ``beta = 1``)."""
    base = node.name or node.output[0]
    names = [alloc.fresh(f"{base}_bnfold_w"), alloc.fresh(f"{base}_bnfold_b")]
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), names[0]))
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(bias), names[1]))
    node.input[1] = names[0]
    if len(node.input) > 2:
        node.input[2] = names[1]
    else:
        node.input.append(names[1])
    kept = [a for a in node.attribute if a.name != "beta"]
    if len(kept) != len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(kept)


# --------------------------------------------------------------------------------------------
# Initializer deduplication


def _tensor_bytes(tensor: onnx.TensorProto) -> bytes:
    if tensor.data_type == onnx.TensorProto.STRING:
        return b"\0".join(len(s).to_bytes(8, "little") + s for s in tensor.string_data)
    return np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes()


def _dedup_initializers(graph: onnx.GraphProto, skips: collections.Counter[str]) -> int:
    """Merge initializers with equal type, shape and bytes into the first; returns merged count."""
    pinned = {v.name for v in graph.input} | {v.name for v in graph.output}
    groups: dict[tuple, list[onnx.TensorProto]] = collections.defaultdict(list)
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            skips["initializer with external data not deduplicated"] += 1
            continue
        digest = hashlib.sha256(_tensor_bytes(tensor)).digest()
        groups[(tensor.data_type, tuple(tensor.dims), digest)].append(tensor)
    mapping: dict[str, str] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        canon: list[tuple[onnx.TensorProto, bytes]] = []
        for tensor in group:
            if tensor.name in pinned:
                skips["duplicate initializer is a graph input or output"] += 1
                logger.debug("not deduplicating '%s': graph input or output", tensor.name)
                continue
            data = _tensor_bytes(tensor)
            same = next((c for c, c_data in canon if c_data == data), None)
            if same is None:
                canon.append((tensor, data))
            else:
                mapping[tensor.name] = same.name
                logger.debug("initializer '%s' duplicates '%s'", tensor.name, same.name)
    if mapping:
        _rename_reads(graph, mapping)
        kept = [t for t in graph.initializer if t.name not in mapping]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return len(mapping)


# --------------------------------------------------------------------------------------------
# Cleanup


def _remove_dead(graph: onnx.GraphProto) -> dict[str, int]:
    """Remove unread Constant nodes and initializers and stale value_info entries."""
    index = GraphIndex.build(graph)
    dead_constants = [
        n for n in graph.node
        if n.op_type == "Constant" and is_onnx_domain(n)
        and all(index.use_count(o) == 0 for o in n.output if o)
    ]
    constants_removed = remove_nodes(graph, dead_constants)
    index = GraphIndex.build(graph) if constants_removed else index
    inputs = {v.name for v in graph.input}
    kept = [t for t in graph.initializer if t.name in inputs or index.use_count(t.name) > 0]
    initializers_removed = len(graph.initializer) - len(kept)
    if initializers_removed:
        del graph.initializer[:]
        graph.initializer.extend(kept)
    defined = inputs | {t.name for t in graph.initializer}
    defined.update(o for n in graph.node for o in n.output)
    stale = [v for v in graph.value_info if v.name not in defined]
    for value in stale:
        graph.value_info.remove(value)
    return {
        "constant_nodes_removed": constants_removed,
        "initializers_removed": initializers_removed,
        "value_info_removed": len(stale),
    }


def _sort(graph: onnx.GraphProto) -> bool:
    """Topologically sort ``graph``; returns whether the order changed."""
    before = [tuple(n.output) for n in graph.node]
    topological_sort(graph)
    return before != [tuple(n.output) for n in graph.node]
