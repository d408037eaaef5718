"""Calibration: samples in, per-tensor ranges out, with memory that does not grow with the data.

- :mod:`calibration.datasets` — readers (``.npz``, folders of ``.npz``/``.npy``, Python iterables,
  synthetic data), sample selection, checks against the model's inputs (names, dtypes, shapes;
  NaN/Inf as samples are read; class labels); :mod:`calibration.images` — image folders with a
  preprocessing spec (Pillow, ``images`` extra); :mod:`calibration._base` — the sample, input
  spec and :class:`~calibration._base.Dataset` both of them build on (so neither imports the other).
- :mod:`calibration.collect` — :func:`~calibration.collect.collect`: run onnxruntime over the data
  with the observed tensors exposed, in chunks that fit a memory budget, and stream each tensor
  into its observer; a calibration that observed no finite value is a ``CalibrationError``.
  :func:`~calibration.collect.observed_tensors` says which tensors a table should have.
- :mod:`calibration.observers` — MinMax, Percentile, Entropy (KL), MSE;
  :mod:`calibration.histogram` — the mergeable power-of-two histogram they share.
- :mod:`calibration.qparams` — scale and zero point for u8/s8, symmetric/asymmetric, reduce-range,
  per-tensor/per-channel.
- :mod:`calibration.table` — :class:`~calibration.table.CalibrationTable` ↔ versioned JSON, tied
  to the model by a fingerprint.

Nothing here imports :mod:`onnxslim` (the application depends on this library, not the reverse).
Submodules are imported explicitly (``from calibration.collect import collect``), so importing a
reader does not load onnxruntime.
"""

__all__: list[str] = []
