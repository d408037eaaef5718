"""CalibrationTable: JSON round trip, model fingerprint, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibration.collect import collect
from calibration.histogram import Histogram
from calibration.table import FORMAT, CalibrationTable, TensorRange, model_fingerprint
from passes._errors import CalibrationError

MODEL = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 13]>
    scale_relu (float[N, 2] x) => (float[N, 2] y)
    <float[2] s = {2, -1}>
    {
        m = Mul(x, s)
        y = Relu(m)
    }
    """
)


def _table(**kwargs) -> CalibrationTable:
    data = [{"x": np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)}, {"x": np.array([[-1.0, 0.0]], np.float32)}]
    return collect(MODEL, data, **kwargs)


def test_json_round_trip(tmp_path: Path) -> None:
    table = _table(method="percentile", keep_histograms=True)
    # x: min -2, max 3; m = x·[2, -1]: {2, 2, 1, -3, -2, 0} -> [-3, 2]; y = relu(m): [0, 2]
    assert table.range("x")[0] == -2.0 and table.range("y")[0] == 0.0
    path = tmp_path / "table.json"
    table.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == 1 and data["samples"] == 2
    assert data["model_sha256"] == model_fingerprint(MODEL) and data["method"] == "percentile"
    assert set(data["tensors"]["m"]) == {"min", "max", "histogram"}
    again = CalibrationTable.load(path, model=MODEL)
    assert again == table
    hist = Histogram.from_state(again.tensors["m"].histogram)
    assert hist.count == 6 and (hist.min, hist.max) == (-3.0, 2.0)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_fingerprint_is_stable_on_reload_and_ignores_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(MODEL, path)
    reloaded = onnx.load(path)
    reloaded.producer_name = "someone else"
    reloaded.doc_string = "re-saved"
    onnx.helper.set_model_props(reloaded, {"author": "x"})
    assert model_fingerprint(reloaded) == model_fingerprint(MODEL)
    changed = onnx.load(path)
    changed.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([2.0, -1.5], np.float32), "s"))
    assert model_fingerprint(changed) != model_fingerprint(MODEL)


def test_table_for_another_model_is_a_clear_error(tmp_path: Path) -> None:
    table = _table()
    other = onnx.load_from_string(MODEL.SerializeToString())
    other.graph.node[1].op_type = "Sigmoid"
    table.save(tmp_path / "t.json")
    with pytest.raises(CalibrationError, match=r"table was made for another model \(sha256 [0-9a-f]{16}…\), "
                                               r"this model is [0-9a-f]{16}…"):
        CalibrationTable.load(tmp_path / "t.json", model=other)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ('{"format": "something"}', "not an onnxslim calibration table"),
        ('{"format": "onnxslim-calibration", "version": 2}', "version 2 is not supported"),
        ('{"format": "onnxslim-calibration", "version": 1, "tensors": {}}', "malformed"),
        ('{"format": "onnxslim-calibration", "version": 1, "model_sha256": "a", "method": "minmax", '
         '"samples": 1, "tensors": {"t": {"min": 2, "max": 1}}}', "not a finite interval"),
    ],
)
def test_load_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(CalibrationError, match=message):
        CalibrationTable.load(tmp_path / "t.json")
    with pytest.raises(CalibrationError, match="cannot read"):
        CalibrationTable.load(tmp_path / "missing.json")


def test_ranges_and_quant_params() -> None:
    table = CalibrationTable("0" * 64, "minmax", 1, {"t": TensorRange(-1.0, 2.0)})
    assert "t" in table and len(table) == 1
    params = table.quant_params("t")  # u8 asymmetric on [-1, 2]: 3/255, 85
    assert params.scale == np.float32(3 / 255) and int(params.zero_point) == 85
    with pytest.raises(CalibrationError, match="no range for tensor 'u'"):
        table.range("u")
    assert "histogram" not in table.to_dict()["tensors"]["t"]
