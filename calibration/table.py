"""CalibrationTable: tensor name → range, tied to the model it was measured on, as JSON.

Format (version 1)::

    {"format": "onnxslim-calibration", "version": 1,
     "model_sha256": "<model_fingerprint>", "method": "entropy", "samples": 512,
     "options": {...observer settings...}, "stats": {...how the run went...}, "notes": [...],
     "tensors": {"conv1_out": {"min": -1.5, "max": 6.0, "histogram": {...}?}, ...}}

``histogram`` is present only when asked for (it lets a later step re-derive a range with
another method without running the data again). A reader refuses other formats and newer
versions with a clear message.

The model fingerprint hashes what determines the computation — opset imports, graph inputs and
outputs, nodes, initializers — and leaves out producer, model metadata, doc strings and
``value_info``, so loading the same file again (or re-saving it with other metadata) gives the
same hash while any rewrite of the graph or its weights gives another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from calibration.qparams import QuantParams, quant_params
from passes._errors import CalibrationError

__all__ = ["FORMAT", "VERSION", "TensorRange", "CalibrationTable", "model_fingerprint"]

FORMAT = "onnxslim-calibration"
VERSION = 1


def _without_doc(message: Any) -> bytes:
    if getattr(message, "doc_string", ""):
        copy = type(message)()
        copy.CopyFrom(message)
        copy.doc_string = ""
        message = copy
    return message.SerializeToString()


def model_fingerprint(model: onnx.ModelProto) -> str:
    """sha256 (hex) of the model's computation; see the module docstring."""
    digest = hashlib.sha256()
    for entry in sorted((o.domain, o.version) for o in model.opset_import):
        digest.update(f"opset {entry[0]} {entry[1]}\n".encode())
    graph = model.graph
    for kind, items in (("input", graph.input), ("output", graph.output), ("node", graph.node),
                        ("initializer", graph.initializer), ("sparse", graph.sparse_initializer)):
        for item in items:
            data = _without_doc(item)
            digest.update(f"{kind} {len(data)}\n".encode())
            digest.update(data)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """The calibrated range of one tensor, and optionally its histogram state."""

    min: float
    max: float
    histogram: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"min": self.min, "max": self.max}
        if self.histogram is not None:
            out["histogram"] = dict(self.histogram)
        return out


@dataclasses.dataclass(frozen=True)
class CalibrationTable:
    """Ranges of a model's tensors, with how they were obtained."""

    model_sha256: str
    method: str
    samples: int
    tensors: Mapping[str, TensorRange]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.tensors)

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def range(self, name: str) -> tuple[float, float]:
        """``(min, max)`` of tensor ``name``.

        Raises:
            CalibrationError: the table has no range for it.
        """
        try:
            entry = self.tensors[name]
        except KeyError:
            raise CalibrationError(f"calibration table has no range for tensor '{name}'") from None
        return entry.min, entry.max

    def quant_params(self, name: str, *, dtype: str = "uint8", symmetric: bool = False,
                     reduce_range: bool = False) -> QuantParams:
        """Scale and zero point of tensor ``name`` (see :func:`calibration.qparams.quant_params`)."""
        lo, hi = self.range(name)
        return quant_params(lo, hi, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range)

    def check_model(self, model: onnx.ModelProto, *, fingerprint: str | None = None) -> None:
        """Refuse a model other than the one the table was measured on.

        Raises:
            CalibrationError: the model's fingerprint differs.
        """
        actual = fingerprint or model_fingerprint(model)
        if actual != self.model_sha256:
            raise CalibrationError(
                f"calibration table was made for another model (sha256 {self.model_sha256[:16]}…), "
                f"this model is {actual[:16]}…; calibrate this model (after the same rewrites) again"
            )

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form (see the module docstring)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_sha256": self.model_sha256,
            "method": self.method,
            "samples": self.samples,
            "options": dict(self.options),
            "stats": dict(self.stats),
            "notes": list(self.notes),
            "tensors": {name: r.to_dict() for name, r in self.tensors.items()},
        }

    def to_json(self) -> str:
        """JSON text (ranges are finite, so the output is strict JSON)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "calibration table") -> CalibrationTable:
        """Inverse of :meth:`to_dict`.

        Raises:
            CalibrationError: not a table, a newer version, or a malformed entry.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"{source}: not an onnxslim calibration table (no \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise CalibrationError(
                f"{source}: table version {version!r} is not supported (this onnxslim reads {VERSION})"
            )
        try:
            tensors = {str(k): _tensor_range(v) for k, v in data["tensors"].items()}
            return cls(
                model_sha256=str(data["model_sha256"]),
                method=str(data["method"]),
                samples=int(data["samples"]),
                tensors=tensors,
                options=dict(data.get("options", {})),
                stats=dict(data.get("stats", {})),
                notes=tuple(str(n) for n in data.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CalibrationError(f"{source}: malformed calibration table ({type(err).__name__}: {err})") from err

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON atomically (a temporary file renamed over ``path``).

        Raises:
            CalibrationError: the file cannot be written.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(self.to_json() + "\n")
            os.replace(tmp, path)
        except BaseException as err:  # Ctrl-C too: no temporary file is left behind
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(err, OSError):
                raise CalibrationError(f"{path}: cannot write the calibration table ({err.strerror or err})") from err
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, model: onnx.ModelProto | None = None) -> CalibrationTable:
        """Read a table; with ``model``, also check that it belongs to that model.

        Raises:
            CalibrationError: unreadable, not a table, or made for another model.
        """
        try:
            data = json.loads(Path(path).read_text())
        except OSError as err:
            raise CalibrationError(f"{path}: cannot read the calibration table ({err.strerror or err})") from err
        except ValueError as err:
            raise CalibrationError(f"{path}: not JSON ({err})") from err
        table = cls.from_dict(data, source=str(path))
        if model is not None:
            table.check_model(model)
        return table

    def summary(self) -> str:
        """A few lines for people: tensors, samples, time and what was skipped."""
        stats = self.stats
        lines = [f"calibrated {len(self.tensors)} tensors with '{self.method}' on {self.samples} samples"
                 + (f" in {stats['seconds']:.1f} s" if "seconds" in stats else "")]
        if stats.get("passes", 1) > 1:
            lines.append(f"data passes: {stats['passes']} (exposed tensors split to fit "
                         f"{_amount(stats.get('budget_bytes', 0))})")
        skipped = {k: v for k, v in dict(stats.get("skipped", {})).items() if v}
        if skipped:
            lines.append("not calibrated: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _amount(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def _tensor_range(entry: Any) -> TensorRange:
    lo, hi = float(entry["min"]), float(entry["max"])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"range [{lo}, {hi}] is not a finite interval")
    histogram = entry.get("histogram")
    return TensorRange(lo, hi, dict(histogram) if histogram is not None else None)
