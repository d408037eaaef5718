"""The pipeline: copies once, checks and verifies each pass, wraps failures with pass names."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxslim.pipeline import run_pipeline
from passes._base import EXACT, Pass, PassResult, RunContext, Tolerance
from passes._errors import PassError, PreconditionError, VerificationError

MODEL = """
<ir_version: 8, opset_import: ["" : 13]>
scale (float[2, 4] x) => (float[2, 4] y) <float[4] w = {1.0, -2.0, 3.0, 0.5}>
{
    t = Mul(x, w)
    y = Relu(t)
}
"""


class ScaleWeightPass(Pass):
    """Multiplies the weight ``w`` by a factor (1.0 keeps the numbers, others change them)."""

    name = "scale-weight"

    def __init__(self, factor: float, tolerance: Tolerance = EXACT) -> None:
        self.factor = factor
        self.tolerance = tolerance  # type: ignore[misc]

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        init = model.graph.initializer[0]
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * self.factor, init.name))
        return PassResult(model, changed=True, stats={"scaled": 1})


class NoOpPass(Pass):
    name = "noop"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        return PassResult(model, changed=False)


class BreakGraphPass(Pass):
    name = "break-graph"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        model.graph.node[1].input[0] = "nowhere"
        return PassResult(model, changed=True)


class CrashPass(Pass):
    name = "crash"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        raise KeyError("boom")


class RefusePass(Pass):
    name = "refuse"

    def check_input(self, model: onnx.ModelProto) -> None:
        raise PreconditionError("needs opset 99")

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:  # pragma: no cover
        raise AssertionError("must not run")


class WrongReturnPass(Pass):
    name = "wrong-return"
    tolerance: ClassVar[Tolerance] = EXACT

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        return model  # type: ignore[return-value]


@pytest.fixture()
def model() -> onnx.ModelProto:
    return onnx.parser.parse_model(MODEL)


@pytest.fixture()
def feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((2, 4)).astype(np.float32)} for _ in range(2)]


def test_input_model_is_untouched_and_steps_reported(model: onnx.ModelProto) -> None:
    original = model.SerializeToString()
    report = run_pipeline(model, [ScaleWeightPass(2.0), NoOpPass()], RunContext())
    assert model.SerializeToString() == original
    assert [(s.name, s.changed, s.verified) for s in report.steps] == [
        ("scale-weight", True, "not requested"),
        ("noop", False, "not requested"),
    ]
    assert report.steps[0].stats == {"scaled": 1}
    np.testing.assert_array_equal(numpy_helper.to_array(report.model.graph.initializer[0]), [2, -4, 6, 1])


def test_verification_passes_for_exact_rewrite(model: onnx.ModelProto, feeds: list) -> None:
    report = run_pipeline(model, [ScaleWeightPass(1.0), NoOpPass()], RunContext(), verify_feeds=feeds)
    assert [s.verified for s in report.steps] == ["passed", "unchanged"]


def test_verification_catches_changed_outputs(model: onnx.ModelProto, feeds: list) -> None:
    with pytest.raises(VerificationError, match="pass 'scale-weight' changed the outputs.*output 'y'"):
        run_pipeline(model, [ScaleWeightPass(1.01)], RunContext(), verify_feeds=feeds)


def test_each_pass_is_judged_by_its_own_tolerance(model: onnx.ModelProto, feeds: list) -> None:
    lossy = ScaleWeightPass(1.01, tolerance=Tolerance(min_cosine=0.99))
    report = run_pipeline(model, [lossy, ScaleWeightPass(1.0)], RunContext(), verify_feeds=feeds)
    assert [s.verified for s in report.steps] == ["passed", "passed"]


def test_invalid_output_is_a_pass_error_with_history(model: onnx.ModelProto) -> None:
    with pytest.raises(PassError, match="pass 'break-graph' failed after noop, scale-weight") as info:
        run_pipeline(model, [NoOpPass(), ScaleWeightPass(1.0), BreakGraphPass()], RunContext())
    assert info.value.pass_name == "break-graph"
    assert info.value.before == ["noop", "scale-weight"]


def test_crash_and_precondition_are_wrapped(model: onnx.ModelProto) -> None:
    with pytest.raises(PassError, match="pass 'crash' failed after noop: internal error: KeyError"):
        run_pipeline(model, [NoOpPass(), CrashPass()], RunContext())
    with pytest.raises(PassError, match="pass 'refuse' failed: needs opset 99"):
        run_pipeline(model, [RefusePass()], RunContext())


def test_pass_must_return_a_pass_result(model: onnx.ModelProto) -> None:
    with pytest.raises(TypeError, match="not PassResult"):
        run_pipeline(model, [WrongReturnPass()], RunContext())
