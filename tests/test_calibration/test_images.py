"""Image folders: preprocessing specs (text and TOML) and the arrays they produce."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

from calibration.datasets import check_dataset, input_specs, open_dataset
from calibration.images import ImageFolderDataset, ImageSpec, load_image_spec, parse_image_spec
from passes._errors import DataError

needs_pillow = pytest.mark.skipif(importlib.util.find_spec("PIL") is None,
                                  reason="Pillow (the 'images' extra) is not installed")


def _model(dims: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 13]>
        net (float[{dims}] image) => (float[{dims}] out)
        {{
            out = Identity(image)
        }}
        """
    )


def _folder(tmp_path: Path, size=(6, 4), color=(255, 0, 51), count: int = 2) -> Path:
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", size, color).save(folder / ("sub" if i % 2 else ".") / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_parse_text_and_toml(tmp_path: Path) -> None:
    spec = parse_image_spec("resize=256, crop=224x200, mean=0.485:0.456:0.406, std=0.229:0.224:0.225, "
                            "scale=1/255, channels=bgr, layout=NHWC")
    assert spec == ImageSpec(resize=256, crop=(224, 200), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                             scale=1 / 255, channels="BGR", layout="NHWC")
    (tmp_path / "p.toml").write_text('[preprocess]\nresize = [48, 320]\nmean = [0.5]\nstd = [0.5]\n')
    assert load_image_spec(tmp_path / "p.toml") == ImageSpec(resize=(48, 320), mean=(0.5,), std=(0.5,))
    (tmp_path / "bad.toml").write_text("resize = [")
    with pytest.raises(DataError, match="not valid TOML"):
        load_image_spec(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resize", "not key=value"),
        ("size=3", "unknown image setting 'size'"),
        ("crop=0x3", "crop must be N or HxW"),
        ("mean=a:b", "mean must be numbers"),
        ("mean=1:2", "mean needs 1 or 3 values"),
        ("layout=CHW", "layout must be NCHW or NHWC"),
        ("std=0", "std must not be 0"),
    ],
)
def test_spec_errors(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_image_spec(text)


@needs_pillow
def test_normalize_order_and_layout(tmp_path: Path) -> None:
    folder = _folder(tmp_path)  # 6 wide, 4 high, RGB (255, 0, 51)
    specs = input_specs(_model("1, 3, H, W"))
    # (pixel/255 - 0.5) / 0.5: R = 1, G = -1, B = (0.2 - 0.5)/0.5 = -0.6
    data = open_dataset(folder, specs, image_spec=parse_image_spec("mean=0.5,std=0.5"))
    assert isinstance(data, ImageFolderDataset) and len(data) == 2  # sub-folders too, .txt ignored
    x = next(iter(data))["image"]
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, -1.0, -0.6], atol=1e-6)
    bgr = ImageFolderDataset(folder, input_specs(_model("4, 6, 3")), spec=ImageSpec(channels="BGR", layout="NHWC"))
    y = bgr.sample(0)["image"]
    assert y.shape == (4, 6, 3)  # rank-3 input: no batch axis
    np.testing.assert_allclose(y[0, 0], [0.2, 0.0, 1.0], atol=1e-6)
    check_dataset(data, specs)


@needs_pillow
def test_resize_and_crop(tmp_path: Path) -> None:
    folder = _folder(tmp_path, size=(8, 4))  # 8 wide, 4 high
    specs = input_specs(_model("1, 3, H, W"))
    short = ImageFolderDataset(folder, specs, spec=ImageSpec(resize=2))  # shorter side 4 -> 2: 2 x 4
    assert short.sample(0)["image"].shape == (1, 3, 2, 4)
    cropped = ImageFolderDataset(folder, specs, spec=parse_image_spec("resize=4x8,crop=2x3"))
    assert cropped.sample(0)["image"].shape == (1, 3, 2, 3)
    fixed = open_dataset(folder, input_specs(_model("1, 3, 5, 7")))  # default: resize to the fixed dims
    assert fixed.sample(1)["image"].shape == (1, 3, 5, 7)
    with pytest.raises(DataError, match="larger than the image"):
        ImageFolderDataset(folder, specs, spec=ImageSpec(crop=(10, 10))).sample(0)


@needs_pillow
def test_image_folder_errors(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with pytest.raises(DataError, match="exactly one input"):
        ImageFolderDataset(folder, input_specs(_model("1, 3, 4, 6")) * 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        ImageFolderDataset(tmp_path / "empty", input_specs(_model("1, 3, 4, 6")))
    (folder / "broken.png").write_text("not a png")
    data = ImageFolderDataset(folder, input_specs(_model("1, 3, 4, 6")))
    with pytest.raises(DataError, match="broken.png: cannot read as an image"):
        list(data)


def test_preprocessing_on_a_file_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", image=np.zeros((1, 1, 3, 4, 6), np.float32))
    with pytest.raises(DataError, match="applies to a folder of images"):
        open_dataset(tmp_path / "d.npz", input_specs(_model("1, 3, 4, 6")), image_spec=ImageSpec())


def test_missing_pillow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)  # import PIL now raises ImportError
    with pytest.raises(DataError, match=r"needs Pillow: pip install 'onnxslim-optimizer\[images\]'"):
        ImageFolderDataset(tmp_path, input_specs(_model("1, 3, 4, 6")))
