"""``onnxslim prune --allocation``: the sensitivity allocation from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
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
