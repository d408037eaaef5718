"""One fidelity criterion: the static int8 fallback and the verification use the same measure
(each output part's SQNR over the same first samples) and the same floor, so what the fallback
returns passes; a miss names the worst output and what to try."""

from __future__ import annotations


import pytest

from calibration.collect import collect
from calibration.datasets import IterableDataset
from onnxslim.pipeline import run_pipeline
from passes._base import VERIFY_SAMPLES, RunContext
from passes._errors import VerificationError
from passes.quantize import QuantizeStaticPass, StaticQuantOptions
from passes.quantize._fallback import UnitDetails, measure
from test_quantize_static import _feeds, conv_relu_conv


def _context(model, n: int = VERIFY_SAMPLES):
    samples = _feeds(model, n, seed=1)
    return RunContext(calibration=collect(model, samples), dataset=IterableDataset(samples)), samples


def test_the_fallback_result_passes_the_verification_by_construction() -> None:
    model = conv_relu_conv()
    ctx, samples = _context(model)
    for floor in (5.0, 25.0, 35.0):  # whatever floor the fallback reaches, verify agrees on the same samples
        quantize = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=floor))
        result = quantize.apply(model, ctx)
        assert isinstance(result.details, UnitDetails)
        sqnr = measure(model, result.model, result.details, samples)
        reached = min(sqnr[o] for o in result.details.output_parts)
        problem = quantize.verify(model, result.model, samples, result)
        assert (problem is None) == (reached >= floor), (floor, reached, problem)


def test_a_missed_floor_names_the_worst_output_and_what_to_try() -> None:
    model = conv_relu_conv()
    ctx, samples = _context(model)
    quantize = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=None))  # no fallback: all int8
    result = quantize.apply(model, ctx)
    strict = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=300.0))
    problem = strict.verify(model, result.model, samples, result)
    assert problem is not None
    assert "output 'y'" in problem and "< 300 dB" in problem and f"on {len(samples)} samples" in problem
    assert "--max-drop" in problem and "--exclude-node 'conv" in problem


def test_the_pipeline_refuses_with_that_message_and_a_metric_gate_replaces_it() -> None:
    model = conv_relu_conv()
    ctx, samples = _context(model)
    # the fallback may return at most 0 units to float here, so it cannot reach 300 dB
    options = StaticQuantOptions(fallback_min_sqnr=300.0, fallback_max_fraction=0.0)
    with pytest.raises(VerificationError, match=r"lost too much: output 'y' SQNR .* < 300 dB"):
        run_pipeline(model, [QuantizeStaticPass(options)], ctx, verify_feeds=samples)
    report = run_pipeline(model, [QuantizeStaticPass(options)], ctx, verify_feeds=samples, fidelity=False)
    assert report.steps[0].verified == "outputs valid (fidelity judged by the --eval metric)"


def test_fallback_samples_are_the_verification_samples() -> None:
    assert StaticQuantOptions().fallback_samples == VERIFY_SAMPLES


def _all_int8_sqnr(model, ctx, samples) -> float:
    result = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=None)).apply(model, ctx)
    sqnr = measure(model, result.model, result.details, samples)
    return min(sqnr[o] for o in result.details.output_parts)


def test_the_fallback_aims_at_its_target_and_verification_holds_the_floor() -> None:
    """Target above what int8 reaches, floor below it: units go back to float, the target is
    missed, the round closest to it is returned, and the pipeline writes it (the floor holds)."""
    model = conv_relu_conv()
    ctx, samples = _context(model)
    reached = _all_int8_sqnr(model, ctx, samples)
    options = StaticQuantOptions(fallback_min_sqnr=reached - 5, fallback_target_sqnr=300.0, fallback_max_fraction=0.5)
    report = run_pipeline(model, [QuantizeStaticPass(options)], ctx, verify_feeds=samples)
    stats = report.steps[0].stats
    assert stats["fallback: nodes kept float"], stats  # it tried
    assert stats["fallback: output SQNR dB before"] == pytest.approx(reached, abs=0.01)
    assert stats["fallback: output SQNR dB after"] >= stats["fallback: output SQNR dB before"]
    assert stats["fallback: output SQNR dB after"] < 300.0
    # a target int8 already reaches costs nothing
    met = QuantizeStaticPass(StaticQuantOptions(fallback_target_sqnr=reached - 1)).apply(model, ctx)
    assert met.stats["fallback: nodes kept float"] == []
    # a target below the floor is the floor
    low = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=300.0, fallback_target_sqnr=1.0,
                                                fallback_max_fraction=0.5)).apply(model, ctx)
    assert low.stats["fallback: nodes kept float"]
