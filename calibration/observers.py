"""Observers: reduce each tensor to a calibration range as the data streams past.

An observer sees one tensor, one array at a time, and keeps only a fixed-size state: nothing per
sample. :meth:`Observer.compute_range` turns that state into ``(min, max)``.

============  ==================================================================================
method        range
============  ==================================================================================
``minmax``    the smallest and largest finite value seen (state: two floats)
``percentile`` cut ``100 - percentile`` percent of the values (symmetric on ``|x|`` by default,
              as onnxruntime and TensorRT do), from a streaming histogram
``entropy``   TensorRT's KL-divergence threshold on the ``|x|`` histogram (≥ 2048 bins over
              ``[0, max|x|]`` reduced to 128 quantized bins)
``mse``       the shrunk range with the least expected quantization + clipping error for
              ``bits``-bit quantization
============  ==================================================================================

Histogram observers share :class:`calibration.histogram.Histogram`, whose power-of-two grid
widens without losing counts, so the result does not depend on how the data was batched.
Scale and zero point for a range come from :mod:`calibration.qparams`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from calibration.histogram import Histogram, entropy_range, mse_range, percentile_range

__all__ = [
    "METHODS",
    "ObserverOptions",
    "Observer",
    "MinMaxObserver",
    "HistogramObserver",
    "PercentileObserver",
    "EntropyObserver",
    "MSEObserver",
    "make_observer",
]

METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclasses.dataclass(frozen=True)
class ObserverOptions:
    """Settings of the observers (each method reads the fields it needs).

    Attributes:
        bins: histogram bins per side of zero (a power of two).
        percentile: kept percentage for ``percentile`` (e.g. 99.99).
        symmetric: ``percentile``/``mse`` cut both sides alike; ``None`` means the method's
            default (percentile symmetric, mse asymmetric — for u8 activations).
        quantized_bins: target levels of ``entropy`` (TensorRT: 128).
        bits: target bit width of ``mse``.
    """

    bins: int = 4096
    percentile: float = 99.99
    symmetric: bool | None = None
    quantized_bins: int = 128
    bits: int = 8

    def __post_init__(self) -> None:
        if self.bins < 2 or self.bins & (self.bins - 1):
            raise ValueError(f"bins must be a power of two >= 2, got {self.bins}")
        if not 0.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        if not 2 <= self.quantized_bins <= self.bins:
            raise ValueError(f"quantized_bins must be in [2, bins], got {self.quantized_bins}")
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bits must be in [2, 16], got {self.bits}")


class Observer(abc.ABC):
    """Streaming reduction of one tensor to a range."""

    method: ClassVar[str]

    @abc.abstractmethod
    def update(self, array: np.ndarray) -> None:
        """Fold one array (any shape) into the state; non-finite values are counted and skipped."""

    @abc.abstractmethod
    def compute_range(self) -> tuple[float, float] | None:
        """``(min, max)``, or ``None`` when no finite value was seen."""

    @abc.abstractmethod
    def tracked_bytes(self) -> int:
        """Bytes of state held between updates (constant in the number of updates)."""

    @property
    def nonfinite(self) -> int:
        """How many NaN/inf values were skipped."""
        return 0

    def histogram(self) -> Histogram | None:
        """The histogram, for observers that keep one."""
        return None

    def options(self) -> dict[str, Any]:
        """The settings that shaped the result (recorded in the calibration table)."""
        return {}


class MinMaxObserver(Observer):
    """Smallest and largest finite value."""

    method = "minmax"

    def __init__(self, options: ObserverOptions | None = None) -> None:
        del options  # nothing to configure
        self.min = math.inf
        self.max = -math.inf
        self._nonfinite = 0

    def update(self, array: np.ndarray) -> None:
        x = np.asarray(array)
        if x.size == 0:
            return
        lo, hi = x.min(), x.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            finite = np.isfinite(x)
            self._nonfinite += int(x.size - np.count_nonzero(finite))
            if not finite.any():
                return
            lo, hi = x[finite].min(), x[finite].max()
        self.update_range(float(lo), float(hi))

    def update_range(self, lo: float, hi: float) -> None:
        """Fold an already reduced ``(min, max)``; a non-finite side is skipped and counted.

        ``(+inf, -inf)`` is what an in-graph ReduceMin/ReduceMax returns for an empty tensor: it
        means "no values" and is not counted.
        """
        if lo == math.inf and hi == -math.inf:
            return
        for value, bound in ((lo, "min"), (hi, "max")):
            if not math.isfinite(value):
                self._nonfinite += 1
            elif bound == "min":
                self.min = min(self.min, value)
            else:
                self.max = max(self.max, value)

    def compute_range(self) -> tuple[float, float] | None:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            return None
        return self.min, self.max

    def tracked_bytes(self) -> int:
        return 3 * 8

    @property
    def nonfinite(self) -> int:
        return self._nonfinite


class HistogramObserver(Observer):
    """Base of the observers that keep a :class:`Histogram`."""

    def __init__(self, options: ObserverOptions | None = None) -> None:
        self._options = options or ObserverOptions()
        self._hist = Histogram(self._options.bins)

    def update(self, array: np.ndarray) -> None:
        self._hist.update(array)

    def compute_range(self) -> tuple[float, float] | None:
        if self._hist.count == 0:
            return None
        lo, hi = self._range(self._hist)
        return float(lo), float(hi)

    @abc.abstractmethod
    def _range(self, hist: Histogram) -> tuple[float, float]:
        """The method's range from a non-empty histogram."""

    def tracked_bytes(self) -> int:
        return self._hist.nbytes() + 6 * 8

    @property
    def nonfinite(self) -> int:
        return self._hist.nonfinite

    def histogram(self) -> Histogram:
        return self._hist

    def options(self) -> dict[str, Any]:
        return {"bins": self._options.bins}


class PercentileObserver(HistogramObserver):
    """Cut ``100 - percentile`` percent (see :func:`calibration.histogram.percentile_range`)."""

    method = "percentile"

    @property
    def symmetric(self) -> bool:
        """Symmetric unless the options say otherwise."""
        return True if self._options.symmetric is None else self._options.symmetric

    def _range(self, hist: Histogram) -> tuple[float, float]:
        return percentile_range(hist, self._options.percentile, symmetric=self.symmetric)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "percentile": self._options.percentile, "symmetric": self.symmetric}


class EntropyObserver(HistogramObserver):
    """TensorRT's KL threshold (see :func:`calibration.histogram.entropy_range`)."""

    method = "entropy"

    def _range(self, hist: Histogram) -> tuple[float, float]:
        return entropy_range(hist, self._options.quantized_bins)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "quantized_bins": self._options.quantized_bins}


class MSEObserver(HistogramObserver):
    """Least expected squared error (see :func:`calibration.histogram.mse_range`)."""

    method = "mse"

    @property
    def symmetric(self) -> bool:
        """Asymmetric unless the options say otherwise."""
        return bool(self._options.symmetric)

    def _range(self, hist: Histogram) -> tuple[float, float]:
        return mse_range(hist, bits=self._options.bits, symmetric=self.symmetric)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "bits": self._options.bits, "symmetric": self.symmetric}


_OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def make_observer(method: str, options: ObserverOptions | None = None) -> Observer:
    """A new observer for ``method`` (one of :data:`METHODS`).

    Raises:
        ValueError: unknown method.
    """
    try:
        cls = _OBSERVERS[method]
    except KeyError:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}") from None
    return cls(options)  # type: ignore[call-arg]
