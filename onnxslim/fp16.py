"""``onnxslim fp16``: :class:`passes.fp16.ConvertFloat16Pass` through the one flow.

With ``--calib``, a :class:`onnxslim.calibrate.Calibrate` step (MinMax) measures tensor ranges
first, so nodes whose magnitudes would overflow float16 stay float32. The report also gives the
onnxruntime session creation time of both models: onnxruntime folds weights-only Casts at load,
and casts around the float16 ops it has no CPU kernel for.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import onnx
import onnxruntime as ort

from onnxslim.calibrate import Calibrate
from onnxslim.flow import FlowOptions, PassReport, Plan, open_data, run_flow
from passes.fp16 import ConvertFloat16Pass, Fp16Options

__all__ = ["LOAD_REPEATS", "fp16_file", "session_load_seconds"]

#: How many times :func:`session_load_seconds` creates each session (the best one counts).
LOAD_REPEATS = 3


def session_load_seconds(models: Sequence[onnx.ModelProto], *, repeats: int = LOAD_REPEATS) -> list[float]:
    """Seconds onnxruntime takes to create a session from each model's bytes (graph
    optimizations on, as deployed, 1 thread): the best of ``repeats``, the models taken in turn
    so that a busy machine slows them alike and the first, cold load does not count."""
    blobs = [m.SerializeToString() for m in models]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    best = [float("inf")] * len(blobs)
    for _ in range(repeats):
        for k, blob in enumerate(blobs):
            started = time.perf_counter()
            ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
            best[k] = min(best[k], time.perf_counter() - started)
    return best


def fp16_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    options: Fp16Options = Fp16Options(),
    calib: str | os.PathLike[str] | None = None,
    samples: int | None = None,
    flow: FlowOptions = FlowOptions(),
    progress: Callable[[int, int], None] | None = None,
    measure_load: bool = True,
) -> PassReport:
    """Convert to float16 (or store weights in float16 with ``options.weights_only``).

    Raises:
        OnnxSlimError: as :func:`onnxslim.flow.run_flow`; a model with nothing to convert is an
            error too. Nothing is written then.
    """
    loads: list[float] = []

    def plan(model: onnx.ModelProto) -> Plan:
        steps: list = [ConvertFloat16Pass(options=options)]
        data, notes = None, []
        if calib is not None:
            data = open_data(calib, model, flag="--calib", limit=samples, skip_nonfinite=flow.skip_nonfinite)
            steps.insert(0, Calibrate(data, method="minmax", progress=progress))
            notes.append(f"ranges from {len(data)} calibration samples of {calib}")

        def describe(result: onnx.ModelProto) -> None:
            if measure_load:
                loads.extend(session_load_seconds([model, result]))

        return Plan(steps, verify_data=data, notes=notes, must_change="fp16", describe=describe)

    report = run_flow(input_path, output_path, plan, flow).report
    if not loads:
        return report
    return dataclasses.replace(report, before=dataclasses.replace(report.before, load_s=loads[0]),
                               after=dataclasses.replace(report.after, load_s=loads[1]),
                               notes=(*report.notes, f"load s: onnxruntime session creation, best of {LOAD_REPEATS} "
                                                     "interleaved, graph optimizations on, 1 thread"))
