"""`python -m benchmarks.prune_seeds`: the table from hand-made rows, and digits end to end (a few seconds, offline)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from benchmarks.prune_seeds import COLUMNS, TaskResult, main, render


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` is a pipe inside a cell)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_render_columns_and_rows() -> None:
    rows = [
        TaskResult(task="ocr-rec", seed=1, written=True, headline="char_accuracy", fp32=0.996, pruned=0.9643,
                   printed_db=19.71, measured_db=19.41, warning=True),
        TaskResult(task="vad", seed=2, written=False, headline="f1", fp32=0.95, pruned=None, printed_db=None,
                   measured_db=None, warning=False, why="declined: nothing to prune | no Conv"),
    ]
    lines = render(rows).splitlines()
    assert _cells(lines[0]) == ["task", "seed", "written", "metric", "fp32", "pruned (drop)", "printed fidelity dB",
                                "measured dB", "|diff| dB", "warning"] == COLUMNS
    assert len(_cells(lines[1])) == len(COLUMNS) and len(lines) == 4
    assert _cells(lines[2]) == ["ocr-rec", "1", "yes", "char_accuracy", "0.9960", "0.9643 (+0.0317)", "19.71", "19.41",
                                "0.30", "yes"]
    assert "\\|diff\\| dB" in lines[0] and "prune \\| no" in lines[3]  # escaped: the rows keep their columns
    assert _cells(lines[3]) == ["vad", "2", "declined: nothing to prune | no Conv", "f1", "0.9500", "-", "-", "-",
                                "-", "-"]


def test_digits_end_to_end(tmp_path: Path) -> None:
    args = ["digits", "--seed", "1", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert _cells(table[0]) == COLUMNS and len(table) == 3
    row = dict(zip(COLUMNS, _cells(table[2])))
    assert row["task"] == "digits" and row["seed"] == "1" and row["written"] == "yes" and row["metric"] == "accuracy"
    assert float(row["printed fidelity dB"]) > 20 and row["warning"] == "no"
    assert float(row["|diff| dB"]) <= 1.0  # the file written measures what the command printed
    assert (tmp_path / "out" / "digits.seed1.pruned.onnx").exists()
    again = CliRunner().invoke(main, [*args, "--json"])
    assert again.exit_code == 0, again.output
    (record,) = json.loads(again.stdout)
    assert record["written"] and record["stats"]["fidelity_samples"] == record["stats"]["measured_samples"]
    assert record["diff_db"] is not None and record["diff_db"] <= 1.0
