"""The order ``quantize --max-drop`` returns units to float: by SQNR lost, and among equal losses
the unit cheapest in float first (measured per node with onnxruntime's profiler)."""

from __future__ import annotations

import numpy as np
from onnx import helper
from test_quantize_static import _feeds, _model, _vi, _w

from calibration.collect import collect
from calibration.datasets import IterableDataset
from onnxslim.quantize import LOSS_BUCKET_DB, return_order
from passes._base import RunContext
from passes.quantize import QuantizeStaticPass, StaticQuantOptions
from passes.quantize._fallback import node_times


def test_equal_losses_go_cheapest_first_and_losses_still_rule() -> None:
    ranking = [{"units": ["big"], "loss_db": 10.4, "float_ms": 5.0},
               {"units": ["small"], "loss_db": 10.1, "float_ms": 0.1},
               {"units": ["worst"], "loss_db": 3.0 + 20, "float_ms": 50.0},
               {"units": ["mild"], "loss_db": 2.0, "float_ms": 0.0}]
    order = [u["units"][0] for u in return_order(ranking)]
    assert order == ["worst", "small", "big", "mild"]
    assert LOSS_BUCKET_DB == 1.0


def test_node_times_and_the_ranking_carry_measured_float_cost() -> None:
    # a large Conv and a tiny one: the profiler must see the large one as the slower
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="big", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W2", "B2"], ["y"], name="tiny")]
    inits = {"W1": _w(64, 16, 3, 3), "B1": _w(64, seed=1), "W2": _w(2, 64, 1, 1, seed=2), "B2": _w(2, seed=3)}
    model = _model(nodes, [_vi("x", [1, 16, 32, 32])], [_vi("y", [1, 2, 32, 32])], inits)
    samples = _feeds(model, 4, seed=0)
    times = node_times(model, samples[0])
    assert times["big"] > times["tiny"] > 0
    ctx = RunContext(calibration=collect(model, samples), dataset=IterableDataset(samples))
    result = QuantizeStaticPass(StaticQuantOptions(rank_units=True, fallback_min_sqnr=None)).apply(model, ctx)
    cost = {u["units"][0]: u["float_ms"] for u in result.stats["sensitivity"]}
    assert cost["big"] > cost["tiny"]
    assert np.isfinite(list(cost.values())).all()


def test_the_search_ranks_by_the_effect_of_each_unit_alone() -> None:
    """A unit whose own SQNR loss looks harmless but which alone in int8 takes an output part to
    11 dB (YOLOv8n's class-logit Conv) goes back to float first; one that changes nothing, last."""
    from types import SimpleNamespace

    from onnxslim.quantize import _by_effect_alone

    sensitivity = [{"units": ["body"], "loss_db": 6.0, "float_ms": 1.0},
                   {"units": ["head"], "loss_db": -22.0, "float_ms": 0.5},
                   {"units": ["idle"], "loss_db": 3.0, "float_ms": 0.1}]
    errors = {"units": [{"units": ["body"], "alone_db": 30.0}, {"units": ["head"], "alone_db": 11.2},
                        {"units": ["idle"], "alone_db": None}]}
    step = SimpleNamespace(name=QuantizeStaticPass.name, details=SimpleNamespace(errors=errors))
    report = SimpleNamespace(step_stats=lambda name: {"sensitivity": sensitivity},
                             pipeline=SimpleNamespace(steps=[step]))
    order = [u["units"][0] for u in return_order(_by_effect_alone(SimpleNamespace(report=report)))]
    assert order == ["head", "body", "idle"]


def test_with_the_error_report_the_ranking_is_the_reports_own_measure() -> None:
    """Asked for both (the budget's first trial), the pass ranks units from the error report's
    per-tensor SQNR instead of measuring every tensor a second time: same units, same losses."""
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "W2", "B2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["s"], name="relu2"),
             helper.make_node("Conv", ["s", "W3", "B3"], ["y"], name="c3")]
    inits = {"W1": _w(8, 3, 3, 3), "B1": _w(8, seed=1), "W2": _w(8, 8, 3, 3, seed=2), "B2": _w(8, seed=3),
             "W3": _w(2, 8, 1, 1, seed=4), "B3": _w(2, seed=5)}
    model = _model(nodes, [_vi("x", [1, 3, 12, 12])], [_vi("y", [1, 2, 12, 12])], inits)
    samples = _feeds(model, 8, seed=1)
    ctx = RunContext(calibration=collect(model, samples), dataset=IterableDataset(samples))

    def ranking(**extra) -> dict[tuple[str, ...], float]:
        options = StaticQuantOptions(rank_units=True, fallback_min_sqnr=None, **extra)
        return {tuple(u["units"]): u["loss_db"] for u in QuantizeStaticPass(options).apply(model, ctx).stats["sensitivity"]}

    alone, shared = ranking(), ranking(report_errors=True)
    assert set(alone) == {("c1",), ("c2",), ("c3",)}
    assert set(shared) == set(alone)
    for unit, loss in alone.items():
        assert abs(shared[unit] - loss) <= 0.011, unit
