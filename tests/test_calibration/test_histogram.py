"""The power-of-two histogram: grid choice, widening without losing counts, batching invariance."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.histogram import Histogram


def _data(seed: int = 0, size: int = 50_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # magnitudes over ~8 decades, both signs, a few exact zeros and bin edges
    x = rng.standard_normal(size) * np.exp(rng.uniform(-9, 9, size))
    x[:10] = 0.0
    x[10:20] = np.ldexp(1.0, rng.integers(-20, 20, 10))  # exact powers of two (bin edges)
    return x.astype(np.float32)


def test_grid_puts_the_largest_magnitude_in_the_outer_half() -> None:
    hist = Histogram(bins=8)
    hist.update(np.array([0.5, 1.5, 3.5, 5.5], np.float32))
    # max|x| = 5.5: smallest W = 2**exp with 5.5 < 8·W is W = 1 (8·0.5 = 4 is too small)
    assert hist.exp == 0 and hist.width == 1.0
    # bins [k, k+1) for k in -8..7; index k + 8
    np.testing.assert_array_equal(hist.counts[8:], [1, 1, 0, 1, 0, 1, 0, 0])
    hist.update(np.array([-9.0], np.float32))  # needs 9 < 8·W -> W = 2: pairs merge
    assert hist.exp == 1
    # [0,2): 0.5, 1.5 | [2,4): 3.5 | [4,6): 5.5 | [-10,-8): -9
    np.testing.assert_array_equal(hist.counts, [0, 0, 0, 1, 0, 0, 0, 0, 2, 1, 1, 0, 0, 0, 0, 0])
    assert hist.count == 5 and hist.min == -9.0 and hist.max == 5.5


def test_negative_values_fold_onto_abs_bins() -> None:
    hist = Histogram(bins=8)
    hist.update(np.array([-0.5, -1.0, -1.5, 4.5], np.float32))  # 4.5 < 8·W -> W = 1
    # -0.5 and -1.0 lie in [-1, 0), i.e. |x| in (0, 1] -> abs bin 0; -1.5 in [-2, -1) -> abs bin 1
    np.testing.assert_array_equal(hist.abs_counts(), [2, 1, 0, 0, 1, 0, 0, 0])


@pytest.mark.parametrize("parts", [2, 7, 1000])
def test_one_batch_or_many_gives_identical_counts(parts: int) -> None:
    x = _data()
    whole = Histogram()
    whole.update(x)
    # worst case for widening: smallest magnitudes first, so the grid widens many times
    ordered = x[np.argsort(np.abs(x), kind="stable")]
    pieces = Histogram()
    for part in np.array_split(ordered, parts):
        pieces.update(part)
    assert pieces.exp == whole.exp
    np.testing.assert_array_equal(pieces.counts, whole.counts)
    assert (pieces.min, pieces.max, pieces.count) == (whole.min, whole.max, whole.count)


def test_nonfinite_values_are_counted_and_left_out() -> None:
    hist = Histogram()
    hist.update(np.array([1.0, np.nan, np.inf, -np.inf, -2.0], np.float32))
    assert hist.count == 2 and hist.nonfinite == 3 and (hist.min, hist.max) == (-2.0, 1.0)
    hist.update(np.array([np.nan], np.float32))
    assert hist.count == 2 and hist.nonfinite == 4


def test_other_dtypes_and_shapes() -> None:
    hist = Histogram()
    hist.update(np.ones((2, 3, 4), np.float16))
    hist.update(np.zeros((0, 5), np.float32))
    hist.update(np.float64(3.0))
    assert hist.count == 25 and hist.max == 3.0


def test_state_round_trip() -> None:
    hist = Histogram(bins=64)
    hist.update(_data(1, 1000))
    again = Histogram.from_state(hist.state())
    np.testing.assert_array_equal(again.counts, hist.counts)
    assert (again.exp, again.min, again.max, again.count) == (hist.exp, hist.min, hist.max, hist.count)


def test_bins_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Histogram(bins=100)
