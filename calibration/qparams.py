"""Scale and zero point: how a float range ``[rmin, rmax]`` maps onto 8-bit integers.

``x ≈ (q - zero_point) * scale`` with ``q`` in ``[qmin, qmax]``:

========================  ==============  ==============================================
type / mode               ``[qmin, qmax]``  scale and zero point
========================  ==============  ==============================================
u8 asymmetric             [0, 255]        ``s = (rmax' - rmin') / 255``, ``zp = round(0 - rmin' / s)``
s8 asymmetric             [-128, 127]     ``s = (rmax' - rmin') / 255``, ``zp = round(-128 - rmin' / s)``
s8 symmetric              [-127, 127]     ``s = max|r| / 127``, ``zp = 0``
u8 symmetric              [0, 255]        ``s = 2 max|r| / 255``, ``zp = 128``
reduce_range (7-bit)      u8 [0, 127], s8 [-64, 63], s8 symmetric [-63, 63]
========================  ==============  ==============================================

``rmin' = min(rmin, 0)`` and ``rmax' = max(rmax, 0)``: the range always includes 0, so zero is
exactly representable (padding, ReLU outputs). A degenerate range (``rmin' == rmax' == 0``) gets
scale 1 and the zero point that represents 0. The zero point is clipped into ``[qmin, qmax]``.
Symmetric s8 uses the restricted range ``[-127, 127]`` so that ``-x`` is representable for every
``x``; reduce-range exists for CPUs without VNNI, where u8·s8 products summed in pairs must fit in
int16 (``255 · 64 · 2 < 32767``).

Every function accepts arrays: per-channel parameters come from per-channel ranges
(:func:`weight_quant_params` reduces a weight over every axis but ``axis``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "QUANT_TYPES",
    "QuantParams",
    "qrange",
    "quant_params",
    "weight_quant_params",
    "quantize",
    "dequantize",
]

QUANT_TYPES = ("uint8", "int8")


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Scale (float32) and zero point (``dtype``), scalars or one per channel along ``axis``."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    qmin: int
    qmax: int
    axis: int | None = None

    @property
    def per_channel(self) -> bool:
        """Whether there is one scale per channel."""
        return self.axis is not None


def qrange(dtype: str, *, symmetric: bool = False, reduce_range: bool = False) -> tuple[int, int]:
    """``(qmin, qmax)`` for ``dtype`` (``"uint8"`` or ``"int8"``), see the module table.

    Raises:
        ValueError: ``dtype`` is neither.
    """
    if dtype == "uint8":
        return (0, 127) if reduce_range else (0, 255)
    if dtype == "int8":
        if symmetric:
            return (-63, 63) if reduce_range else (-127, 127)
        return (-64, 63) if reduce_range else (-128, 127)
    raise ValueError(f"quantized type must be one of {QUANT_TYPES}, got {dtype!r}")


def quant_params(
    rmin: float | np.ndarray,
    rmax: float | np.ndarray,
    *,
    dtype: str = "uint8",
    symmetric: bool = False,
    reduce_range: bool = False,
    axis: int | None = None,
) -> QuantParams:
    """Scale and zero point for the range ``[rmin, rmax]`` (scalars, or arrays for per-channel).

    Raises:
        ValueError: a bound is not finite, ``rmin > rmax``, or ``dtype`` is unknown.
    """
    lo = np.minimum(np.asarray(rmin, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(rmax, dtype=np.float64), 0.0)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"range must be finite, got [{rmin}, {rmax}]")
    if np.any(np.asarray(rmin) > np.asarray(rmax)):
        raise ValueError(f"range is empty: min {rmin} > max {rmax}")
    qmin, qmax = qrange(dtype, symmetric=symmetric, reduce_range=reduce_range)
    if symmetric:
        absmax = np.maximum(-lo, hi)
        scale = 2.0 * absmax / (qmax - qmin)
        zero = np.full_like(scale, (qmin + qmax + 1) // 2)  # 0 for s8; 128 (64 reduced) for u8
    else:
        scale = (hi - lo) / (qmax - qmin)
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.round(qmin - lo / scale)
    degenerate = scale == 0.0
    scale = np.where(degenerate, 1.0, scale)
    if not symmetric:
        zero = np.where(degenerate, 0.0, zero)  # 0 is inside both [0, 255] and [-128, 127]
    zero = np.clip(zero, qmin, qmax)
    return QuantParams(
        scale=np.asarray(scale, dtype=np.float32),
        zero_point=np.asarray(zero, dtype=dtype),
        dtype=dtype,
        qmin=qmin,
        qmax=qmax,
        axis=axis,
    )


def weight_quant_params(
    weight: np.ndarray,
    *,
    axis: int | None = None,
    dtype: str = "int8",
    symmetric: bool = True,
    reduce_range: bool = False,
) -> QuantParams:
    """Parameters from a weight's own range: per-tensor, or per channel along ``axis``."""
    w = np.asarray(weight, dtype=np.float64)
    if axis is None:
        return quant_params(w.min(initial=0.0), w.max(initial=0.0), dtype=dtype, symmetric=symmetric,
                            reduce_range=reduce_range)
    axis = axis % w.ndim
    others = tuple(i for i in range(w.ndim) if i != axis)
    return quant_params(w.min(axis=others, initial=0.0), w.max(axis=others, initial=0.0), dtype=dtype,
                        symmetric=symmetric, reduce_range=reduce_range, axis=axis)


def _broadcast(values: np.ndarray, params: QuantParams, ndim: int) -> np.ndarray:
    if params.axis is None or values.ndim == 0:
        return values
    shape = [1] * ndim
    shape[params.axis % ndim] = -1
    return values.reshape(shape)


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """``clip(round(x / scale) + zero_point, qmin, qmax)`` (round half to even, as ONNX)."""
    x = np.asarray(x, dtype=np.float32)
    scale = _broadcast(params.scale, params, x.ndim)
    zero = _broadcast(params.zero_point.astype(np.int32), params, x.ndim)
    q = np.round(x / scale) + zero
    return np.clip(q, params.qmin, params.qmax).astype(params.dtype)


def dequantize(q: np.ndarray, params: QuantParams) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32."""
    q = np.asarray(q)
    scale = _broadcast(params.scale, params, q.ndim)
    zero = _broadcast(params.zero_point.astype(np.int32), params, q.ndim)
    return ((q.astype(np.int32) - zero) * scale).astype(np.float32)
