"""Streaming histograms on a power-of-two grid, and the ranges chosen from them.

**Grid.** A :class:`Histogram` has ``2n`` bins, ``n`` per side (``n`` a power of two). Bin ``k``
(``-n <= k < n``) covers ``[k·W, (k+1)·W)`` with width ``W = 2**exp``. ``exp`` is the smallest
integer with ``max|x| < n·W``, so the largest magnitude always lies in the outer half of its
side: more than ``n/2`` bins span ``[0, max|x|]`` (with the default ``n = 4096``, more than 2048
— at least TensorRT's resolution).

**Widening without losing counts.** When new data reaches ``n·W``, ``exp`` grows by ``d`` and bin
``k`` moves into bin ``k >> d`` (``floor(k / 2**d)``). The new bins are unions of old bins —
``[k·W, (k+1)·W) ⊂ [⌊k/2^d⌋·2^d·W, (⌊k/2^d⌋+1)·2^d·W)`` — so counts are moved, never split or
dropped. Binning multiplies by ``2**-exp`` (exact in float32) and floors, so binning on a fine grid
and merging equals binning on the coarse grid directly: **the histogram after any sequence of
updates equals the histogram of all the data on the final grid, whatever the batching** (the
only exception: a negative *subnormal* float32 whose scaled value underflows to ``-0.0`` lands in
bin 0 instead of -1; normal floats are exact). Non-finite values are counted and left out.

**Ranges.** :func:`percentile_range` (cut a tail mass), :func:`entropy_range` (TensorRT's KL
threshold on the ``|x|`` histogram, :func:`kl_divergences`) and :func:`mse_range` (least expected
quantization error) turn a histogram into ``(min, max)``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "Histogram",
    "percentile_range",
    "kl_divergences",
    "entropy_range",
    "mse_errors",
    "mse_range",
]

EXP_MIN = -100  # finest grid: W = 2**-100; smaller magnitudes share bin 0 (or -1)
_BLOCK = 1 << 18  # elements binned at a time: keeps temporaries small and in cache


class Histogram:
    """Counts of finite values on the power-of-two grid described in the module docstring."""

    def __init__(self, bins: int = 4096) -> None:
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins per side must be a power of two >= 2, got {bins}")
        self.bins = bins
        self._log2 = bins.bit_length() - 1
        self.exp = EXP_MIN
        self.counts = np.zeros(2 * bins, dtype=np.int64)
        self.min = math.inf
        self.max = -math.inf
        self.count = 0
        self.nonfinite = 0

    @property
    def width(self) -> float:
        """Bin width ``W``."""
        return math.ldexp(1.0, self.exp)

    def nbytes(self) -> int:
        """Bytes held between updates."""
        return int(self.counts.nbytes)

    def update(self, array: np.ndarray) -> None:
        """Add the finite values of ``array`` (any shape, any real dtype; binned as float32)."""
        x = np.asarray(array)
        x = (x if x.dtype == np.float32 else x.astype(np.float32)).reshape(-1)
        if x.size == 0:
            return
        lo, hi = x.min(), x.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - np.count_nonzero(finite))
            x = x[finite]
            if x.size == 0:
                return
            lo, hi = x.min(), x.max()
        self.min, self.max = min(self.min, float(lo)), max(self.max, float(hi))
        self._fit(max(-float(lo), float(hi)))
        self._add(x)
        self.count += int(x.size)

    def _fit(self, magnitude: float) -> None:
        if magnitude <= 0.0:
            return
        _, q = math.frexp(magnitude)  # magnitude < 2**q = n · 2**(q - log2 n)
        exp = max(q - self._log2, EXP_MIN)
        if exp > self.exp:
            self._widen(exp - self.exp)

    def _widen(self, shift: int) -> None:
        n = self.bins
        k = np.arange(-n, n, dtype=np.int64)
        merged = np.zeros_like(self.counts)
        np.add.at(merged, (k >> min(shift, 62)) + n, self.counts)
        self.counts = merged
        self.exp += shift

    def _add(self, x: np.ndarray) -> None:
        n = self.bins
        inv = np.float32(math.ldexp(1.0, -self.exp))
        size = min(_BLOCK, x.size)
        scaled = np.empty(size, dtype=np.float32)
        index = np.empty(size, dtype=np.intp)
        for start in range(0, x.size, _BLOCK):
            part = x[start : start + _BLOCK]
            s, i = scaled[: part.size], index[: part.size]
            np.multiply(part, inv, out=s)
            np.floor(s, out=s)
            np.add(s, n, out=s)  # exact: |s| < n <= 2**24
            i[...] = s
            self.counts += np.bincount(i, minlength=2 * n)

    def abs_counts(self) -> np.ndarray:
        """Counts of ``|x|``: bin ``k`` holds ``[k·W, (k+1)·W)`` and negatives in ``(k·W, (k+1)·W]``."""
        n = self.bins
        return self.counts[n:] + self.counts[:n][::-1]

    def centers(self) -> np.ndarray:
        """Signed bin centers, in the order of :attr:`counts`."""
        return (np.arange(-self.bins, self.bins, dtype=np.float64) + 0.5) * self.width

    def state(self) -> dict:
        """A JSON-ready form: grid and the non-zero span of the counts."""
        nonzero = np.flatnonzero(self.counts)
        first, last = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
        return {"bins": self.bins, "exp": self.exp, "first": first - self.bins,
                "counts": self.counts[first:last].tolist(), "min": self.min, "max": self.max,
                "nonfinite": self.nonfinite}

    @classmethod
    def from_state(cls, state: dict) -> Histogram:
        """Inverse of :meth:`state`."""
        hist = cls(int(state["bins"]))
        hist.exp = int(state["exp"])
        counts = np.asarray(state["counts"], dtype=np.int64)
        start = int(state["first"]) + hist.bins
        hist.counts[start : start + counts.size] = counts
        hist.min, hist.max = float(state["min"]), float(state["max"])
        hist.count, hist.nonfinite = int(hist.counts.sum()), int(state.get("nonfinite", 0))
        return hist


def _clip(hist: Histogram, lo: float, hi: float) -> tuple[float, float]:
    """``[lo, hi]`` intersected with the observed ``[min, max]``."""
    return max(hist.min, lo), min(hist.max, hi)


def percentile_range(hist: Histogram, percentile: float, *, symmetric: bool = True) -> tuple[float, float]:
    """Cut ``100 - percentile`` percent of the values.

    Symmetric: ``t`` is the upper edge of the first ``|x|`` bin at which the cumulative count
    reaches ``percentile`` percent; the range is ``[-t, t]``. Asymmetric: half of the cut mass
    from each side of the signed histogram (lower edge of the first bin past the low tail, upper
    edge of the bin where the high tail starts). Both are clipped to the observed ``[min, max]``.
    """
    total = int(hist.counts.sum())
    width = hist.width
    if symmetric:
        cum = np.cumsum(hist.abs_counts())
        k = int(np.searchsorted(cum, percentile * total / 100.0, side="left"))
        t = (k + 1) * width
        return _clip(hist, -t, t)
    tail = (100.0 - percentile) * total / 200.0
    cum = np.cumsum(hist.counts)
    low = int(np.searchsorted(cum, tail, side="right"))
    high = int(np.searchsorted(cum, total - tail, side="left"))
    return _clip(hist, (low - hist.bins) * width, (high - hist.bins + 1) * width)


def _xlogx(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def kl_divergences(counts: np.ndarray, quantized_bins: int = 128, *, block: int = 512) -> np.ndarray:
    """TensorRT's KL divergence for every threshold ``i`` in ``[quantized_bins, len(counts)]``.

    For threshold ``i`` (bins ``0 … i-1`` kept): ``P`` is ``counts[:i]`` with the outlier count
    ``Σ counts[i:]`` added to its last bin. ``Q`` merges ``counts[:i]`` (without outliers) into
    ``quantized_bins`` chunks of ``m = i // quantized_bins`` bins (the last chunk takes the
    remainder) and spreads each chunk's total evenly over the bins where ``P`` is non-zero.
    ``KL(P̂‖Q̂)`` with both normalized. Computed in closed form from prefix sums::

        KL = (Σ p log p − Σ_j P_j log(T_j / N_j)) / S_p − log S_p + log S_q

    (``T_j`` chunk total, ``N_j`` non-zero bins of ``P`` in the chunk, ``P_j`` its ``P`` mass,
    ``S_p`` all counts, ``S_q`` counts below ``i``). TensorRT/MXNet also add ``ε = 1e-4`` to empty
    bins and take it from the others; with integer counts that changes KL by less than 1e-4
    relative, so it is left out. A ``Q`` that is zero where ``P`` is not gives ``inf``.
    """
    h = np.asarray(counts, dtype=np.float64)
    n, qb = h.size, quantized_bins
    csum = np.concatenate([[0.0], np.cumsum(h)])
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    total = csum[-1]
    out = []
    for first in range(qb, n + 1, block):
        i = np.arange(first, min(first + block, n + 1))
        outliers = total - csum[i]
        edges = np.arange(qb + 1)[None, :] * (i // qb)[:, None]
        edges[:, qb] = i
        t = csum[edges[:, 1:]] - csum[edges[:, :-1]]
        nz = (nonzero[edges[:, 1:]] - nonzero[edges[:, :-1]]).astype(np.float64)
        last = h[i - 1]
        nz[:, -1] += (last == 0) & (outliers > 0)
        p = t.copy()
        p[:, -1] += outliers
        with np.errstate(divide="ignore", invalid="ignore"):
            plogq = np.where(p > 0, p * np.log(t / np.where(nz > 0, nz, 1.0)), 0.0).sum(axis=1)
            sum_plogp = plogp[i - 1] + _xlogx(last + outliers)
            kl = (sum_plogp - plogq) / total - np.log(total) + np.log(csum[i])
        out.append(np.where(np.isnan(kl), np.inf, kl))
    return np.concatenate(out) if out else np.zeros(0)


def entropy_range(hist: Histogram, quantized_bins: int = 128) -> tuple[float, float]:
    """TensorRT's calibration: the ``|x|`` threshold ``t = i·W`` minimizing :func:`kl_divergences`.

    The range is ``[-t, t]`` clipped to the observed ``[min, max]``; with no more used bins than
    ``quantized_bins`` nothing is clipped.
    """
    counts = hist.abs_counts()
    nonzero = np.flatnonzero(counts)
    used = int(nonzero[-1]) + 1 if nonzero.size else 0
    if used <= quantized_bins:
        return hist.min, hist.max
    kl = kl_divergences(counts[:used], quantized_bins)
    t = (quantized_bins + int(np.argmin(kl))) * hist.width
    return _clip(hist, -t, t)


def mse_errors(hist: Histogram, *, bits: int = 8, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ranges and their expected squared error (``lows``/``highs`` stacked, errors).

    Candidates shrink the observed range about zero, ``[α·lo, α·hi]`` (symmetric: ``[-α·M, α·M]``,
    ``M = max|x|``), with ``α·M`` on every bin edge up to ``M`` plus ``α = 1``. Error of a
    candidate ``[a, b]``, each bin represented by its center ``c`` with count ``h``::

        E = N_inside · Δ² / 12  +  Σ_{c < a} h (c − a)²  +  Σ_{c > b} h (c − b)²

    with step ``Δ = (b − a) / L``, ``L = 2**bits − 1`` levels (symmetric: ``2**bits − 2``, the
    restricted signed range). Sums come from prefix sums, so every candidate costs O(log bins).
    """
    lo, hi = min(hist.min, 0.0), max(hist.max, 0.0)
    magnitude = max(-lo, hi)
    steps = max(1, math.ceil(magnitude / hist.width))
    alpha = np.append(np.minimum(np.arange(1, steps + 1) * hist.width / magnitude, 1.0), 1.0)
    if symmetric:
        a, b, levels = -alpha * magnitude, alpha * magnitude, 2**bits - 2
    else:
        a, b, levels = alpha * lo, alpha * hi, 2**bits - 1
    c, h = hist.centers(), hist.counts.astype(np.float64)
    keep = h > 0
    c, h = c[keep], h[keep]
    s0, s1, s2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in (h, h * c, h * c * c))
    ia = np.searchsorted(c, a, side="left")  # bins [0, ia) lie below a
    ib = np.searchsorted(c, b, side="right")  # bins [ib, end) lie above b
    below = s2[ia] - 2 * a * s1[ia] + a * a * s0[ia]
    above = (s2[-1] - s2[ib]) - 2 * b * (s1[-1] - s1[ib]) + b * b * (s0[-1] - s0[ib])
    inside = s0[ib] - s0[ia]
    error = inside * ((b - a) / levels) ** 2 / 12.0 + np.maximum(below, 0.0) + np.maximum(above, 0.0)
    return np.stack([a, b]), error


def mse_range(hist: Histogram, *, bits: int = 8, symmetric: bool = False) -> tuple[float, float]:
    """The candidate of :func:`mse_errors` with the least error, clipped to ``[min, max]``."""
    if hist.min == hist.max == 0.0:
        return 0.0, 0.0
    bounds, error = mse_errors(hist, bits=bits, symmetric=symmetric)
    best = int(np.argmin(error))
    return _clip(hist, float(bounds[0, best]), float(bounds[1, best]))
