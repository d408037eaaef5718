"""Prepare a float model for quantization: fold constants and BatchNorm, reach opset 13.

What onnxruntime's quantizer needed by hand, done here by default, as one pipeline pass
(:class:`PrepareForQuantizationPass`, ``"prepare-quantize"``):

1. :class:`passes.simplify.SimplifyPass`: onnxsim constant folding (``Constant``-node weights
   become initializers, so the quantizer sees constant weights), BatchNormalization folded into
   the preceding Conv/Gemm, Identity removed, a decomposed HardSwish put back into one
   activation (its four float element-wise nodes between int8 convolutions made
   PicoDet-layout's int8 model 0.85x fp32; recomposed, 0.58x at seed 1, 2026-12-03).
2. Opset < ``min_opset`` (13: per-channel ``DequantizeLinear`` with ``axis``) is upgraded with
   ``onnx.version_converter``; if that fails the model keeps its opset and the stats say why
   (the static quantizer then uses per-tensor weights, :data:`PER_TENSOR_NOTE`).

Tolerance: exact up to float rounding (folding and the opset conversion change no value), so
the one flow verifies it like any other pass. Calibrate the *prepared* model: the calibration
table is tied to the graph it was measured on.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import onnx
from onnx import version_converter

from passes._base import EXACT, Pass, PassResult, RunContext, Tolerance
from passes._graph import opset_version
from passes.simplify import SimplifyPass

__all__ = ["PrepareOptions", "PrepareForQuantizationPass", "PER_TENSOR_NOTE"]

log = logging.getLogger(__name__)

#: The end of the note when the opset could not be upgraded (per-channel weights need 13).
PER_TENSOR_NOTE = "per-tensor weights (opset could not be upgraded)"


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """What :class:`PrepareForQuantizationPass` does.

    Attributes:
        min_opset: raise the default-domain opset to at least this (13: per-channel weights).
        simplify: fold constants and BatchNorm first (:class:`passes.simplify.SimplifyPass`).
    """

    min_opset: int = 13
    simplify: bool = True


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(n.op_type == op_type for n in model.graph.node)


def _upgrade(model: onnx.ModelProto, target: int) -> tuple[onnx.ModelProto, str | None]:
    """``model`` converted to opset ``target``, or ``model`` and why the conversion failed."""
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
    except Exception as err:  # noqa: BLE001 - the converter raises many unrelated types
        log.debug("version conversion failed: %s", err)
        return model, (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return converted, None


class PrepareForQuantizationPass(Pass):
    """Constant weights to initializers, BatchNorm folded, opset raised for per-channel weights.

    ``apply`` works on a copy (the given model is never modified). ``stats``:
    ``simplified`` (1 when simplify changed the model), ``bn_folded`` (BatchNormalization nodes
    gone), ``nodes_before``/``nodes_after``, ``opset_before``/``opset_after``,
    ``opset_upgrade_failed`` (1 when the converter failed; the model keeps its opset) and
    ``notes``: the same in lines for people. ``changed`` is false on an already prepared model.
    """

    name: ClassVar[str] = "prepare-quantize"
    tolerance: ClassVar[Tolerance] = EXACT

    def __init__(self, options: PrepareOptions | None = None) -> None:
        self.options = options or PrepareOptions()

    def __repr__(self) -> str:
        return f"PrepareForQuantizationPass({self.options})"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Prepare a copy of ``model`` (see the class docstring)."""
        opts = self.options
        work = onnx.ModelProto()
        work.CopyFrom(model)
        notes: list[str] = []
        before = opset_version(model) or 0
        stats: dict[str, Any] = {"nodes_before": len(model.graph.node), "opset_before": before}
        simplified = False
        if opts.simplify:
            result = SimplifyPass().apply(work, ctx)
            simplified, work = result.changed, result.model
        folded = _count(model, "BatchNormalization") - _count(work, "BatchNormalization")
        if simplified:
            notes.append("simplified (constants folded" + (f", {folded} BatchNorm folded" if folded else "") + ")")
        failed = None
        if before < opts.min_opset:
            work, failed = _upgrade(work, opts.min_opset)
            if failed is None:
                notes.append(f"opset upgraded {before} -> {opts.min_opset} (needed for per-channel weights)")
            else:
                notes.append(f"opset {before} could not be upgraded to {opts.min_opset} ({failed}); {PER_TENSOR_NOTE}")
        after = opset_version(work) or 0
        stats.update(simplified=int(simplified), bn_folded=folded, nodes_after=len(work.graph.node),
                     opset_after=after, opset_upgrade_failed=int(failed is not None), notes=notes)
        for line in notes:
            ctx.logger.debug("prepare-quantize: %s", line)
        if not simplified and after == before:
            return PassResult(model, False, stats)
        return PassResult(work, True, stats)
