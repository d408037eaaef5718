"""``onnxslim quantize``: prepare, calibrate, quantize, verify, then say what it bought.

Static flow: load → :func:`passes.quantize.prepare_for_quantization` (Constant weights to
initializers, BatchNorm folded, opset raised to 13 for per-channel weights; its notes are shown)
→ calibration table from ``--calib`` data (collected on the prepared model) or ``--table`` →
:class:`passes.quantize.QuantizeStaticPass` through the pipeline, verified against the prepared
model on calibration samples → written atomically. Dynamic flow: the same without calibration.

Afterwards, always: which compute nodes onnxruntime actually fused into int8 kernels
(:func:`onnxslim.fusion.fusion_report`), and the p50 latency of the input and the result on one
sample, timed side by side with 1 thread — so a model that int8 makes *slower* on this CPU is
reported with the numbers, not handed back silently. With ``--eval``, the task accuracy of both.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.datasets import Dataset, input_specs, prepare_dataset
from calibration.table import CalibrationTable
from onnxslim.bench import side_by_side_p50
from onnxslim.cpu import detect_cpu
from onnxslim.fusion import FusionReport, fusion_report
from onnxslim.io import load_model, model_file_size, refuse_overwrite, save_model
from onnxslim.pipeline import run_pipeline
from onnxslim.runtime import runnable_feeds
from onnxslim.validate import ValidationReport, validate
from passes._base import RunContext
from passes._errors import OnnxSlimError
from passes.quantize import (
    DynamicQuantOptions,
    QuantizeDynamicPass,
    QuantizeStaticPass,
    StaticQuantOptions,
    prepare_for_quantization,
)

__all__ = ["QuantizeSettings", "LatencyCheck", "QuantizeReport", "quantize_file", "default_reduce_range"]

#: Calibration samples used to verify the result against the prepared model.
_VERIFY_SAMPLES = 4


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
            raise OnnxSlimError(f"--mode must be static or dynamic, not {self.mode!r}")


def default_reduce_range() -> tuple[bool, str]:
    """7-bit weights unless the CPU has VNNI (u8·s8 products saturate in AVX2's 16-bit sums)."""
    cpu = detect_cpu()
    if cpu.has_vnni:
        return False, "reduce-range off: the CPU has VNNI (no u8·s8 saturation)"
    if cpu.has_vnni is None:
        return True, "reduce-range on (7-bit weights): CPU features unknown, assuming no VNNI"
    return True, "reduce-range on (7-bit weights): the CPU has no VNNI, where u8·s8 sums saturate"


@dataclasses.dataclass(frozen=True)
class LatencyCheck:
    """p50 of the input and the result on one sample, 1 thread, timed side by side."""

    input_p50_ms: float
    output_p50_ms: float
    runs: int

    @property
    def speedup(self) -> float:
        """Input p50 ÷ output p50 (above 1: the result is faster)."""
        return self.input_p50_ms / self.output_p50_ms

    def verdict(self) -> str:
        """One line; says plainly when the result is slower."""
        text = (f"latency (1 thread, p50 of {self.runs} interleaved runs): input {self.input_p50_ms:.3f} ms, "
                f"int8 {self.output_p50_ms:.3f} ms ({self.speedup:.2f}x)")
        if self.speedup < 1.0:
            text += (" -- int8 is SLOWER than the input on this CPU (small or unfused model); "
                     "keep the float model unless size matters more")
        return text


@dataclasses.dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize`` did and what it bought."""

    base: Any  # onnxslim.api.PassReport (sizes, pass stats, verification, notes)
    fusion: FusionReport
    latency: LatencyCheck | None
    validation: ValidationReport | None

    @property
    def passed(self) -> bool:
        """Whether the ``--eval`` gates (if any) held."""
        return self.validation is None or self.validation.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = self.base.to_dict()
        out["fusion"] = self.fusion.to_dict()
        out["latency"] = None if self.latency is None else dataclasses.asdict(self.latency) | {"speedup": self.latency.speedup}
        out["validation"] = None if self.validation is None else self.validation.to_dict()
        return out

    def render(self) -> str:
        """The pass report, then fusion, latency and (with --eval) accuracy."""
        lines = [self.base.render(), f"fusion: {self.fusion.verdict()}"]
        if self.latency is not None:
            lines.append(self.latency.verdict())
        if self.validation is not None:
            lines += ["", self.validation.render()]
        return "\n".join(lines)


def _calibration_data(model: onnx.ModelProto, calib: str | os.PathLike[str] | Dataset, settings: QuantizeSettings) -> Dataset:
    return prepare_dataset(calib, input_specs(model), limit=settings.samples)


def _first_samples(dataset: Dataset, count: int) -> list[dict[str, np.ndarray]]:
    out = []
    for sample in dataset:
        out.append({k: np.asarray(v) for k, v in sample.items()})
        if len(out) == count:
            break
    return out


def _static_context(
    original: onnx.ModelProto,
    prepared: onnx.ModelProto,
    *,
    calib: str | os.PathLike[str] | Dataset | None,
    table: str | os.PathLike[str] | None,
    settings: QuantizeSettings,
    progress: Callable[[int, int], None] | None,
) -> tuple[RunContext, Dataset | None, list[str]]:
    """The calibration table (collected on the prepared model, or loaded) and the data."""
    from calibration.collect import collect

    if calib is None and table is None:
        raise OnnxSlimError("static quantization needs calibration data (--calib DATA) or a table (--table TABLE.json)")
    dataset = _calibration_data(original, calib, settings) if calib is not None else None
    if table is not None:
        loaded = CalibrationTable.load(table, model=original)  # made for this model, as given
        return RunContext(calibration=loaded, dataset=dataset), dataset, [f"ranges from {table} ({loaded.method})"]
    ranges = collect(prepared, dataset, method=settings.method, progress=progress)
    notes = [f"calibrated {len(ranges)} tensors on {ranges.samples} samples of {calib} ({settings.method})"]
    return RunContext(calibration=ranges, dataset=dataset), dataset, notes


def _passes(settings: QuantizeSettings, reduce_range: bool) -> list[Any]:
    if settings.mode == "dynamic":
        options = DynamicQuantOptions(per_channel=settings.per_channel, reduce_range=reduce_range,
                                      exclude_ops=settings.exclude_ops, exclude_nodes=settings.exclude_nodes)
        return [QuantizeDynamicPass(options=options)]
    options = StaticQuantOptions(per_channel=settings.per_channel, activations=settings.activations,
                                 reduce_range=reduce_range, exclude_ops=settings.exclude_ops,
                                 exclude_nodes=settings.exclude_nodes)
    return [QuantizeStaticPass(options=options)]


def quantize_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    settings: QuantizeSettings = QuantizeSettings(),
    calib: str | os.PathLike[str] | Dataset | None = None,
    table: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    metric: str | None = None,
    max_drop: float | None = None,
    verify: bool = True,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> QuantizeReport:
    """Quantize the model at ``input_path`` to int8 and write it to ``output_path``.

    Raises:
        OnnxSlimError: bad model or data, no calibration for static mode, verification failed;
            nothing is written then.
    """
    from onnxslim.api import ModelSize, PassReport  # the shared report type

    input_path, output_path = Path(input_path), Path(output_path)
    refuse_overwrite(output_path, input_path)
    original = load_model(input_path)
    reduce_range, why = (settings.reduce_range, "reduce-range as requested") if settings.reduce_range is not None \
        else default_reduce_range()
    prepared, notes = (original, []) if settings.mode == "dynamic" else prepare_for_quantization(original)
    notes = [*notes, why]
    ctx, dataset = RunContext(), None
    if settings.mode == "static":
        ctx, dataset, more = _static_context(original, prepared, calib=calib, table=table, settings=settings, progress=progress)
        notes += more
    elif calib is not None:
        dataset = _calibration_data(original, calib, settings)
    feeds, how = _verification_feeds(prepared, dataset, ctx.calibration, shapes=shapes) if verify else (None, "")
    report = run_pipeline(prepared, _passes(settings, reduce_range), ctx, verify_feeds=feeds)
    save_model(report.model, output_path, input_path=input_path)
    verification = "not requested" if not verify else "; ".join(sorted({s.verified for s in report.steps})) + f" ({how})"
    base = PassReport(str(input_path), str(output_path), ModelSize.of(original, file_bytes=model_file_size(input_path)),
                      ModelSize.of(report.model, file_bytes=model_file_size(output_path)), report, verification, tuple(notes))
    latency = _latency(original, report.model, feeds, settings.latency_runs)
    validation = None
    if eval_data is not None:
        validation = validate(input_path, output_path, data=eval_data, metric=metric, max_drop=max_drop)
    return QuantizeReport(base, fusion_report(report.model), latency, validation)


def _verification_feeds(
    model: onnx.ModelProto,
    dataset: Dataset | None,
    table: CalibrationTable | None,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Calibration samples when there are some (int8 is judged on the data it was calibrated
    for; standard-normal noise leaves the calibrated ranges). With only a table, random inputs
    drawn uniformly within each float input's calibrated range; else random inputs."""
    if dataset is not None:
        samples = _first_samples(dataset, _VERIFY_SAMPLES)
        return samples, f"{len(samples)} calibration samples"
    feeds, how = runnable_feeds(model, shapes=shapes, samples=2)
    if table is None:
        return feeds, how
    rng = np.random.default_rng(0)
    for feed in feeds:
        for name, value in feed.items():
            if np.issubdtype(value.dtype, np.floating) and name in table:
                low, high = table.range(name)
                feed[name] = rng.uniform(low, high, value.shape).astype(value.dtype)
    return feeds, how + ", floats uniform within their calibrated ranges"


def _latency(
    original: onnx.ModelProto, quantized: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]] | None, runs: int
) -> LatencyCheck | None:
    if not feeds or runs <= 0:
        return None
    before, after = side_by_side_p50([original, quantized], feeds[0], threads=1, runs=runs)
    return LatencyCheck(before, after, runs)
