"""The pieces every dataset reader shares: a sample, a model input's spec, and :class:`Dataset`.

Kept apart from :mod:`calibration.datasets` so that readers in other modules (images) and
:mod:`calibration.datasets`, which opens them, import this and not each other.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np
import onnx

from passes._errors import DataError

__all__ = ["Sample", "LABELS_KEY", "InputSpec", "input_specs", "Dataset"]

Sample = dict[str, np.ndarray]
LABELS_KEY = "labels"


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One graph input: name, numpy dtype, and dims (int, a symbolic name, or ``None``)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]

    def shape_text(self) -> str:
        """Dims joined with ``x``; symbolic dims by name, unnamed dynamic dims as ``?``."""
        return "x".join("?" if d is None else str(d) for d in self.dims) or "scalar"


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str | None, ...]:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return ()
    out: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            out.append(dim.dim_param)
        else:  # unnamed, or a negative dim_value (Paddle exports write -1 for dynamic)
            out.append(None)
    return tuple(out)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (initializers listed as graph inputs are skipped).

    Raises:
        DataError: an input is not a tensor (sequences and maps are not supported).
    """
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        elem = value.type.tensor_type.elem_type
        if not value.type.HasField("tensor_type") or elem == 0:
            raise DataError(f"input '{value.name}' is not a tensor; only tensor inputs are supported")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        specs.append(InputSpec(value.name, dtype, _dims(value)))
    return specs


class Dataset(abc.ABC):
    """A re-iterable, sized source of samples, with optional labels (one per sample)."""

    source: str = "data"
    synthetic: bool = False  # True for made-up data: ranges measured on it are not meaningful
    #: Samples of the underlying data left out for holding NaN/Inf
    #: (``prepare_dataset(..., skip_nonfinite=True)``); 0 otherwise.
    skipped_nonfinite: int = 0

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Sample]:
        """Yield samples in a fixed order."""

    def sample(self, index: int) -> Sample:
        """Sample ``index`` (readers with random access override this; the default iterates)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range (0..{len(self) - 1})")
        return next(itertools.islice(iter(self), index, None))

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    _labels: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray | None:
        """One label per sample, or ``None``."""
        return self._labels
