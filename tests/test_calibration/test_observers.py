"""Observers: golden ranges derived by hand, batching invariance, non-finite values, options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.histogram import Histogram, kl_divergences, mse_errors
from calibration.observers import (
    METHODS,
    EntropyObserver,
    MinMaxObserver,
    MSEObserver,
    ObserverOptions,
    PercentileObserver,
    make_observer,
)


def test_minmax_golden() -> None:
    obs = MinMaxObserver()
    assert obs.compute_range() is None  # nothing seen yet
    obs.update(np.array([[0.5, -1.0], [2.0, 0.0]], np.float32))
    obs.update(np.array([1.5, np.nan, np.inf], np.float32))  # non-finite values are skipped
    assert obs.compute_range() == (-1.0, 2.0) and obs.nonfinite == 2
    obs.update_range(-3.0, 1.0)  # an in-graph ReduceMin/ReduceMax pair
    obs.update_range(math.inf, -math.inf)  # what they return for an empty tensor: ignored
    assert obs.compute_range() == (-3.0, 2.0) and obs.nonfinite == 2


def test_percentile_golden() -> None:
    # values 0.5, 1.5, …, 99.5 (100 values). max|x| = 99.5 -> W = 2**-5 (99.5 < 4096/32 = 128).
    # 99 % of 100 values = 99 values, reached at 98.5, whose bin is [98.5, 98.53125):
    # symmetric threshold = its upper edge 98.53125; range [-t, t] ∩ [0.5, 99.5] = [0.5, 98.53125]
    obs = PercentileObserver(ObserverOptions(percentile=99.0))
    obs.update(np.arange(100, dtype=np.float32) + 0.5)
    assert obs.compute_range() == (0.5, 98.53125)
    # asymmetric: 0.5 % of the values (half a value) from each side -> nothing is cut
    asym = PercentileObserver(ObserverOptions(percentile=99.0, symmetric=False))
    asym.update(np.arange(100, dtype=np.float32) + 0.5)
    assert asym.compute_range() == (0.5, 99.5)
    # asymmetric 98 %: one value from each side: low = lower edge of 1.5's bin, high = upper edge of 98.5's
    asym2 = PercentileObserver(ObserverOptions(percentile=98.0, symmetric=False))
    asym2.update(np.arange(100, dtype=np.float32) + 0.5)
    assert asym2.compute_range() == (1.5, 98.53125)


# Entropy, worked by hand with 8 bins per side and 2 quantized bins. Data 0.5 ×8, 1.5, 3.5, 5.5:
# max 5.5 -> W = 1, |x| counts h = [8, 1, 0, 1, 0, 1]. For threshold i, P = h[:i] with the outliers
# added to P[i-1]; Q merges h[:i] into 2 chunks of m = i // 2 bins (the last takes the rest),
# spread over the bins where P > 0; KL = Σ p̂ log(p̂/q̂) with p̂ = P/11, q̂ = Q/Σh[:i].
#   i=2: P=[8,3]  Q=[8,1] (S_q=9):  8/11·log(9/11) + 3/11·log(27/11)                = 0.0989508
#   i=3: P=[8,1,2] Q=[8,.5,.5]:     8/11·log(9/11) + 1/11·log(18/11) + 2/11·log(36/11) = 0.1143962
#   i=4: P=[8,1,0,2] chunks [0,2),[2,4): Q=[4.5,4.5,0,1] (S_q=10)                    = 0.3124289
#   i=5: P=[8,1,0,1,1]  Q=[4.5,4.5,0,.5,.5]                                          = 0.3124289
#   i=6: P=h, chunks [0,3),[3,6): Q=[4.5,4.5,0,1,0,1]: (8·log(8/4.5) + log(1/4.5))/11 = 0.2817123
# The minimum is i=2: threshold t = 2·W = 2; range [-2, 2] ∩ [0.5, 5.5] = [0.5, 2].
ENTROPY_DATA = np.array([0.5] * 8 + [1.5, 3.5, 5.5], np.float32)


def test_kl_divergences_golden() -> None:
    hist = Histogram(bins=8)
    hist.update(ENTROPY_DATA)
    kl = kl_divergences(hist.abs_counts()[:6], quantized_bins=2)
    np.testing.assert_allclose(kl, [0.0989508, 0.1143962, 0.3124289, 0.3124289, 0.2817123], atol=1e-7)


def test_entropy_golden() -> None:
    obs = EntropyObserver(ObserverOptions(bins=8, quantized_bins=2))
    obs.update(ENTROPY_DATA)
    assert obs.compute_range() == (0.5, 2.0)


def _kl_reference(hist: np.ndarray, qbins: int) -> np.ndarray:
    """MXNet/TensorRT's loop, literally (without the ε smoothing)."""
    out = []
    for i in range(qbins, hist.size + 1):
        ref = hist[:i].astype(np.float64)
        p = ref.copy()
        p[-1] += hist[i:].sum()
        m = i // qbins
        q = np.zeros(i)
        for j in range(qbins):
            start, stop = j * m, (i if j == qbins - 1 else (j + 1) * m)
            nonzero = p[start:stop] > 0
            if nonzero.any():
                q[start:stop][nonzero] = ref[start:stop].sum() / nonzero.sum()
        mask = p > 0
        if (q[mask] == 0).any():
            out.append(np.inf)
            continue
        pn, qn = p / p.sum(), q / q.sum()
        out.append(float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask]))))
    return np.array(out)


def test_kl_divergences_match_the_reference_loop() -> None:
    rng = np.random.default_rng(3)
    counts = rng.poisson(rng.exponential(20, 300)).astype(np.int64)
    counts[rng.random(300) < 0.2] = 0
    counts[-1] = 1
    np.testing.assert_allclose(kl_divergences(counts, 16, block=37), _kl_reference(counts, 16), rtol=1e-9)


def test_mse_golden() -> None:
    # 10**6 values at c = 0.5078125 and one at C = 63.5078125 (both bin centers on W = 1/64).
    # u8 asymmetric, lo = 0: keeping C costs (N+1)·(C/255)²/12 ≈ 5169; clipping at t costs
    # N·(t/255)²/12 + (C − t)², minimal at t* = C / (1 + N/(12·255²)) = 27.8353 (cost ≈ 2265).
    # Candidates lie on bin edges k/64: 27.8353·64 = 1781.46 -> k = 1781 (the parabola's closer
    # side), t = 1781/64 = 27.828125. Range [max(0, min), t] = [0.5078125, 27.828125].
    n, c, far = 10**6, 0.5078125, 63.5078125
    assert round(far / (1 + n / (12 * 255**2)) * 64) == 1781
    obs = MSEObserver()
    obs.update(np.full(n, c, np.float32))
    obs.update(np.array([far], np.float32))
    assert obs.compute_range() == (c, 1781 / 64)
    bounds, errors = mse_errors(obs.histogram())
    assert errors[-1] == pytest.approx((n + 1) * (far / 255) ** 2 / 12)  # alpha = 1: nothing clipped
    best = int(np.argmin(errors))
    assert errors[best] == pytest.approx(n * (bounds[1, best] / 255) ** 2 / 12 + (far - bounds[1, best]) ** 2)


def test_mse_symmetric_golden() -> None:
    # Symmetric s8 uses 254 steps over [-t, t]: Δ = t/127. 10**6 values at c = 0.5078125 and one at
    # -C = -63.5078125: clipping costs N·(t/127)²/12 + (C − t)², minimal at
    # t* = C / (1 + N/(12·127²)) = 10.2986; on the edges k/64: 659.11 -> k = 659, t = 10.296875.
    # Range [-t, t] ∩ [-C, c] = [-10.296875, 0.5078125].
    n, c, far = 10**6, 0.5078125, 63.5078125
    assert round(far / (1 + n / (12 * 127**2)) * 64) == 659
    obs = MSEObserver(ObserverOptions(symmetric=True))
    obs.update(np.full(n, c, np.float32))
    obs.update(np.array([-far], np.float32))
    assert obs.compute_range() == (-659 / 64, c)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_histogram_observers_ignore_batching(method: str) -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(20_000), 30 * rng.standard_normal(20)]).astype(np.float32)
    one = make_observer(method)
    one.update(x)
    many = make_observer(method)
    for part in np.array_split(x[np.argsort(np.abs(x))], 64):  # worst case: the range keeps growing
        many.update(part.reshape(-1, 1))
    assert one.compute_range() == many.compute_range()  # exactly: the histograms are identical


@pytest.mark.parametrize("method", METHODS)
def test_state_is_fixed_size_and_empty_data_gives_none(method: str) -> None:
    obs = make_observer(method)
    before = obs.tracked_bytes()
    assert obs.compute_range() is None
    obs.update(np.zeros((0, 3), np.float32))
    obs.update(np.array([np.nan], np.float32))
    assert obs.compute_range() is None
    for seed in range(5):
        obs.update(np.random.default_rng(seed).standard_normal(1000).astype(np.float32) * (seed + 1))
    assert obs.tracked_bytes() == before
    lo, hi = obs.compute_range()
    assert lo < 0 < hi


def test_all_zero_data() -> None:
    for method in METHODS:
        obs = make_observer(method)
        obs.update(np.zeros(10, np.float32))
        assert obs.compute_range() == (0.0, 0.0), method


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ObserverOptions(bins=1000)
    with pytest.raises(ValueError, match="percentile"):
        ObserverOptions(percentile=0)
    with pytest.raises(ValueError, match="unknown calibration method"):
        make_observer("kl")
    assert PercentileObserver().options() == {"bins": 4096, "percentile": 99.99, "symmetric": True}
    assert MSEObserver().options()["symmetric"] is False
