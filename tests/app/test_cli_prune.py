"""``onnxslim prune --allocation``: the sensitivity allocation from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxslim.cli import main


def test_prune_sensitivity_allocation_meets_the_mac_budget(lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lenet.pruned.onnx"
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    result = CliRunner().invoke(main, ["prune", str(lenet_path), "-o", str(out), "--ratio", "0.3", "--round-to", "1",
                                       "--calib", str(calib), "--samples", "32", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["steps"][1]["stats"]
    assert stats["allocation"] == "sensitivity" and stats["sensitivity_budget_met"]  # the default with --calib
    assert stats["macs_after"] <= 0.7 * stats["macs_before"]
    onnx.checker.check_model(onnx.load(out), full_check=True)
    text = CliRunner().invoke(main, ["prune", str(lenet_path), "--ratio", "0.3", "--calib", str(calib), "--samples", "8",
                                     "--dry-run"]).stdout
    assert "of the MACs, sensitivity allocation" in text


def test_per_layer_contradicts_another_allocation(lenet_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["prune", str(lenet_path), "-o", str(tmp_path / "p.onnx"), "--per-layer",
                                       "--allocation", "sensitivity"])
    assert result.exit_code == 2 and "--per-layer" in result.output


# ---------------------------------------------------------------------------------- --search


def _search(lenet_path: Path, out: Path, *extra: str) -> object:
    test = lenet_path.parent / "lenet5_digits_test.npz"
    return CliRunner().invoke(main, ["prune", str(lenet_path), "-o", str(out), "--round-to", "1", "--eval", str(test),
                                     "--search", "--json", *extra])


def test_search_writes_the_largest_ratio_within_max_drop(lenet_path: Path, tmp_path: Path) -> None:
    """Without data (global L1, no repair) 80 % wrecks LeNet-5; bisection finds a ratio that holds."""
    from onnxslim.validate import validate

    out = tmp_path / "lenet.searched.onnx"
    result = _search(lenet_path, out, "--ratio", "0.8", "--max-drop", "0.02", "--search-steps", "3")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    trials = doc["search"]
    assert [t["ratio"] for t in trials][0] == 0.8 and not trials[0]["passed"]  # --ratio first: too much
    lo, hi = 0.0, 0.8
    for t in trials[1:]:  # each next ratio halves the interval between the best pass and the least failure
        assert t["ratio"] == pytest.approx((lo + hi) / 2)
        lo, hi = (t["ratio"], hi) if t["passed"] else (lo, t["ratio"])
    # --confidence 0.9 by default: a measured drop within the budget gets its bound, which must hold too
    assert all((t["bound"] is not None) == (t["drop"] <= 0.02) for t in trials), trials
    assert all(t["passed"] == (t["drop"] <= 0.02 and t["bound"] <= 0.02) for t in trials), trials
    chosen = max((t for t in trials if t["passed"]), key=lambda t: t["ratio"])
    assert chosen["ratio"] == lo > 0.0
    # the file written is the chosen ratio's model: the same drop measured again, fewer parameters
    again = validate(lenet_path, out, data=lenet_path.parent / "lenet5_digits_test.npz")
    assert again.accuracy.drop == pytest.approx(chosen["drop"])
    assert doc["output"] == str(out) and doc["validation"]["candidate"] == str(out)
    assert doc["after"]["params"] < doc["before"]["params"]
    assert list(tmp_path.iterdir()) == [out]  # the trials left nothing beside the output


def test_search_stops_at_ratio_when_it_already_holds(lenet_path: Path, tmp_path: Path) -> None:
    result = _search(lenet_path, tmp_path / "p.onnx", "--ratio", "0.1", "--max-drop", "1.0")
    assert result.exit_code == 0, result.output
    assert [t["ratio"] for t in json.loads(result.stdout)["search"]] == [0.1]


def test_search_that_never_holds_writes_nothing(lenet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    # closeness is 0 for the unpruned model and below 0 for any pruned one: no ratio can hold
    result = _search(lenet_path, out, "--ratio", "0.5", "--metric", "_toy_metric:closeness", "--max-drop", "0",
                     "--search-steps", "2")
    assert result.exit_code == 1
    assert "no ratio tried met --max-drop" in result.output and "nothing written" in result.output
    assert not out.exists()


def test_search_needs_eval_max_drop_and_something_to_measure(lenet_path: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "p.onnx"
    result = CliRunner().invoke(main, ["prune", str(lenet_path), "-o", str(out), "--search"])
    assert result.exit_code == 2 and "--search needs --eval and --max-drop" in result.output
    calib = lenet_path.parent / "lenet5_digits_calib.npz"  # no labels and no --metric: no drop to measure
    result = CliRunner().invoke(main, ["prune", str(lenet_path), "-o", str(out), "--search", "--eval", str(calib),
                                       "--max-drop", "0.01"])
    assert result.exit_code == 1 and "needs a drop to measure" in result.output
    assert not out.exists()
    import onnxslim.prune

    def no_trial(*args: object, **kwargs: object) -> None:
        raise AssertionError("a trial ran")

    monkeypatch.setattr(onnxslim.prune, "run_flow", no_trial)  # refused before the first trial
    result = _search(lenet_path, tmp_path / "missing" / "p.onnx", "--max-drop", "0.01")
    assert result.exit_code == 1 and "does not exist" in result.output, result.output


def test_printed_fidelity_is_the_written_models_measured_one(lenet_path: Path, tmp_path: Path) -> None:
    """The SQNR prune prints is the written model's on the calibration samples it names: the same
    figure `validate` measures on those samples; a low one warns and names --search."""
    from onnxslim.validate import validate

    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    out = tmp_path / "p.onnx"
    result = CliRunner().invoke(main, ["prune", str(lenet_path), "-o", str(out), "--calib", str(calib), "--ratio", "0.5"])
    assert result.exit_code == 0, result.output
    match = re.search(r"measured on (\d+) calibration samples \(after the re-fit\): output SQNR ([\d.]+) dB", result.stdout)
    assert match, result.stdout
    check = validate(lenet_path, out, data=calib, samples=int(match.group(1)))
    assert abs(check.outputs[0].sqnr_db - float(match.group(2))) < 0.05
    warned = "WARNING: below 20 dB" in result.stdout
    assert warned == (float(match.group(2)) < 20) and (not warned or "--search" in result.stdout)
