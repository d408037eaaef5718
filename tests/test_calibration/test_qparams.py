"""Scale / zero-point math: golden numbers computed by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.qparams import dequantize, qrange, quant_params, quantize, weight_quant_params


def _check(params, scale: float, zero: int) -> None:
    assert params.scale == np.float32(scale), (params.scale, scale)
    assert int(params.zero_point) == zero
    assert params.zero_point.dtype == np.dtype(params.dtype)


@pytest.mark.parametrize(
    ("rmin", "rmax", "dtype", "symmetric", "reduce_range", "scale", "zero"),
    [
        # u8 asymmetric on [-1, 2]: s = 3/255; zp = round(0 - (-1)/(3/255)) = round(85) = 85
        (-1.0, 2.0, "uint8", False, False, 3 / 255, 85),
        # s8 symmetric on [-1, 2]: max|r| = 2 over 127 levels: s = 2/127; zp = 0
        (-1.0, 2.0, "int8", True, False, 2 / 127, 0),
        # s8 asymmetric on [-1, 2]: s = 3/255; zp = round(-128 + 85) = -43
        (-1.0, 2.0, "int8", False, False, 3 / 255, -43),
        # u8 symmetric on [-1, 2]: s = 2·2/255 = 4/255; zp = (0 + 255 + 1) // 2 = 128
        (-1.0, 2.0, "uint8", True, False, 4 / 255, 128),
        # u8 reduce-range [0, 127] on [-1, 2]: s = 3/127; zp = round(1/(3/127)) = round(42.33) = 42
        (-1.0, 2.0, "uint8", False, True, 3 / 127, 42),
        # s8 reduce-range [-64, 63] on [-1, 2]: s = 3/127; zp = round(-64 + 42.33) = round(-21.67) = -22
        (-1.0, 2.0, "int8", False, True, 3 / 127, -22),
        # s8 symmetric reduce-range [-63, 63] on [-1, 2]: s = 2/63; zp = 0
        (-1.0, 2.0, "int8", True, True, 2 / 63, 0),
        # range always includes 0: [0.5, 2] is widened to [0, 2]: s = 2/255, zp = 0
        (0.5, 2.0, "uint8", False, False, 2 / 255, 0),
        # all negative [-4, -1] -> [-4, 0]: s = 4/255, zp = round(0 + 4/(4/255)) = 255
        (-4.0, -1.0, "uint8", False, False, 4 / 255, 255),
        # degenerate [0, 0]: scale 1, the zero point that represents 0
        (0.0, 0.0, "uint8", False, False, 1.0, 0),
        (0.0, 0.0, "int8", False, False, 1.0, 0),
        (0.0, 0.0, "int8", True, False, 1.0, 0),
        (0.0, 0.0, "uint8", True, False, 1.0, 128),
    ],
)
def test_golden_per_tensor(rmin, rmax, dtype, symmetric, reduce_range, scale, zero) -> None:
    _check(quant_params(rmin, rmax, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range), scale, zero)


def test_qranges() -> None:
    assert qrange("uint8") == (0, 255) and qrange("uint8", reduce_range=True) == (0, 127)
    assert qrange("int8") == (-128, 127) and qrange("int8", reduce_range=True) == (-64, 63)
    assert qrange("int8", symmetric=True) == (-127, 127)
    assert qrange("int8", symmetric=True, reduce_range=True) == (-63, 63)
    with pytest.raises(ValueError, match="one of"):
        qrange("int4")


def test_zero_is_exact_and_range_is_covered() -> None:
    params = quant_params(-1.0, 2.0)  # u8: zp 85, s 3/255
    assert dequantize(quantize(np.float32(0.0), params), params) == 0.0
    # -1 -> round(-85) + 85 = 0; 2 -> round(170) + 85 = 255; 3 saturates at 255
    np.testing.assert_array_equal(quantize(np.array([-1.0, 2.0, 3.0], np.float32), params), [0, 255, 255])
    back = dequantize(quantize(np.linspace(-1, 2, 101, dtype=np.float32), params), params)
    assert np.max(np.abs(back - np.linspace(-1, 2, 101))) <= 3 / 255 / 2 + 1e-6  # half a step


def test_per_channel_weights() -> None:
    # Conv weight [2 out, 1 in, 1, 2]: channel 0 spans [-1, 0.5], channel 1 spans [0, 4]
    w = np.array([[[[-1.0, 0.5]]], [[[4.0, 0.0]]]], np.float32)
    sym = weight_quant_params(w, axis=0)  # s8 symmetric: s = max|w| / 127
    assert sym.axis == 0 and sym.per_channel
    np.testing.assert_array_equal(sym.scale, np.float32([1 / 127, 4 / 127]))
    np.testing.assert_array_equal(sym.zero_point, [0, 0])
    # reduce-range s8 symmetric: [-63, 63]: s = max|w| / 63; -1 -> -63; 4 -> 63
    red = weight_quant_params(w, axis=0, reduce_range=True)
    np.testing.assert_array_equal(red.scale, np.float32([1 / 63, 4 / 63]))
    q = quantize(w, red)
    assert q.dtype == np.int8 and q[0, 0, 0, 0] == -63 and q[1, 0, 0, 0] == 63
    # u8 asymmetric per channel: ch0 [-1, 0.5] -> s = 1.5/255, zp = round(1/(1.5/255)) = 170
    asym = weight_quant_params(w, axis=0, dtype="uint8", symmetric=False)
    np.testing.assert_array_equal(asym.scale, np.float32([1.5 / 255, 4 / 255]))
    np.testing.assert_array_equal(asym.zero_point, [170, 0])
    whole = weight_quant_params(w)  # per tensor: max|w| = 4 -> s = 4/127
    assert whole.axis is None and whole.scale == np.float32(4 / 127)


def test_invalid_ranges() -> None:
    with pytest.raises(ValueError, match="finite"):
        quant_params(-np.inf, 1.0)
    with pytest.raises(ValueError, match="empty"):
        quant_params(2.0, 1.0)
