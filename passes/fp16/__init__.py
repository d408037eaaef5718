"""Convert a model to float16 without breaking it: every tensor edge typed, Casts only at boundaries.

**Full mode** (default). Each node of the default ONNX domain is decided from its schema
(:mod:`passes.fp16._plan`): the type variables bound to float32 that allow float16 and type an
output become float16 together; input slots of other variables or fixed types keep what they
need (Resize ``scales``, NonMaxSuppression's inputs, Range's ``T``); a node stays fp32, with the
reason in ``stats``, when the user blocks it, it belongs to another domain, onnxruntime cannot
load it in float16 (:mod:`passes.fp16._kernels`, probed), a converted slot reads a constant
beyond ±65504, or — with ranges — a converted tensor's observed magnitude, or a reduction's
accumulator, exceeds ``safe_max``. Then (:mod:`passes.fp16._convert`) every float tensor is
produced in its producer's precision and read through one Cast per (tensor, target type)
where a reader wants the other one; constants (initializers, ``Constant`` nodes, also inside
subgraphs) are float16 when only float16 readers use them; If/Loop/Scan bodies are converted by
the same rules, an If's outputs become float16 when both branches produce float16, Loop/Scan
keep their declared interface. With ``keep_io_types`` graph inputs and outputs stay float32: a
Cast after each float input, and before each output, whose name is kept (the producer's output is
renamed). Nothing is clamped: out-of-range values are reported and their readers kept fp32;
values that become zero or subnormal in float16 are counted.

**Weights-only mode**: float32 weights are stored as float16, each cast back to float32 once
(:mod:`passes.fp16._weights`): half the file, float32 compute.

The pass is idempotent: on its own output it finds nothing to do and says ``changed=False``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import onnx

from passes._base import Pass, PassResult, RunContext, Tolerance
from passes._errors import CalibrationError, PreconditionError
from passes._graph import is_onnx_domain, opset_version
from passes.fp16._convert import ConversionResult, convert_model
from passes.fp16._facts import FP16_MAX, collect_facts, walk_graphs
from passes.fp16._plan import Planner, PlanSettings
from passes.fp16._weights import WeightsResult, store_weights_fp16

__all__ = ["DEFAULT_SAFE_MAX", "FP16_TOLERANCE", "Fp16Options", "ConvertFloat16Pass", "ranges_from"]

log = logging.getLogger(__name__)

#: Largest observed magnitude accepted in float16: half of 65504, a 2× margin for inputs larger
#: than those calibration saw.
DEFAULT_SAFE_MAX = FP16_MAX / 2

#: What the pass promises (STYLE §8d): float16 keeps ~3 significant digits per tensor, and
#: rounding errors add up over a network's depth; each output stays within 1e-2 of its own
#: largest magnitude (``|a - b| <= 1e-3 + 1e-2 · max|a|``).
FP16_TOLERANCE = Tolerance(rtol=1e-2, atol=1e-3)


@dataclasses.dataclass(frozen=True)
class Fp16Options:
    """What :class:`ConvertFloat16Pass` does.

    Attributes:
        keep_io_types: keep float32 graph inputs and outputs (Casts at the boundary).
        block_ops: op types kept fp32 (``--block-op``).
        block_nodes: node names kept fp32 (``--block-node``).
        weights_only: store weights as float16 and cast them back once; compute stays float32.
        ranges: observed ``(min, max)`` per tensor name (from calibration) for range-aware
            blocking; ``None`` uses the run context's calibration table when it has one.
        safe_max: a converted tensor whose observed magnitude exceeds this stays fp32.
        min_weight_elements: weights-only mode leaves float tensors smaller than this.
    """

    keep_io_types: bool = True
    block_ops: tuple[str, ...] = ()
    block_nodes: tuple[str, ...] = ()
    weights_only: bool = False
    ranges: Mapping[str, tuple[float, float]] | None = None
    safe_max: float = DEFAULT_SAFE_MAX
    min_weight_elements: int = 16


def ranges_from(calibration: Any) -> dict[str, tuple[float, float]]:
    """``(min, max)`` per tensor from a calibration table (its ``tensors`` entries with
    ``min``/``max``), a ``ranges`` attribute, or a plain mapping; empty for ``None``.

    An object with ``tensors`` (or ``ranges``) is read from that attribute even when it is empty
    (a :class:`calibration.table.CalibrationTable` is not itself a mapping).
    """
    if calibration is None:
        return {}
    source = calibration
    for attribute in ("tensors", "ranges"):
        if getattr(calibration, attribute, None) is not None:
            source = getattr(calibration, attribute)
            break
    out: dict[str, tuple[float, float]] = {}
    for name, value in dict(source).items():
        if hasattr(value, "min") and hasattr(value, "max"):
            out[name] = (float(value.min), float(value.max))
        else:
            lo, hi = value
            out[name] = (float(lo), float(hi))
    return out


def _weight_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for graph in walk_graphs(model.graph):
        total += sum(len(t.raw_data) or t.ByteSize() for t in graph.initializer)
        for node in graph.node:
            if node.op_type == "Constant" and is_onnx_domain(node):
                total += sum(len(a.t.raw_data) or a.t.ByteSize() for a in node.attribute if a.name == "value")
    return total


class ConvertFloat16Pass(Pass):
    """float32 → float16 (full, or weights only), with fp32 kept where it must be, and why."""

    name: ClassVar[str] = "fp16"
    tolerance = FP16_TOLERANCE

    def __init__(self, options: Fp16Options | None = None) -> None:
        self.options = options or Fp16Options()

    def __repr__(self) -> str:
        return f"ConvertFloat16Pass({self.options})"

    def check_input(self, model: onnx.ModelProto) -> None:
        """Refuse a model without a default-domain opset (nothing could be typed)."""
        if not self.options.weights_only and opset_version(model) is None:
            raise PreconditionError("the model imports no default ONNX opset; use weights-only mode")

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Convert a copy of ``model``; ``model`` itself is never modified.

        Raises:
            CalibrationError: full mode with a calibration table in ``ctx`` that holds no range.
        """
        work = onnx.ModelProto()
        work.CopyFrom(model)
        before = _weight_bytes(model)
        if self.options.weights_only:
            minimum = self.options.min_weight_elements
            result: ConversionResult | WeightsResult = store_weights_fp16(work, min_elements=minimum)
            stats = _weights_stats(result)
        else:
            result = self._convert(work, ctx)
            stats = _full_stats(result)
        stats["weight_bytes_before"] = before
        stats["weight_bytes_after"] = _weight_bytes(work) if result.changed else before
        log.debug("fp16: %s", {k: v for k, v in stats.items() if not isinstance(v, list)})
        if not result.changed:
            return PassResult(model, False, stats)
        return PassResult(work, True, stats)

    def _convert(self, work: onnx.ModelProto, ctx: RunContext) -> ConversionResult:
        opts = self.options
        ranges = dict(opts.ranges) if opts.ranges is not None else ranges_from(ctx.calibration)
        if opts.ranges is None and ctx.calibration is not None and not ranges:
            raise CalibrationError("the calibration table holds no tensor ranges (calibration observed nothing), so "
                                   "fp16 cannot tell which tensors overflow float16: calibrate again with data that "
                                   "reaches the model with finite values, or convert without calibration")
        settings = PlanSettings(
            opset=opset_version(work) or 1,
            block_ops=frozenset(opts.block_ops),
            block_nodes=frozenset(opts.block_nodes),
            ranges=ranges,
            safe_max=opts.safe_max,
        )
        facts = collect_facts(work)
        return convert_model(work, facts, Planner(facts, settings), keep_io_types=opts.keep_io_types)


def _full_stats(result: ConversionResult) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "mode": "full",
        "nodes_fp16": result.nodes_fp16,
        "nodes_fp32": len(result.kept),
        "casts_inserted": result.casts_inserted,
        "constants_converted": result.constants_converted,
        "out_of_range_constants": len(result.out_of_range),
        "flushed_to_zero": result.losses.flushed_to_zero,
        "subnormal_values": result.losses.subnormal,
    }
    reasons = collections.Counter(result.reasons)
    stats.update({f"kept fp32: {reason}": n for reason, n in sorted(reasons.items())})
    stats["kept_fp32"] = list(result.kept)
    stats["out_of_range"] = list(result.out_of_range)
    return stats


def _weights_stats(result: WeightsResult) -> dict[str, Any]:
    return {
        "mode": "weights-only",
        "weights_converted": result.weights_converted,
        "casts_inserted": result.casts_inserted,
        "skipped: smaller than min_weight_elements": result.skipped_small,
        "skipped: overridable (graph input)": result.skipped_overridable,
        "out_of_range_constants": len(result.out_of_range),
        "flushed_to_zero": result.losses.flushed_to_zero,
        "subnormal_values": result.losses.subnormal,
        "out_of_range": list(result.out_of_range),
    }
