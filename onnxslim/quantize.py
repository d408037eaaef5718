"""``onnxslim quantize``: prepare, calibrate, quantize, verify, then say what it bought.

Static plan, through the one flow (:func:`onnxslim.flow.run_flow`):
:class:`passes.quantize.PrepareForQuantizationPass` (Constant weights to initializers, BatchNorm
folded, opset raised to 13 for per-channel weights) → :class:`onnxslim.calibrate.Calibrate` on the
prepared model (or a ``--table``) → :class:`passes.quantize.QuantizeStaticPass`, each verified
against its input on the calibration samples (or ``--data``). Dynamic plan: the quantize pass
alone. A quantize pass that quantizes nothing is an error (nothing is written): a float copy
named int8 helps nobody.

Before anything is written: which compute nodes onnxruntime actually fused into int8 kernels
(:func:`onnxslim.fusion.fusion_report`), the latency of the input and the result timed side by
side (the verdict says "slower" only beyond the spread of the runs), and with ``--eval`` the task
accuracy of both with the ``--max-drop`` gate.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from calibration.datasets import Dataset, IterableDataset
from calibration.table import CalibrationTable
from onnxslim.calibrate import Calibrate
from onnxslim.cpu import detect_cpu
from onnxslim.flow import FlowOptions, PassReport, Plan, open_data, run_flow
from onnxslim.fusion import FusionReport, fusion_report
from onnxslim.runtime import runnable_feeds
from onnxslim.validate import ValidationReport
from passes._base import RunContext
from passes._errors import DataError, UsageError
from passes.quantize import (
    DynamicQuantOptions,
    PrepareForQuantizationPass,
    QuantizeDynamicPass,
    QuantizeStaticPass,
    StaticQuantOptions,
)

__all__ = ["QuantizeSettings", "QuantizeReport", "quantize_file", "default_reduce_range"]


@dataclasses.dataclass(frozen=True)
class QuantizeSettings:
    """The user's choices (``None`` = decided here: reduce_range from the CPU)."""

    mode: str = "static"
    method: str = "minmax"
    samples: int | None = None
    per_channel: bool = True
    activations: str = "u8"
    reduce_range: bool | None = None
    exclude_ops: tuple[str, ...] = ()
    exclude_nodes: tuple[str, ...] = ()
    latency_runs: int = 30

    def __post_init__(self) -> None:
        if self.mode not in ("static", "dynamic"):
            raise UsageError(f"--mode must be static or dynamic, not {self.mode!r}")


def default_reduce_range() -> tuple[bool, str]:
    """7-bit weights unless the CPU has VNNI (u8·s8 products saturate in AVX2's 16-bit sums)."""
    cpu = detect_cpu()
    if cpu.has_vnni:
        return False, "reduce-range off: the CPU has VNNI (no u8·s8 saturation)"
    if cpu.has_vnni is None:
        return True, "reduce-range on (7-bit weights): CPU features unknown, assuming no VNNI"
    return True, "reduce-range on (7-bit weights): the CPU has no VNNI, where u8·s8 sums saturate"


@dataclasses.dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize`` did (sizes, passes, verification, latency, evaluation) and what
    onnxruntime fused."""

    base: PassReport
    fusion: FusionReport

    @property
    def passed(self) -> bool:
        """Whether the ``--eval`` gates (if any) held (and so the output was written)."""
        return self.base.passed

    @property
    def validation(self) -> ValidationReport | None:
        """The ``--eval`` evaluation, if any."""
        return self.base.validation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return self.base.to_dict() | {"fusion": self.fusion.to_dict()}

    def render(self, *, verbose: bool = False) -> str:
        """The pass report, then what onnxruntime fused."""
        return "\n".join([self.base.render(verbose=verbose), f"fusion: {self.fusion.verdict()}"])


def _table_feeds(model: onnx.ModelProto, table: CalibrationTable, flow: FlowOptions) -> Dataset:
    """With only a table: random inputs with each float input drawn uniformly within its
    calibrated range (standard-normal noise would leave the ranges the scales were made for)."""
    try:
        feeds, how = runnable_feeds(model, shapes=flow.shapes, samples=2)
    except DataError as err:
        raise DataError(f"cannot verify the result: {err}; give real inputs with --data DATA (or --no-verify)") from err
    rng = np.random.default_rng(0)
    for feed in feeds:
        for name, value in feed.items():
            if np.issubdtype(value.dtype, np.floating) and name in table:
                low, high = table.range(name)
                feed[name] = rng.uniform(low, high, value.shape).astype(value.dtype)
    dataset = IterableDataset(feeds)
    dataset.source = how + ", floats uniform within their calibrated ranges"
    return dataset


def _quantize_pass(settings: QuantizeSettings, reduce_range: bool) -> QuantizeDynamicPass | QuantizeStaticPass:
    if settings.mode == "dynamic":
        return QuantizeDynamicPass(options=DynamicQuantOptions(
            per_channel=settings.per_channel, reduce_range=reduce_range,
            exclude_ops=settings.exclude_ops, exclude_nodes=settings.exclude_nodes))
    return QuantizeStaticPass(options=StaticQuantOptions(
        per_channel=settings.per_channel, activations=settings.activations, reduce_range=reduce_range,
        exclude_ops=settings.exclude_ops, exclude_nodes=settings.exclude_nodes))


def quantize_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    settings: QuantizeSettings = QuantizeSettings(),
    calib: str | os.PathLike[str] | Dataset | None = None,
    table: str | os.PathLike[str] | None = None,
    flow: FlowOptions = FlowOptions(),
    progress: Callable[[int, int], None] | None = None,
) -> QuantizeReport:
    """Quantize the model at ``input_path`` to int8 and write it to ``output_path``.

    Raises:
        UsageError: static mode without ``calib`` or ``table``, or both given.
        OnnxSlimError: as :func:`onnxslim.flow.run_flow`; nothing is written then.
    """
    if settings.mode == "static" and calib is None and table is None:
        raise UsageError("static quantization needs calibration data (--calib DATA) or a table (--table TABLE.json)")
    if calib is not None and table is not None:
        raise UsageError("give --calib or --table, not both")
    reduce_range, why = (settings.reduce_range, "reduce-range as requested") if settings.reduce_range is not None \
        else default_reduce_range()
    quantize = _quantize_pass(settings, reduce_range)
    flow = dataclasses.replace(flow, latency_runs=settings.latency_runs,
                               names={"--exclude-node": settings.exclude_nodes}, ops={"--exclude-op": settings.exclude_ops})
    def plan(model: onnx.ModelProto) -> Plan:
        data = None
        if calib is not None:
            data = open_data(calib, model, flag="--calib", limit=settings.samples, skip_nonfinite=flow.skip_nonfinite)
        common = dict(notes=[why], must_change=quantize.name, describe=fusion_report)
        if settings.mode == "dynamic":
            return Plan([quantize], verify_data=data, **common)
        if table is None:
            steps = [PrepareForQuantizationPass(), Calibrate(data, method=settings.method, progress=progress), quantize]
            return Plan(steps, verify_data=data, **common)
        loaded = CalibrationTable.load(table, model=model)  # made for this model, as given
        common["notes"].append(f"ranges from {table} ({loaded.method})")
        return Plan([PrepareForQuantizationPass(), quantize], RunContext(calibration=loaded),
                    verify_data=_table_feeds(model, loaded, flow) if flow.verify and flow.data is None else None,
                    **common)

    outcome = run_flow(input_path, output_path, plan, flow)
    return QuantizeReport(outcome.report, outcome.extra)
