"""What the simplify rewrites share: their options, copying a model and recording a skipped node.

A skip is counted under its reason (the pass reports it as ``"skipped: <reason>"``) and logged
at DEBUG with the node's op type and name.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import onnx

__all__ = ["SimplifyOptions", "copy_model", "skip"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SimplifyOptions:
    """What :class:`SimplifyPass` does.

    Attributes:
        use_onnxsim: run onnxsim before our own rewrites.
        fold_batchnorm: fold BatchNormalization into a preceding Conv/ConvTranspose/Gemm.
        remove_identity: remove Identity nodes and inference-mode Dropout.
        dedup_initializers: merge initializers with identical contents.
        recompose_hardswish: rewrite ``x * clip(x + 3, 0, 6) / 6`` as one HardSwish (or
            ``x * HardSigmoid(x)`` below opset 14), the form onnxruntime fuses into its Conv
            (:mod:`passes.simplify._hardswish`). Off where simplify runs before pruning: the
            pruning groups were measured on the exported form.
        onnxsim_size_limit_bytes: models whose proto is larger skip onnxsim (it serializes the
            whole model into one protobuf message, which cannot exceed 2 GiB).
    """

    use_onnxsim: bool = True
    fold_batchnorm: bool = True
    remove_identity: bool = True
    dedup_initializers: bool = True
    recompose_hardswish: bool = True
    onnxsim_size_limit_bytes: int = 2_000_000_000


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def skip(skips: collections.Counter[str], reason: str, node: onnx.NodeProto) -> None:
    """Count ``reason`` in ``skips`` and log that ``node`` was left alone."""
    skips[reason] += 1
    logger.debug("skipped %s '%s': %s", node.op_type, node.name or node.output[0], reason)
