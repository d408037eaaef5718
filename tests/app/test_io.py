"""Model I/O: loading errors, atomic saving, refusing to overwrite the input, external data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from _helpers import assert_equivalent
from onnxslim.io import load_model, save_model
from passes._errors import InvalidModelError, ModelLoadError, ModelSaveError

SCALE = """
<ir_version: 8, opset_import: ["" : 13]>
scale (float[N, 4] x) => (float[N, 4] y) <float[4] w = {1.0, -2.0, 3.0, 0.5}>
{
    y = Mul(x, w)
}
"""


@pytest.fixture()
def model() -> onnx.ModelProto:
    return onnx.parser.parse_model(SCALE)


def test_round_trip(tmp_path: Path, model: onnx.ModelProto) -> None:
    path = save_model(model, tmp_path / "m.onnx")
    loaded = load_model(path)
    assert loaded.SerializeToString() == model.SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"this is a text file, not a model\n", "not an ONNX model"),
        (b"", "not an ONNX model"),
    ],
)
def test_load_errors_are_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_model_is_refused(tmp_path: Path, model: onnx.ModelProto) -> None:
    data = model.SerializeToString()
    (tmp_path / "t.onnx").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelLoadError, match="truncated"):
        load_model(tmp_path / "t.onnx")


def test_checker_failure_names_the_node(tmp_path: Path) -> None:
    bad = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x", "x"], ["y"], name="the_relu")],
            "bad",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8,
    )
    path = tmp_path / "bad.onnx"
    path.write_bytes(bad.SerializeToString())
    with pytest.raises(InvalidModelError, match=r"node 'the_relu' \(Relu\)") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_save_refuses_the_input_path(tmp_path: Path, model: onnx.ModelProto) -> None:
    src = save_model(model, tmp_path / "in.onnx")
    before = src.read_bytes()
    with pytest.raises(ModelSaveError, match="overwrite the input"):
        save_model(model, tmp_path / "." / "in.onnx", input_path=src)
    link = tmp_path / "alias.onnx"
    link.symlink_to(src)
    with pytest.raises(ModelSaveError, match="overwrite the input"):
        save_model(model, link, input_path=src)
    assert src.read_bytes() == before


def test_save_into_missing_folder_leaves_nothing(tmp_path: Path, model: onnx.ModelProto) -> None:
    with pytest.raises(ModelSaveError, match="does not exist"):
        save_model(model, tmp_path / "nope" / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path: Path, model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: onnx.ModelProto) -> bytes:
        raise ValueError("disk full (simulated)")

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", boom)
    with pytest.raises(ModelSaveError, match="disk full"):
        save_model(model, tmp_path / "m.onnx")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_external_data_on_request(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    big = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "mm",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
            [w],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8,
    )
    path = save_model(big, tmp_path / "ext.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.onnx", "ext.onnx.data"]
    assert path.stat().st_size < 4096  # weights are not in the protobuf
    loaded = load_model(path)
    assert_equivalent(big, loaded)
    # Refuses to write the external data file over the input model.
    with pytest.raises(ModelSaveError, match="overwrite the input"):
        save_model(big, tmp_path / "x.onnx", input_path=tmp_path / "x.onnx.data")


def test_missing_external_data_is_a_load_error(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((32, 32), np.float32), "w")
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32])], [w],
        ),
        opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
    )
    save_model(m, tmp_path / "e.onnx", external_data=True)
    (tmp_path / "e.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        load_model(tmp_path / "e.onnx")
