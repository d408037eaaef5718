"""Datasets: where calibration and evaluation samples come from, checked against the model.

A *sample* is ``dict[input name -> np.ndarray]`` holding one model run's inputs. Readers:

- :class:`NpzDataset` — one ``.npz`` file, arrays keyed by input name with samples on axis 0.
  When an array has one more axis than the model input, sample ``i`` is ``array[i]`` (each row
  is a whole input); when it has the input's rank, sample ``i`` is ``array[i:i+1]`` (the model's
  batch axis is kept, size 1). An optional ``labels`` array (one label per sample) is for
  validation only and never fed to the model.
- :class:`FolderDataset` — a folder of ``.npz`` files (one sample each, keyed by input name) or
  ``.npy`` files (one sample each, for single-input models), in sorted file-name order; an
  optional ``labels.npy`` holds one label per sample. Files are read one at a time.
- :class:`IterableDataset` — any Python iterable of sample dicts.

:func:`check_dataset` compares names, dtypes and shapes with the model's inputs before any run
and raises a :class:`DataError` that names the input and shows expected versus actual.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from passes._errors import DataError

__all__ = [
    "Sample",
    "InputSpec",
    "input_specs",
    "Dataset",
    "NpzDataset",
    "FolderDataset",
    "IterableDataset",
    "open_dataset",
    "check_sample",
    "check_dataset",
    "LABELS_KEY",
]

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

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Sample]:
        """Yield samples in a fixed order."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @property
    def labels(self) -> np.ndarray | None:
        """One label per sample, or ``None``."""
        return None


class NpzDataset(Dataset):
    """Samples stacked on axis 0 of the arrays of one ``.npz`` file."""

    def __init__(self, path: str | os.PathLike[str], specs: Sequence[InputSpec] | None = None) -> None:
        self.source = str(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                self._arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: cannot read as .npz ({' '.join(str(err).split())})") from err
        self._labels = self._arrays.pop(LABELS_KEY, None)
        if not self._arrays:
            raise DataError(f"{path}: holds no input arrays (only {LABELS_KEY!r} or nothing)")
        counts = {k: (len(a) if a.ndim else 0) for k, a in self._arrays.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            shown = ", ".join(f"'{k}': {n}" for k, n in counts.items())
            raise DataError(f"{path}: arrays must hold the same number (≥1) of samples on axis 0, got {shown}")
        self._count = next(iter(counts.values()))
        if self._labels is not None and len(self._labels) != self._count:
            raise DataError(f"{path}: {len(self._labels)} labels for {self._count} samples")
        self._ranks = {s.name: len(s.dims) for s in specs or ()}

    def __len__(self) -> int:
        return self._count

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self._count):
            yield {k: self._row(k, a, i) for k, a in self._arrays.items()}

    def _row(self, key: str, array: np.ndarray, i: int) -> np.ndarray:
        rank = self._ranks.get(key)
        if rank is not None and array.ndim == rank:
            return array[i : i + 1]  # the model's own batch axis, size 1
        return array[i]


class FolderDataset(Dataset):
    """One sample per ``.npz``/``.npy`` file in a folder, read lazily in sorted order."""

    def __init__(self, path: str | os.PathLike[str], specs: Sequence[InputSpec] | None = None) -> None:
        folder = Path(path)
        self.source = str(folder)
        self._files = sorted(
            p for p in folder.iterdir() if p.suffix in (".npz", ".npy") and p.name != f"{LABELS_KEY}.npy"
        )
        if not self._files:
            raise DataError(f"{folder}: no .npz or .npy sample files")
        if len({p.suffix for p in self._files}) > 1:
            raise DataError(f"{folder}: mixes .npz and .npy files; use one kind")
        self._specs = list(specs or ())
        labels_path = folder / f"{LABELS_KEY}.npy"
        self._labels = np.load(labels_path, allow_pickle=False) if labels_path.exists() else None
        if self._labels is not None and len(self._labels) != len(self._files):
            raise DataError(f"{labels_path}: {len(self._labels)} labels for {len(self._files)} sample files")

    def __len__(self) -> int:
        return len(self._files)

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def __iter__(self) -> Iterator[Sample]:
        for path in self._files:
            yield self._read(path)

    def _read(self, path: Path) -> Sample:
        try:
            if path.suffix == ".npy":
                if len(self._specs) != 1:
                    raise DataError(f"{path}: .npy samples need a model with exactly one input")
                return {self._specs[0].name: np.load(path, allow_pickle=False)}
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files if k != LABELS_KEY}
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path}: cannot read ({' '.join(str(err).split())})") from err


class IterableDataset(Dataset):
    """Wraps an in-memory sequence of samples (and optional labels)."""

    def __init__(self, samples: Iterable[Mapping[str, np.ndarray]], labels: Sequence | None = None) -> None:
        self.source = "python iterable"
        self._samples = [dict(s) for s in samples]
        self._labels = None if labels is None else np.asarray(labels)
        if self._labels is not None and len(self._labels) != len(self._samples):
            raise DataError(f"{len(self._labels)} labels for {len(self._samples)} samples")

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)


def open_dataset(path: str | os.PathLike[str], specs: Sequence[InputSpec] | None = None) -> Dataset:
    """Open a ``.npz`` file or a folder of sample files.

    Raises:
        DataError: the path does not exist or is neither a ``.npz`` file nor a folder.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return FolderDataset(path, specs)
    if path.suffix == ".npz":
        return NpzDataset(path, specs)
    raise DataError(f"{path}: data must be a .npz file or a folder of .npz/.npy files")


def check_sample(sample: Mapping[str, np.ndarray], specs: Sequence[InputSpec], *, where: str) -> None:
    """Check one sample's names, dtypes and shapes against the model inputs.

    Raises:
        DataError: naming the input and showing expected versus actual.
    """
    wanted = {s.name for s in specs}
    missing = [s.name for s in specs if s.name not in sample]
    if missing:
        raise DataError(f"{where}: no data for input '{missing[0]}' (data has {sorted(sample)})")
    extra = sorted(set(sample) - wanted)
    if extra:
        raise DataError(f"{where}: '{extra[0]}' is not an input of the model (inputs: {sorted(wanted)})")
    for spec in specs:
        array = np.asarray(sample[spec.name])
        if array.dtype != spec.dtype:
            raise DataError(f"{where}: input '{spec.name}' is {array.dtype}, the model expects {spec.dtype}")
        if spec.dims and array.ndim != len(spec.dims):
            raise DataError(
                f"{where}: input '{spec.name}' has shape {'x'.join(map(str, array.shape)) or 'scalar'}, "
                f"the model expects {spec.shape_text()}"
            )
        for want, got in zip(spec.dims, array.shape):
            if isinstance(want, int) and want != got:
                raise DataError(
                    f"{where}: input '{spec.name}' has shape {'x'.join(map(str, array.shape))}, "
                    f"the model expects {spec.shape_text()}"
                )


def check_dataset(dataset: Dataset, specs: Sequence[InputSpec]) -> None:
    """Check the first sample (and the sample count) before any run; see :func:`check_sample`."""
    if len(dataset) == 0:
        raise DataError(f"{dataset.source}: holds no samples")
    first = next(iter(dataset))
    check_sample(first, specs, where=f"{dataset.source} (sample 0)")
