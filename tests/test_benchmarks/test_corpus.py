"""`python -m benchmarks.corpus`: the outcome rules, the .npz of a backend test, runs in a folder."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from benchmarks import corpus
from benchmarks.corpus import OUT_FILES, RunFacts, classify, normalize_reason

INPUTS = frozenset({"model.onnx", "ref.npz"})
ERROR = "Error: simplify: the input model does not run on the verification inputs\n"


@pytest.mark.parametrize(("facts", "outcome"), [
    (RunFacts(0, "", INPUTS | {"out.onnx"}), "ok"),
    (RunFacts(0, "", INPUTS | {"out.onnx", "out.onnx.data"}), "ok"),
    (RunFacts(0, "", INPUTS), "invalid"),  # exit 0, nothing written
    (RunFacts(0, "", INPUTS | {"out.onnx"}, check_error="onnx.checker: bad"), "invalid"),
    (RunFacts(1, ERROR, INPUTS), "declined"),
    (RunFacts(1, "loading…\n" + ERROR, INPUTS), "declined"),  # other lines are allowed
    (RunFacts(1, ERROR + ERROR, INPUTS), "crashed"),  # two Error: lines
    (RunFacts(1, "something went wrong\n", INPUTS), "crashed"),  # no Error: line
    (RunFacts(1, "Traceback (most recent call last):\n  ...\n" + ERROR, INPUTS), "crashed"),
    (RunFacts(0, "Traceback (most recent call last):\n", INPUTS | {"out.onnx"}), "crashed"),
    (RunFacts(2, "Usage: onnxslim simplify\nError: No such option: --data\n", INPUTS), "usage"),
    (RunFacts(-11, "", INPUTS), "crashed"),
    (RunFacts(130, "", INPUTS), "crashed"),
    (RunFacts(None, "", INPUTS), "hung"),
    (RunFacts(None, "", INPUTS | {"out.onnx"}, killed=True), "hung"),  # SIGKILL: no one can clean up
    (RunFacts(None, "", INPUTS | {"out.onnx"}), "output left after failure"),  # SIGINT: should have
    (RunFacts(1, ERROR, INPUTS | {"out.onnx"}), "output left after failure"),
    (RunFacts(1, ERROR, INPUTS | {"out.onnx.data"}), "output left after failure"),
    (RunFacts(-9, "", INPUTS | {"out.onnx"}), "output left after failure"),
    (RunFacts(1, ERROR, INPUTS | {".onnxslim-abc123"}), "temp left"),
    (RunFacts(0, "", INPUTS | {"out.onnx", ".onnxslim-abc123"}), "temp left"),
    (RunFacts(0, "", INPUTS | {"out.onnx"}, input_changed=True), "input changed"),
    (RunFacts(1, ERROR, INPUTS | {"out.onnx"}, input_changed=True), "input changed"),
])
def test_classify(facts: RunFacts, outcome: str) -> None:
    assert classify(facts) == outcome


def test_normalize_reason_groups_what_differs_only_by_names() -> None:
    a = ("Error: the input model does not run on the verification inputs (random inputs): "
         "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Expand node. "
         "Name:'test' Status Message: invalid expand shape; give real inputs with --data DATA")
    b = a.replace("Name:'test'", "Name:'node_7'")
    assert normalize_reason(a) == normalize_reason(b)
    assert normalize_reason(a).startswith("the input model does not run")  # "Error:" dropped
    assert normalize_reason(a) == ("the input model does not run on the verification inputs (random inputs): "
                                   "[ONNXRuntimeError] running Expand node: …; give real inputs with --data DATA")
    c = a.replace("Status Message: invalid expand shape", "Status Message: /src/expand.cc:42 shape mismatch")
    assert normalize_reason(c) == normalize_reason(a)  # onnxruntime's message: only the op counts
    assert normalize_reason("Error: output 'y' has 3 NaN") == "output '…' has N NaN"
    assert normalize_reason("Error: input 'x' has shape 1x3, the model expects 1x4") == \
        normalize_reason("Error: input 'y' has shape 2x5, the model expects 2x6")
    assert normalize_reason("Error: /tmp/a/b/out.onnx: cannot write") == "<path>: cannot write"
    assert normalize_reason("Error: fp16: nothing to do") != normalize_reason("Error: simplify: nothing to do")


def test_draw_is_seeded() -> None:
    pool = corpus.collect_pool(["simple", "pytorch-operator"])
    assert "simple/test_expand_shape_model1" in pool and pool == sorted(pool) and len(pool) > 30
    assert corpus.draw(pool, 0) == corpus.draw(list(reversed(pool)), 0)  # the pool's order does not matter
    assert corpus.draw(pool, 0) != corpus.draw(pool, 1)
    assert sorted(corpus.draw(pool, 3)) == pool


def test_reference_inputs_to_npz(tmp_path: Path) -> None:
    case = corpus.load_case("simple/test_expand_shape_model1")
    prepared = corpus.prepare(case, tmp_path / "m")
    assert isinstance(prepared, corpus.Prepared)
    assert case.inputs[0].shape == (1, 3, 1) and case.inputs[1].shape == (2,)
    assert prepared.inputs == {"X": "float32[1x1x3x1]", "shape": "int64[1x2]"}  # one sample on axis 0
    with np.load(prepared.folder / "ref.npz") as data:
        assert sorted(data.files) == ["X", "shape"]
        np.testing.assert_array_equal(data["X"][0], case.inputs[0])
        np.testing.assert_array_equal(data["shape"][0], case.inputs[1])
    assert (prepared.folder / "model.onnx").exists() and (prepared.folder / "expected.npz").exists()


def test_light_models_get_the_runners_inputs() -> None:
    case = corpus.load_case("light/light_squeezenet")
    (x,) = case.inputs
    assert x.dtype == np.float32 and x.ravel()[0] == 0.0 and x.ravel()[-1] == pytest.approx(1 - 1 / x.size)
    assert len(case.outputs) == 1 and case.outputs[0] is not None


def test_inputs_that_are_not_tensors_are_named() -> None:
    with pytest.raises(ValueError, match="input 'seq' is a sequence"):
        corpus._npz_array("seq", [np.zeros(2)])
    with pytest.raises(ValueError, match="input 'opt' is a missing optional"):
        corpus._npz_array("opt", None)
    with pytest.raises(ValueError, match="dtype object"):
        corpus._npz_array("s", np.array(["a"], dtype=object))
    with pytest.raises(ValueError, match="reserved"):
        corpus._npz_array("labels", np.zeros(2))
    assert corpus._npz_array("x", np.array(1.5, dtype=np.float32)).shape == (1,)  # a scalar gets its sample axis
    assert corpus._npz_array("x", np.float32(1.5)).shape == (1,)


def _fake_cli(tmp_path: Path, body: str) -> str:
    """An executable standing in for onnxslim: ``--help`` offers --data, then runs ``body``."""
    script = tmp_path / "fake-onnxslim"
    script.write_text(f'#!/bin/sh\ncase "$*" in *--help*) echo "  --data PATH"; exit 0;; esac\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.fixture
def prepared(tmp_path: Path) -> corpus.Prepared:
    result = corpus.prepare(corpus.load_case("simple/test_expand_shape_model1"), tmp_path / "m")
    assert isinstance(result, corpus.Prepared)
    return result


@pytest.mark.parametrize(("body", "outcome", "left"), [
    ('echo partial > out.onnx; echo "Error: gate not met" >&2; exit 1', "output left after failure", ["out.onnx"]),
    ('mkdir .onnxslim-x; echo "Error: gate not met" >&2; exit 1', "temp left", [".onnxslim-x"]),
    ('echo "Error: no" >&2; exit 1', "declined", []),
    ('echo garbage >> model.onnx; echo "Error: no" >&2; exit 1', "input changed", []),
    ("exec sleep 30", "hung", []),  # SIGINT ends sleep at the timeout
])
def test_run_in_a_fresh_folder(tmp_path: Path, prepared: corpus.Prepared, body: str, outcome: str,
                               left: list[str]) -> None:
    corpus._offers_data.cache_clear()
    record = corpus.run_command(prepared, "simplify", tmp_path / "runs", timeout=1.0, use_data=True,
                                executable=_fake_cli(tmp_path, body))
    assert record["outcome"] == outcome, record
    assert record["argv"] == ["onnxslim", "simplify", "model.onnx", "-o", OUT_FILES[0], "--data", "ref.npz"]
    if outcome not in {"input changed", "hung"}:
        assert record["files_left"] == left
    assert list((tmp_path / "runs").iterdir()) == []  # the run folder is removed afterwards
    corpus._offers_data.cache_clear()


@pytest.mark.slow
def test_three_model_sweep_end_to_end(tmp_path: Path) -> None:
    """The real CLI on three shipped backend tests (about 10 s)."""
    out = tmp_path / "report.json"
    assert corpus.main(["--sample", "3", "--seed", "0", "--kinds", "simple", "--commands", "simplify",
                        "--json", str(out), "--work", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    assert report["drawn"] == 3 and len(report["kept"]) + len(report["dropped"]) == 3
    assert [r["model"] for r in report["runs"]] == sorted(p["id"] for p in report["kept"])
    assert all(r["outcome"] == "ok" and r["data"] and r["check"]["error"] is None for r in report["runs"])
    row = [cell.strip() for cell in corpus.outcome_table(report["runs"], ["simplify"]).splitlines()[2].split("|")]
    assert row[1:4] == ["simplify", "3", "3"] and set(row[5:-1]) == {"0"}
