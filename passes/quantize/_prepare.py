"""Prepare a float model for quantization: fold constants and BatchNorm, reach opset 13.

What onnxruntime's quantizer needed by hand, done here by default:

1. :class:`passes.simplify.SimplifyPass`: onnxsim constant folding (``Constant``-node weights
   become initializers, so the quantizer sees constant weights), BatchNormalization folded into
   the preceding Conv/Gemm, Identity removed.
2. Opset < ``min_opset`` (13: per-channel ``DequantizeLinear`` with ``axis``) is upgraded with
   ``onnx.version_converter``; if that fails the model keeps its opset and the caller is told to
   use per-tensor weights (the notes say so).

Calibrate the *prepared* model: the calibration table is tied to the graph it was measured on.
:class:`PrepareForQuantizationPass` is the same as a pipeline pass (exact up to float rounding:
folding and the opset conversion change no value), so the one flow verifies it like any other.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import onnx

from passes._base import EXACT, Pass, PassResult, RunContext, Tolerance
from passes._graph import opset_version
from passes.simplify import SimplifyPass

__all__ = ["PrepareOptions", "PrepareForQuantizationPass", "prepare_for_quantization", "PER_TENSOR_NOTE"]

log = logging.getLogger(__name__)

#: the note :func:`prepare_for_quantization` adds when per-channel weights are not possible
PER_TENSOR_NOTE = "per-tensor weights (opset could not be upgraded)"


def _upgrade(model: onnx.ModelProto, target: int, notes: list[str]) -> onnx.ModelProto:
    from onnx import version_converter

    before = opset_version(model) or 0
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
    except Exception as err:  # the converter raises many unrelated types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        notes.append(f"opset {before} could not be upgraded to {target} ({first}); {PER_TENSOR_NOTE}")
        log.debug("version conversion failed: %s", err)
        return model
    notes.append(f"opset upgraded {before} -> {target} (needed for per-channel weights)")
    return converted


def prepare_for_quantization(
    model: onnx.ModelProto, *, min_opset: int = 13, simplify: bool = True
) -> tuple[onnx.ModelProto, list[str]]:
    """Return ``(prepared model, notes)``; ``model`` itself is not modified.

    Args:
        model: the float model.
        min_opset: upgrade the default-domain opset to at least this.
        simplify: run :class:`SimplifyPass` (constant folding, BatchNorm folding) first.

    Returns:
        The prepared model and human-readable notes of what was done (for the report).
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    notes: list[str] = []
    if simplify:
        result = SimplifyPass().apply(work, RunContext())
        work = result.model
        folded = result.stats.get("bn_folded", 0)
        if result.changed:
            notes.append("simplified (constants folded" + (f", {folded} BatchNorm folded" if folded else "") + ")")
    opset = opset_version(work) or 0
    if opset < min_opset:
        work = _upgrade(work, min_opset, notes)
    return work, notes


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """``min_opset``: raise the default-domain opset to at least this; ``simplify``: fold
    constants and BatchNorm first."""

    min_opset: int = 13
    simplify: bool = True


class PrepareForQuantizationPass(Pass):
    """Constant weights to initializers, BatchNorm folded, opset raised for per-channel weights."""

    name: ClassVar[str] = "prepare-quantize"
    tolerance: ClassVar[Tolerance] = EXACT

    def __init__(self, options: PrepareOptions | None = None) -> None:
        self.options = options or PrepareOptions()

    def __repr__(self) -> str:
        return f"PrepareForQuantizationPass({self.options})"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Prepare ``model``; ``changed`` is false when it was already prepared."""
        before = opset_version(model) or 0
        work, notes = prepare_for_quantization(model, min_opset=self.options.min_opset, simplify=self.options.simplify)
        after = opset_version(work) or 0
        stats = {"opset_before": before, "opset_after": after, "notes": notes}
        if not notes:
            return PassResult(model, False, stats)
        return PassResult(work, True, stats)
