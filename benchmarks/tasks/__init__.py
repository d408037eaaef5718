"""Real evaluation tasks for the bundled and zoo models: data, pre/post-processing, metrics.

Every task module has the same interface:

- ``ZOO_NAME``: the :mod:`onnxslim.zoo` entry it evaluates (``None`` for ``digits``, whose model
  ships in ``models/``; see :func:`reference_model`);
- ``generate(out_dir, *, seed=0, n_eval=..., n_calib=...) -> TaskData``: write ``eval.npz``
  (inputs keyed by the model's input names, plus ``labels``) and ``calib.npz`` (inputs only),
  deterministically from ``seed``; the two sets never share a sample;
- ``preprocess(...)`` and ``postprocess(...)``: the model's real input and output handling;
- ``metric(candidate_outputs, reference_outputs, dataset) -> dict[str, float]``: usable as
  ``onnxslim validate --metric benchmarks.tasks.<module>:metric`` (higher is better; the first
  key is the headline);
- ``runner(run, dataset)`` for stateful models (``vad`` only).

Task names use dashes (``ocr-rec``); their modules use underscores (``ocr_rec``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from benchmarks.tasks._common import TaskData, TaskUnavailable
from passes._errors import OnnxSlimError

__all__ = ["TASKS", "TaskData", "TaskUnavailable", "load_task", "metric_spec", "reference_model"]

#: Task name -> module path.
TASKS: dict[str, str] = {
    "digits": "benchmarks.tasks.digits",
    "ocr-rec": "benchmarks.tasks.ocr_rec",
    "ocr-cls": "benchmarks.tasks.ocr_cls",
    "ocr-det": "benchmarks.tasks.ocr_det",
    "detect": "benchmarks.tasks.detect",
    "vad": "benchmarks.tasks.vad",
    "layout": "benchmarks.tasks.layout",
    "doc-orient": "benchmarks.tasks.doc_orient",
}


def load_task(name: str) -> ModuleType:
    """Import the module of task ``name`` (e.g. ``ocr-rec``).

    Raises:
        OnnxSlimError: unknown task.
        TaskUnavailable: an optional package the task needs is not installed.
    """
    if name not in TASKS:
        raise OnnxSlimError(f"unknown task '{name}' (tasks: {', '.join(TASKS)})")
    try:
        return importlib.import_module(TASKS[name])
    except ImportError as err:
        missing = err.name or str(err)
        raise TaskUnavailable(f"task '{name}' needs {missing}: pip install -e \".[bench]\"") from err


def metric_spec(name: str) -> str:
    """The ``--metric`` value of task ``name``, e.g. ``benchmarks.tasks.ocr_rec:metric``."""
    return f"{TASKS[name]}:metric"


def reference_model(module: ModuleType) -> Path:
    """The fp32 model a task evaluates: ``module.MODEL_PATH`` or the zoo entry ``module.ZOO_NAME``."""
    path = getattr(module, "MODEL_PATH", None)
    if path is not None:
        return Path(path)
    from onnxslim import zoo

    return zoo.fetch(module.ZOO_NAME)
