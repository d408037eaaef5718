"""`python -m benchmarks.report_memory`: the table, its parsing, the verdict, one child measured (no model run)."""

from __future__ import annotations

import sys

from benchmarks.report_memory import (
    BAR,
    FLOOR,
    FP32,
    QUANTIZE,
    REPORT,
    Measurement,
    measure,
    parse,
    render,
    verdict,
)

ROWS = [Measurement(FLOOR, 80.0, 1.5), Measurement(FP32, 130.0, 9.0), Measurement(REPORT, 250.0, 190.0),
        Measurement(QUANTIZE, 240.0, 35.0)]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_render_header_and_ratios() -> None:
    text = render(ROWS, samples=64, task="ocr-rec")
    lines = text.splitlines()
    assert lines[0].startswith("task ocr-rec: 64 calibration samples") and f"{BAR:g}x" in lines[0]
    assert _cells(lines[2]) == ["what", "peak RSS MiB", "above the floor MiB", "ratio to fp32 (peak)",
                                "ratio to fp32 (above floor)", "seconds", "exit"]
    rows = {c[0]: c for c in map(_cells, lines[4:])}
    assert rows[FLOOR][1:5] == ["80.0", "0.0", "0.62x", "-"]
    assert rows[FP32][1:5] == ["130.0", "50.0", "1.00x", "1.00x"]
    assert rows[REPORT][1:7] == ["250.0", "170.0", "1.92x", "3.40x", "190.0", "0"]


def test_parse_round_trip() -> None:
    text = render(ROWS, samples=8)
    assert parse(text) == ROWS
    assert parse("no table here\n| a | b |") == []


def test_verdict() -> None:
    assert "PASS" in verdict(ROWS)
    over = [*ROWS[:2], Measurement(REPORT, 2 * 130.0, 1.0)]
    assert "FAIL" in verdict(over) and "2.00x" in verdict(over)
    assert "failed" in verdict([*ROWS[:2], Measurement(REPORT, 10.0, 1.0, returncode=1)])


def test_measure_a_child() -> None:
    m, tail = measure("alloc", [sys.executable, "-c", "x = bytearray(64 * 2**20); x[::4096] = b'1' * len(x[::4096])"])
    assert m.returncode == 0 and tail == "" and m.seconds > 0
    assert m.peak_mib >= 64  # the child's own peak, not the parent's
    failed, tail = measure("fail", [sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert failed.returncode == 1 and "boom" in tail
