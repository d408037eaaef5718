"""Collection: which tensors, the augmented copies, chunking under a budget, flat memory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration._augment import chunk_model, infer_tensors, select_tensors
from calibration.collect import Collector, collect, observed_tensors
from calibration.datasets import IterableDataset, SyntheticDataset, input_specs, open_dataset, select_samples
from passes._errors import CalibrationError, DataError

MLP = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 13]>
    mlp (float[N, 4] x) => (float[N, 3] y, int64[2] s)
    <float[4, 3] w = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12}, float[3] b = {0.5, -0.25, 1}>
    {
        k = Constant<value = float {0.5}>()
        w2 = Mul(w, k)
        m = MatMul(x, w2)
        h = Relu(m)
        y = Add(h, b)
        s = Shape(y)
    }
    """
)
BRANCHY = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 13]>
    branchy (float[N, 4] x, bool c) => (float[N, 4] y)
    {
        h = Relu(x)
        y = If(c) <then_branch = g1 () => (float[N, 4] t) { t = Sigmoid(h) },
                    else_branch = g2 () => (float[N, 4] e) { e = Neg(h) }>
    }
    """
)


def _samples(count: int, *, rows=lambda i: 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((rows(i), 4)).astype(np.float32)} for i in range(count)]


def _reference_ranges(model: onnx.ModelProto, samples, names) -> dict[str, tuple[float, float]]:
    """numpy min/max over every sample, from a plain session exposing the tensors."""
    copy, _ = chunk_model(model, [n for n in names if n not in {i.name for i in model.graph.input}], [])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as collection runs it
    session = ort.InferenceSession(copy.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for sample in samples:
        values = dict(zip(out_names, session.run(None, sample)))
        values.update(sample)
        for name in names:
            lo[name] = min(lo.get(name, np.inf), float(values[name].min()))
            hi[name] = max(hi.get(name, -np.inf), float(values[name].max()))
    return {n: (lo[n], hi[n]) for n in names}


def test_selection_skips_constants_non_floats_and_subgraphs() -> None:
    infos = infer_tensors(MLP, {"x": (2, 4)})
    sel = select_tensors(MLP, infos)
    assert sel.inputs == ("x",) and sel.outputs == ("m", "h", "y")
    assert sel.skipped == {"constant": 2, "not float": 1, "inside a subgraph": 0}  # k and w2; s
    assert infos["m"].shape == (2, 3) and infos["m"].nbytes() == 24
    sub = select_tensors(BRANCHY, infer_tensors(BRANCHY, {"x": (1, 4), "c": ()}))
    assert sub.outputs == ("h", "y") and sub.skipped["inside a subgraph"] == 2  # t and e


def test_chunk_copy_drops_model_outputs_and_unneeded_nodes() -> None:
    copy, kinds = chunk_model(MLP, ["m"], [])
    assert [o.name for o in copy.graph.output] == ["m"] and kinds == [("raw", "m")]
    assert [n.op_type for n in copy.graph.node] == ["Constant", "Mul", "MatMul"]
    assert {t.name for t in copy.graph.initializer} == {"w"}
    copy, kinds = chunk_model(MLP, [], ["h"])  # in-graph min/max right after the producer
    assert [n.op_type for n in copy.graph.node][-3:] == ["Relu", "ReduceMin", "ReduceMax"]
    assert kinds == [("min", "h"), ("max", "h")] and len(copy.graph.output) == 2
    assert len(MLP.graph.output) == 2  # the input model is untouched


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_minmax_matches_numpy_on_lenet(method: str, lenet_path: Path, repo_root: Path) -> None:
    model = onnx.load(lenet_path)
    data = select_samples(open_dataset(repo_root / "models" / "lenet5_digits_calib.npz", input_specs(model)),
                          limit=32)
    table = collect(model, data, method=method)
    assert table.samples == 32 and len(table) == 13 and table.stats["skipped"]["not float"] == 0
    if method == "minmax":  # in-graph ReduceMin/ReduceMax agree exactly with numpy
        assert table.stats["in_graph_minmax"] == 12
        assert {n: table.range(n) for n in table.tensors} == _reference_ranges(model, list(data), list(table.tensors))
    else:
        for name, (lo, hi) in _reference_ranges(model, list(data), list(table.tensors)).items():
            assert lo <= table.range(name)[0] <= table.range(name)[1] <= hi


def test_budget_splits_passes_without_changing_results() -> None:
    data = IterableDataset(_samples(20))
    whole = collect(MLP, data, method="percentile")
    split = collect(MLP, data, method="percentile", budget_bytes=1)  # every tensor on its own
    assert whole.stats["passes"] == 1 and split.stats["passes"] == 3
    assert split.tensors == whole.tensors
    assert any("exceed" in note for note in split.notes)


def test_growing_samples_are_re_split_and_each_counted_once() -> None:
    # Dynamic batch: sample i has i+1 rows. A chunk sized for the first sample (3 tensors × 12
    # bytes per row) overflows once samples grow past the 100-byte budget and is split.
    samples = _samples(12, rows=lambda i: i + 1)
    collector = Collector(MLP, method="entropy", budget_bytes=100)
    collector.run(IterableDataset(samples))
    assert collector.passes > 1 and collector.peak_output_bytes > 100
    rows = sum(s["x"].shape[0] for s in samples)
    for name, width in (("x", 4), ("m", 3), ("h", 3), ("y", 3)):
        assert collector.observers[name].histogram().count == rows * width, name
    reference = Collector(MLP, method="entropy")
    reference.run(IterableDataset(samples))
    assert collector.table().tensors == reference.table().tensors


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_tracked_memory_does_not_grow_with_samples(method: str) -> None:
    small, large = Collector(MLP, method=method), Collector(MLP, method=method)
    small.run(IterableDataset(_samples(16)))
    large.run(IterableDataset(_samples(64, seed=1)))  # 4× the samples
    assert large.runs == 4 * small.runs
    assert large.tracked_bytes() == small.tracked_bytes() > 0
    assert large.peak_output_bytes == small.peak_output_bytes  # one run's outputs, nothing more


def test_variable_size_samples_and_dynamic_dims() -> None:
    samples = _samples(6, rows=lambda i: [1, 5, 2, 9, 3, 4][i])
    table = collect(MLP, samples, method="minmax")
    assert {n: table.range(n) for n in table.tensors} == _reference_ranges(MLP, samples, ["x", "m", "h", "y"])


def test_explicit_tensors() -> None:
    table = collect(MLP, _samples(3), tensors=["h", "x"])
    assert list(table.tensors) == ["x", "h"] and table.options["tensors"] == "explicit"
    for bad, message in (("w2", "constant"), ("nope", "not produced"), ("s", "INT64, not a float")):
        with pytest.raises(CalibrationError, match=message):
            collect(MLP, _samples(1), tensors=[bad])


def test_subgraph_model_calibrates_the_main_graph() -> None:
    samples = [{"x": s["x"], "c": np.array(i % 2 == 0)} for i, s in enumerate(_samples(4))]
    table = collect(BRANCHY, samples, method="mse")
    assert list(table.tensors) == ["x", "h", "y"]
    assert table.stats["skipped"]["inside a subgraph"] == 2
    assert "2 inside a subgraph" in table.summary()


def test_bad_sample_names_the_input_and_the_sample() -> None:
    samples = _samples(5)
    samples[3] = {"x": samples[3]["x"].astype(np.float64)}
    with pytest.raises(DataError, match=r"sample 3\): input 'x' is float64, the model expects float32"):
        collect(MLP, samples)


def test_progress_and_summary() -> None:
    calls: list[tuple[int, int]] = []
    table = collect(MLP, _samples(5), method="entropy", budget_bytes=30, progress=lambda d, t: calls.append((d, t)))
    passes = table.stats["passes"]
    assert passes == 3 and calls[-1] == (5 * passes, 5 * passes) and len(calls) == 5 * passes
    assert table.summary().startswith("calibrated 4 tensors with 'entropy' on 5 samples in ")
    assert "data passes: 3" in table.summary()


def test_synthetic_data_warns_and_notes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="calibration.datasets"):
        data = SyntheticDataset(input_specs(MLP), 4, shapes={"x": (2, 4)})
    assert "not meaningful" in caplog.text
    table = collect(MLP, data)
    assert any("not meaningful" in n for n in table.notes) and table.samples == 4


def test_nonfinite_values_are_noted() -> None:
    samples = _samples(3)
    samples[1]["x"][0, 0] = np.nan
    table = collect(MLP, samples, method="percentile")
    assert any("NaN/inf" in n for n in table.notes)
    assert all(np.isfinite(table.range(n)).all() for n in table.tensors)


def test_invalid_options() -> None:
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        Collector(MLP, method="kl")
    with pytest.raises(CalibrationError, match="budget"):
        Collector(MLP, budget_bytes=0)
    collector = Collector(MLP)
    collector.run(IterableDataset(_samples(1)))
    with pytest.raises(CalibrationError, match="runs once"):
        collector.run(IterableDataset(_samples(1)))


@pytest.mark.zoo
@pytest.mark.slow
def test_real_ocr_model_in_several_passes(zoo_model) -> None:
    model = onnx.load(zoo_model("ppocr-rec"))
    rng = np.random.default_rng(0)
    samples = [{"x": rng.uniform(-1, 1, (1, 3, 48, 160 + 32 * i)).astype(np.float32)} for i in range(4)]
    collector = Collector(model, method="entropy", budget_bytes=16 * 2**20)
    collector.run(IterableDataset(samples))
    table = collector.table()
    assert collector.passes > 5 and len(table) == 404 and table.stats["skipped"]["not float"] == 22
    assert all(lo <= hi for lo, hi in (table.range(n) for n in table.tensors))
    minmax = collect(model, samples)  # one pass, in-graph reductions
    assert minmax.stats["passes"] == 1 and set(minmax.tensors) == set(table.tensors)
    for name in table.tensors:
        assert minmax.range(name)[0] <= table.range(name)[0] and table.range(name)[1] <= minmax.range(name)[1]


# -- a calibration that observed nothing is an error -------------------------------------------


@pytest.mark.parametrize("method", ["minmax", "percentile"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_all_nonfinite_data_is_an_error_not_an_empty_table(method: str, value: float) -> None:
    samples = [{"x": np.full((2, 4), value, np.float32)} for _ in range(3)]
    with pytest.raises(CalibrationError, match=r"python iterable \(3 samples\) observed no finite value in any of "
                                               r"its 4 tensors \(first: 'x'\)"):
        collect(MLP, samples, method=method)


def test_one_tensor_without_finite_values_is_left_out_and_counted() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        nan (float[N, 4] x) => (float[N, 4] y)
        <float one = {1}>
        {
            a = Abs(x)
            n = Neg(a)
            s = Sub(n, one)
            y = Sqrt(s)
        }
        """
    )
    table = collect(model, _samples(2))
    assert "y" not in table and {"x", "a", "n", "s"} <= set(table.tensors)
    assert table.stats["skipped"]["no finite values"] == 1


def test_observed_tensors_are_the_float_activations_collect_measures() -> None:
    assert observed_tensors(MLP) == {"x", "m", "h", "y"}  # not the constants w2, k, nor the int64 shape s
    table = collect(MLP, _samples(2))
    assert set(table.tensors) == observed_tensors(MLP)
    assert observed_tensors(BRANCHY) == {"x", "h", "y"}  # not the bool c, nor the branch tensors
