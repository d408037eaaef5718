"""Image folders as datasets: decode, resize, crop and normalize images into model inputs.

An :class:`ImageSpec` says how an image becomes an input array, in this order:

1. decode (Pillow) and convert to RGB (or grayscale for ``channels = "GRAY"``);
2. ``resize``: ``N`` scales the shorter side to ``N`` (aspect kept), ``HxW`` resizes exactly
   (bilinear); when neither ``resize`` nor ``crop`` is given and the model input has a fixed
   height and width, the image is resized to exactly those;
3. ``crop``: a center crop to ``HxW`` (or ``N`` for a square);
4. ``x = (pixel · scale − mean) / std`` per channel (``scale`` defaults to 1/255);
5. channel order ``RGB`` or ``BGR``; layout ``NCHW`` or ``NHWC``; a batch axis of 1 when the
   model input has rank 4.

Specs come from the command line as ``key=value`` pairs separated by commas
(``resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,channels=BGR``; lists use
``:``; ``scale`` accepts a fraction like ``1/255``) or from a small TOML file with the same keys
(top level or under ``[preprocess]``; lists as TOML arrays). Pillow is the ``images`` extra.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration._base import Dataset, InputSpec, Sample
from passes._errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageSpec", "parse_image_spec", "load_image_spec", "ImageFolderDataset"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
_KEYS = ("resize", "crop", "mean", "std", "scale", "channels", "layout")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How an image becomes an input (see the module docstring)."""

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    channels: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.channels not in ("RGB", "BGR", "GRAY"):
            raise DataError(f"image channels must be RGB, BGR or GRAY, got '{self.channels}'")
        if self.layout not in ("NCHW", "NHWC"):
            raise DataError(f"image layout must be NCHW or NHWC, got '{self.layout}'")
        count = 1 if self.channels == "GRAY" else 3
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, count):
                raise DataError(f"image {key} needs 1 or {count} values, got {len(getattr(self, key))}")
        if any(v == 0 for v in self.std):
            raise DataError("image std must not be 0")


def _size(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, str):
        parts = value.lower().replace("x", " ").split()
        value = [int(p) for p in parts] if all(p.isdigit() for p in parts) else None
    if isinstance(value, (list, tuple)) and len(value) in (1, 2) and all(isinstance(v, int) and v > 0 for v in value):
        return (value[0], value[-1])
    raise DataError(f"image {key} must be N or HxW (positive integers), got {value!r}")


def _floats(value: Any, key: str) -> tuple[float, ...]:
    items = value.split(":") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        return tuple(_number(v) for v in items)
    except (TypeError, ValueError, ZeroDivisionError):
        raise DataError(f"image {key} must be numbers, got {value!r}") from None


def _number(value: Any) -> float:
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        return float(num) / float(den)
    return float(value)


def _spec_from_mapping(values: Mapping[str, Any], where: str) -> ImageSpec:
    unknown = sorted(set(values) - set(_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown image setting '{unknown[0]}' (known: {', '.join(_KEYS)})")
    kwargs: dict[str, Any] = {}
    if "resize" in values:
        raw = values["resize"]
        single = isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit())
        kwargs["resize"] = int(raw) if single else _size(raw, "resize")
    if "crop" in values:
        kwargs["crop"] = _size(values["crop"], "crop")
    for key in ("mean", "std"):
        if key in values:
            kwargs[key] = _floats(values[key], key)
    if "scale" in values:
        kwargs["scale"] = _floats(values["scale"], "scale")[0]
    for key in ("channels", "layout"):
        if key in values:
            kwargs[key] = str(values[key]).upper()
    return ImageSpec(**kwargs)


def parse_image_spec(text: str) -> ImageSpec:
    """Parse ``key=value,key=value`` (see the module docstring).

    Raises:
        DataError: a pair is malformed or a value invalid; the message names it.
    """
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not value.strip():
            raise DataError(f"image preprocessing '{pair}' is not key=value (e.g. resize=256,crop=224)")
        values[key.strip().lower()] = value.strip()
    return _spec_from_mapping(values, "image preprocessing")


def load_image_spec(source: str | os.PathLike[str]) -> ImageSpec:
    """A spec from a ``.toml`` file (keys at top level or under ``[preprocess]``) or from spec text.

    Raises:
        DataError: unreadable file, bad TOML, or an invalid setting.
    """
    path = Path(source)
    if path.suffix.lower() != ".toml":
        return parse_image_spec(str(source))
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from err
    except tomllib.TOMLDecodeError as err:
        raise DataError(f"{path}: not valid TOML ({err})") from err
    return _spec_from_mapping(data.get("preprocess", data), str(path))


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image folders needs Pillow: pip install 'onnxslim-optimizer[images]'") from None
    return Image


def _target(specs: Sequence[InputSpec] | None, spec: ImageSpec) -> tuple[str, int, tuple[int, int] | None]:
    """Input name, its rank, and its fixed (H, W) if any."""
    if not specs or len(specs) != 1:
        raise DataError(f"image folders need a model with exactly one input, got {len(specs or ())}")
    only = specs[0]
    rank = len(only.dims) or 4
    if rank not in (3, 4):
        raise DataError(f"input '{only.name}' has rank {rank}; images need a rank-3 or rank-4 input")
    spatial = only.dims[-3:-1] if spec.layout == "NHWC" else only.dims[-2:]
    fixed = tuple(spatial) if all(isinstance(d, int) for d in spatial) and len(spatial) == 2 else None
    return only.name, rank, fixed  # type: ignore[return-value]


class ImageFolderDataset(Dataset):
    """Every image under a folder (recursively, sorted by path), preprocessed by an :class:`ImageSpec`."""

    def __init__(self, path: str | os.PathLike[str], specs: Sequence[InputSpec] | None, *,
                 spec: ImageSpec | None = None) -> None:
        folder = Path(path)
        self.source = str(folder)
        self.spec = spec or ImageSpec()
        self._image = _pillow()
        self._name, self._rank, self._fixed = _target(specs, self.spec)
        self._files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self._files)):
            yield self.sample(i)

    def sample(self, index: int) -> Sample:
        path = self._files[index]
        try:
            with self._image.open(path) as image:
                array = self._preprocess(image)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read as an image ({' '.join(str(err).split())})") from err
        return {self._name: array}

    def _preprocess(self, image: Any) -> np.ndarray:
        spec = self.spec
        image = image.convert("L" if spec.channels == "GRAY" else "RGB")
        resize = spec.resize if spec.resize is not None or spec.crop is not None else self._fixed
        if isinstance(resize, int):
            w, h = image.size
            ratio = resize / min(w, h)
            resize = (max(1, round(h * ratio)), max(1, round(w * ratio)))
        if resize is not None:
            image = image.resize((resize[1], resize[0]), self._image.BILINEAR)
        if spec.crop is not None:
            w, h = image.size
            ch, cw = spec.crop
            if ch > h or cw > w:
                raise ValueError(f"crop {ch}x{cw} is larger than the image ({h}x{w})")
            top, left = (h - ch) // 2, (w - cw) // 2
            image = image.crop((left, top, left + cw, top + ch))
        x = np.asarray(image, dtype=np.float32)
        x = x[:, :, None] if x.ndim == 2 else x
        x = (x * np.float32(spec.scale) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        if spec.channels == "BGR":
            x = x[:, :, ::-1]
        if spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x[None] if self._rank == 4 else x
