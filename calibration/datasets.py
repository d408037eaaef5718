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
- :class:`calibration.images.ImageFolderDataset` — a folder of images with a preprocessing spec
  (needs Pillow, the ``images`` extra); :func:`open_dataset` picks it for a folder of images.
- :class:`SyntheticDataset` — random inputs for smoke tests; it logs a warning, because ranges
  measured on it say nothing about real inputs.

:func:`select_samples` takes the first ``N`` samples, or ``N`` samples in a seeded random order.
Readers hold at most one sample at a time where the format allows: ``.npz`` members stored
uncompressed (``np.savez``) are read row by row from the file; compressed members are loaded whole.

:func:`check_dataset` compares names, dtypes and shapes with the model's inputs before any run
and raises a :class:`DataError` that names the input and shows expected versus actual.
:func:`prepare_dataset` also checks every sample for NaN/Inf as it is read (:class:`FiniteSamples`),
or drops such samples on request; :func:`check_class_labels` checks labels for labeled accuracy.
"""

from __future__ import annotations

import itertools
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from calibration._base import LABELS_KEY, Dataset, InputSpec, Sample, input_specs
from calibration._npz import StoredArray, open_npz
from calibration.images import IMAGE_SUFFIXES, ImageFolderDataset, ImageSpec
from passes._errors import DataError

__all__ = [
    "Sample",
    "InputSpec",
    "input_specs",
    "Dataset",
    "NpzDataset",
    "FolderDataset",
    "IterableDataset",
    "SyntheticDataset",
    "Subset",
    "select_samples",
    "open_dataset",
    "check_sample",
    "check_dataset",
    "prepare_dataset",
    "FiniteSamples",
    "nonfinite_problem",
    "check_class_labels",
    "LABELS_KEY",
]

log = logging.getLogger(__name__)


class NpzDataset(Dataset):
    """Samples stacked on axis 0 of the arrays of one ``.npz`` file."""

    def __init__(self, path: str | os.PathLike[str], specs: Sequence[InputSpec] | None = None) -> None:
        self.source = str(path)
        try:
            self._arrays = open_npz(Path(path))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: cannot read as .npz ({' '.join(str(err).split())})") from err
        labels = self._arrays.pop(LABELS_KEY, None)
        self._labels = None if labels is None else np.asarray(labels[:] if labels.ndim else labels)
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

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self._count):
            yield self.sample(i)

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self._count:
            raise IndexError(f"sample {index} out of range (0..{self._count - 1})")
        return {k: self._row(k, a, index) for k, a in self._arrays.items()}

    def _row(self, key: str, array: np.ndarray | StoredArray, i: int) -> np.ndarray:
        rank = self._ranks.get(key)
        if rank is not None and array.ndim == rank:
            return array[i : i + 1]  # the model's own batch axis, size 1
        return np.asarray(array[i])  # a row of a 1-D array is a 0-d array, not a numpy scalar


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

    def __iter__(self) -> Iterator[Sample]:
        for path in self._files:
            yield self._read(path)

    def sample(self, index: int) -> Sample:
        return self._read(self._files[index])

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

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    def sample(self, index: int) -> Sample:
        return self._samples[index]


class SyntheticDataset(Dataset):
    """``count`` random samples for smoke tests: floats standard normal, integers in ``[0, 8)``.

    Deterministic for a seed (sample ``i`` is drawn from ``default_rng([seed, i])``). A dynamic
    dim takes its value from ``shapes`` (whole shape per input name), else ``default_dim``.
    Creating one logs a warning: ranges (and scales) measured on it are not meaningful.
    """

    synthetic = True

    def __init__(self, specs: Sequence[InputSpec], count: int, *, seed: int = 0,
                 shapes: Mapping[str, Sequence[int]] | None = None, default_dim: int = 1) -> None:
        if count < 1:
            raise DataError(f"synthetic data needs at least one sample, got {count}")
        self.source = "synthetic random data"
        self._count, self._seed = count, seed
        shapes = dict(shapes or {})
        self._shapes = {}
        for spec in specs:
            given = shapes.get(spec.name)
            dims = given if given is not None else [d if isinstance(d, int) else default_dim for d in spec.dims]
            self._shapes[spec.name] = (spec.dtype, tuple(int(d) for d in dims))
        log.warning("calibrating on synthetic random data: ranges and scales from it are not meaningful "
                    "for real inputs (use it for smoke tests only)")

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self._count):
            yield self.sample(i)

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self._count:
            raise IndexError(f"sample {index} out of range (0..{self._count - 1})")
        rng = np.random.default_rng([self._seed, index])
        out = {}
        for name, (dtype, shape) in self._shapes.items():
            if dtype == np.bool_:
                out[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
            elif np.issubdtype(dtype, np.integer):
                out[name] = rng.integers(0, 8, size=shape).astype(dtype)
            else:
                out[name] = rng.standard_normal(size=shape).astype(dtype)
        return out


class Subset(Dataset):
    """Samples ``indices`` of another dataset, in that order (labels follow)."""

    def __init__(self, base: Dataset, indices: Sequence[int], *, how: str = "") -> None:
        self._base, self._indices = base, [int(i) for i in indices]
        self.synthetic = base.synthetic
        self.source = f"{base.source} ({how or 'subset'})"

    def __len__(self) -> int:
        return len(self._indices)

    @property
    def labels(self) -> np.ndarray | None:
        labels = self._base.labels
        return None if labels is None else np.asarray(labels)[self._indices]

    def __iter__(self) -> Iterator[Sample]:
        if self._indices == list(range(len(self._indices))):
            return itertools.islice(iter(self._base), len(self._indices))  # a prefix: stream it
        return (self._base.sample(i) for i in self._indices)

    def sample(self, index: int) -> Sample:
        return self._base.sample(self._indices[index])


def select_samples(dataset: Dataset, *, limit: int | None = None, shuffle: bool = False, seed: int = 0) -> Dataset:
    """At most ``limit`` samples: the first ones, or (``shuffle``) a seeded random choice in random order.

    Raises:
        DataError: ``limit`` is below 1.
    """
    if limit is not None and limit < 1:
        raise DataError(f"--samples must be at least 1, got {limit}")
    total = len(dataset)
    count = total if limit is None else min(limit, total)
    if shuffle:
        order = np.random.default_rng(seed).permutation(total)[:count]
        return Subset(dataset, order.tolist(), how=f"{count} of {total} samples, shuffled with seed {seed}")
    if count == total:
        return dataset
    return Subset(dataset, range(count), how=f"first {count} of {total} samples")


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file())


def open_dataset(path: str | os.PathLike[str], specs: Sequence[InputSpec] | None = None, *,
                 image_spec: object | None = None) -> Dataset:
    """Open a ``.npz`` file, a folder of ``.npz``/``.npy`` sample files, or a folder of images.

    ``image_spec`` (a :class:`calibration.images.ImageSpec`) says how images become inputs; a
    folder holding images and no ``.npz``/``.npy`` files is read as images (default spec when
    ``None``).

    Raises:
        DataError: the path does not exist or is none of those.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        samples = any(p.suffix in (".npz", ".npy") for p in path.iterdir())
        if image_spec is not None or (not samples and _has_images(path)):
            return ImageFolderDataset(path, specs, spec=image_spec or ImageSpec())  # type: ignore[arg-type]
        return FolderDataset(path, specs)
    if image_spec is not None:
        raise DataError(f"{path}: image preprocessing applies to a folder of images, not to a file")
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


def nonfinite_problem(sample: Mapping[str, np.ndarray]) -> str | None:
    """Which input of ``sample`` holds NaN/Inf and how many, or ``None`` when all are finite.

    Only float (and complex) arrays are looked at; one ``np.isfinite`` per array, nothing kept.
    """
    for name, value in sample.items():
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                return f"input '{name}' has {bad} NaN/Inf value{'s' if bad > 1 else ''}"
    return None


def _origin(dataset: Dataset, index: int) -> tuple[str, int]:
    """The source and sample index, in the data as given, of sample ``index`` of ``dataset``
    (through any :class:`Subset`: a shuffled or limited selection names the file's own index)."""
    while isinstance(dataset, (Subset, FiniteSamples)):
        if isinstance(dataset, Subset):
            index = dataset._indices[index]
        dataset = dataset._base
    return dataset.source, index


class FiniteSamples(Dataset):
    """Another dataset whose samples are checked for NaN/Inf as they are read (nothing is held).

    Raises (when a sample is read):
        DataError: ``"<source>: sample <i>: input '<name>' has <n> NaN/Inf values"``, with the
            sample's index in the data as given.
    """

    def __init__(self, base: Dataset) -> None:
        self._base = base
        self.source, self.synthetic = base.source, base.synthetic

    def __len__(self) -> int:
        return len(self._base)

    @property
    def labels(self) -> np.ndarray | None:
        return self._base.labels

    def _checked(self, sample: Sample, index: int) -> Sample:
        problem = nonfinite_problem(sample)
        if problem:
            source, origin = _origin(self._base, index)
            raise DataError(f"{source}: sample {origin}: {problem} "
                            "(fix the data, or --skip-nonfinite drops such samples)")
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for index, sample in enumerate(self._base):
            yield self._checked(sample, index)

    def sample(self, index: int) -> Sample:
        return self._checked(self._base.sample(index), index)


def _finite_only(dataset: Dataset) -> Dataset:
    """``dataset`` without the samples that hold NaN/Inf (one scan, nothing kept but indices);
    the result's ``skipped_nonfinite`` (and ``source``) say how many went."""
    keep: list[int] = []
    first: tuple[int, str] | None = None
    for index, sample in enumerate(dataset):
        problem = nonfinite_problem(sample)
        if problem is None:
            keep.append(index)
        elif first is None:
            first = (index, problem)
    dropped = len(dataset) - len(keep)
    if not dropped:
        return dataset
    if not keep:
        source, origin = _origin(dataset, first[0]) if first else (dataset.source, 0)
        raise DataError(f"{dataset.source}: all {dropped} samples hold NaN/Inf, none is left to use "
                        f"({source}: sample {origin}: {first[1] if first else '?'})")
    subset = Subset(dataset, keep, how=f"{dropped} of {len(dataset)} samples skipped for NaN/Inf")
    subset.skipped_nonfinite = dropped
    return subset


def prepare_dataset(source: str | os.PathLike[str] | Dataset, specs: Sequence[InputSpec], *, limit: int | None = None,
                    shuffle: bool = False, seed: int = 0, image_spec: object | None = None,
                    skip_nonfinite: bool = False) -> Dataset:
    """``source`` (a path for :func:`open_dataset`, or a dataset) with at most ``limit`` samples
    (:func:`select_samples`), checked against ``specs`` (:func:`check_dataset`), and every sample
    checked for NaN/Inf as it is read (:class:`FiniteSamples`: the error names the source, the
    sample and the input).

    With ``skip_nonfinite`` the samples holding NaN/Inf are dropped instead: one scan after the
    limit (so fewer than ``limit`` may remain), then a :class:`Subset`. How many were dropped is
    the returned dataset's ``skipped_nonfinite`` (0 when none), and its ``source`` says so.

    Raises:
        DataError: as those three; a sample with NaN/Inf (when it is read); no sample, or no
            finite sample left after skipping.
    """
    dataset = source if isinstance(source, Dataset) else open_dataset(source, specs, image_spec=image_spec)
    dataset = select_samples(dataset, limit=limit, shuffle=shuffle, seed=seed)
    if len(dataset) == 0:
        raise DataError(f"{dataset.source}: holds no samples")
    if skip_nonfinite:
        dataset = _finite_only(dataset)
    elif not isinstance(dataset, FiniteSamples):  # checked once, also when prepared twice
        dataset = FiniteSamples(dataset)
    check_dataset(dataset, specs)
    return dataset


def check_class_labels(labels: np.ndarray, *, count: int, classes: int, where: str = "labels") -> np.ndarray:
    """``labels`` as one integer class id per sample, checked for labeled accuracy.

    Args:
        labels: the data's labels: shape ``[N]`` (or ``[N, 1]``), an integer dtype.
        count: how many samples were predicted (``N``).
        classes: the size of the class axis of the scores they are compared with.
        where: how the message names the labels.

    Returns:
        The labels as a 1-D integer array.

    Raises:
        DataError: saying what is wrong: one-hot (``[N, C]``) or other multi-axis labels, float
            (or other non-integer) labels, a count other than ``count``, ids outside
            ``[0, classes)``.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        shape = ", ".join(map(str, array.shape))
        hint = " (one-hot?)" if array.ndim == 2 else ""
        raise DataError(f"{where} are {array.ndim}-D [{shape}]{hint}: give one integer class id per sample")
    if not np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        whole = np.issubdtype(array.dtype, np.floating) and bool(np.all(np.isfinite(array) & (array == np.round(array))))
        hint = " (whole numbers: store them as integers, e.g. np.int64)" if whole else ""
        raise DataError(f"{where} are {array.dtype}, not integers{hint}: give one integer class id per sample")
    if len(array) != count:
        raise DataError(f"{where}: {len(array)} labels for {count} predictions: give one class id per sample")
    bad = np.flatnonzero((array < 0) | (array >= classes))
    if bad.size:
        raise DataError(f"{where}: label {int(array[bad[0]])} of sample {int(bad[0])} is out of range for "
                        f"{classes} classes (ids must be in [0, {classes}); {bad.size} such label"
                        f"{'s' if bad.size > 1 else ''})")
    return array
