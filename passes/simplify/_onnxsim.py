"""The onnxsim step of simplify: run onnxsim on a copy, quietly, and keep its result only if safe.

onnxsim (constant folding, dead-code elimination, its own fusions) runs with its random-input
check off, subgraphs left alone and our own rewrites that are switched off also skipped in it.
Initializers listed as graph inputs stay inputs and are not folded. Its stdout/stderr (Python
and C level) are captured and logged at DEBUG. The result is accepted only when:

- the interface is unchanged: input/output names and element types, IR version, opsets;
- it has no more nodes than the input;
- it differs from the input in more than node names, doc strings or ``value_info``
  (compared by a SHA-256 fingerprint of nodes, attributes, initializers and I/O).

On the accepted result the input's graph input/output declarations and ``metadata_props`` are
restored, so dynamic dims stay dynamic.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import inspect
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import onnx

from passes.simplify._common import SimplifyOptions, copy_model

__all__ = ["run_onnxsim"]

logger = logging.getLogger(__name__)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())  # the whole message on one line
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__


def _overridable(graph: onnx.GraphProto) -> set[str]:
    """Initializers that are also graph inputs: the caller may feed other values."""
    return {v.name for v in graph.input} & {t.name for t in graph.initializer}


def run_onnxsim(
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
            result, check_ok = onnxsim.simplify(copy_model(model), **kwargs)
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
