"""Helpers shared by the simplify rewrites: copying a model and recording a skipped node.

A skip is counted under its reason (the pass reports it as ``"skipped: <reason>"``) and logged
at DEBUG with the node's op type and name.
"""

from __future__ import annotations

import collections
import logging

import onnx

__all__ = ["copy_model", "skip"]

logger = logging.getLogger(__name__)


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def skip(skips: collections.Counter[str], reason: str, node: onnx.NodeProto) -> None:
    """Count ``reason`` in ``skips`` and log that ``node`` was left alone."""
    skips[reason] += 1
    logger.debug("skipped %s '%s': %s", node.op_type, node.name or node.output[0], reason)
