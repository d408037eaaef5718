"""The int8 error report: per-tensor SQNR compared like with like, each unit alone, in chunks."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from calibration.collect import collect
from calibration.datasets import IterableDataset
from onnxslim.cli import main
from passes._base import RunContext
from passes.quantize import QuantizeStaticPass, StaticQuantOptions
from passes.quantize._diagnose import error_report, render_error_report
from passes.quantize._fallback import tensor_sqnr
from passes.quantize._static import quantize_static
from test_quantize_static import _feeds, conv_relu_conv


def _setup():
    model = conv_relu_conv()
    samples = _feeds(model, 8, seed=1)
    table = collect(model, samples)
    options = StaticQuantOptions(fallback_min_sqnr=None, report_errors=True)
    result = QuantizeStaticPass(options).apply(model, RunContext(calibration=table, dataset=IterableDataset(samples)))
    return model, samples, table, options, result


def test_report_measures_each_tensor_and_each_unit_alone() -> None:
    model, samples, table, options, result = _setup()
    report = result.details.errors
    assert report["samples"] == 8 and set(report["outputs"]) == {"y"}
    tensors = {r["tensor"]: r for r in report["tensors"]}
    # like with like: conv1's Relu is absorbed, so its quantized tensor is the post-Relu r1
    assert "r1" in tensors and tensors["r1"]["unit"] == "conv1"
    sqnrs = [r["sqnr_db"] for r in report["tensors"] if r["sqnr_db"] is not None]
    assert sqnrs == sorted(sqnrs)  # worst first
    units = {tuple(r["units"]): r for r in report["units"]}
    assert set(units) == {("conv1",), ("conv2",)}
    # "alone" is the output SQNR of the model with only that unit quantized, measured directly
    only_conv1 = quantize_static(model, table, options, extra_float=frozenset({"conv2"}))[0]
    expected = tensor_sqnr(model, only_conv1, {"y": "y"}, samples)["y"]
    assert units[("conv1",)]["alone_db"] == round(expected, 2)
    assert [r["alone_db"] for r in report["units"]] == sorted(r["alone_db"] for r in report["units"])


def test_chunks_do_not_change_the_figures() -> None:
    model, samples, _, _, result = _setup()
    details = result.details
    one = error_report(model, result.model, details, samples, chunk=1)
    many = error_report(model, result.model, details, samples, chunk=1000)
    assert one == many
    text = render_error_report(one)
    assert "| y |" in text and "## Quantized tensors, worst first" in text


def test_cli_writes_json_and_markdown(tmp_path, lenet_path) -> None:
    calib = lenet_path.parent / "lenet5_digits_calib.npz"
    target = tmp_path / "errors.json"
    result = CliRunner().invoke(main, ["quantize", str(lenet_path), "-o", str(tmp_path / "q.onnx"), "--calib", str(calib),
                                       "--samples", "16", "--report-errors", str(target)])
    assert result.exit_code == 0, result.output
    doc = json.loads(target.read_text())
    assert {r["units"][0] for r in doc["units"]} >= {"/conv1/Conv", "/fc3/Gemm"}
    assert np.isfinite(doc["outputs"]["logits"])
    assert (tmp_path / "errors.md").read_text().startswith("# int8 error report (8 calibration samples)")
    bad = CliRunner().invoke(main, ["quantize", str(lenet_path), "-o", str(tmp_path / "d.onnx"), "--mode", "dynamic",
                                    "--report-errors", str(target)])
    assert bad.exit_code == 2 and "static mode" in bad.stderr
