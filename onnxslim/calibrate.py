"""Calibration as the commands use it: :func:`calibrate_model` (``onnxslim calibrate``) and
:class:`Calibrate`, the pipeline step that measures ranges on the model *as it is at that point*
of a pipeline (after "prepare", before "quantize") and hands them to the passes after it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import onnx

from calibration.collect import DEFAULT_BUDGET, collect
from calibration.datasets import Dataset, input_specs, prepare_dataset
from calibration.observers import ObserverOptions
from calibration.table import CalibrationTable
from onnxslim.pipeline import ContextStep
from passes._base import RunContext

__all__ = ["Calibrate", "calibrate_model"]


@dataclasses.dataclass(frozen=True)
class Calibrate(ContextStep):
    """Collect a calibration table on the current model from ``dataset``; later passes get it as
    ``ctx.calibration`` (and the samples as ``ctx.dataset``).

    ``cache``: a dict shared by the trials of a search, which all prepare the same model the
    same way: the first trial collects, the others reuse its table (``stats["reused"]``).
    ``histograms``: keep each tensor's histogram in the table (``--method auto`` chooses ranges
    from them later).
    """

    dataset: Dataset
    method: str = "minmax"
    progress: Callable[[int, int], None] | None = None
    name: str = "calibrate"
    cache: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)
    histograms: bool = False

    def update(self, model: onnx.ModelProto, ctx: RunContext) -> tuple[RunContext, Mapping[str, Any]]:
        reused = self.cache is not None and "table" in self.cache
        table = self.cache["table"] if reused else collect(model, self.dataset, method=self.method,
                                                           progress=self.progress, keep_histograms=self.histograms)
        if self.cache is not None:
            self.cache["table"] = table
        stats = {"tensors": len(table), "samples": table.samples, "method": self.method, "data": self.dataset.source,
                 "reused": reused}
        return dataclasses.replace(ctx, calibration=table, dataset=self.dataset), stats


def calibrate_model(
    model: onnx.ModelProto,
    data: str | os.PathLike[str] | Dataset,
    *,
    method: str = "minmax",
    samples: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    image_spec: Any = None,
    progress: Callable[[int, int], None] | None = None,
    percentile: float | None = None,
    budget_bytes: int = DEFAULT_BUDGET,
    skip_nonfinite: bool = False,
) -> CalibrationTable:
    """Collect a calibration table for ``model`` from ``data`` (checked against its inputs first)."""
    dataset = prepare_dataset(data, input_specs(model), limit=samples, shuffle=shuffle, seed=seed,
                              image_spec=image_spec, skip_nonfinite=skip_nonfinite)
    observer = ObserverOptions() if percentile is None else ObserverOptions(percentile=percentile)
    return collect(model, dataset, method=method, progress=progress, observer_options=observer, budget_bytes=budget_bytes)
