"""Design rows of a layer's least-squares fit: what each sampled output position sees.

- Conv (2-D): the input patch under the kernel (padding, strides, dilations, ``auto_pad``),
  flattened as (channel, kernel row, kernel column), at random output positions;
- ConvTranspose (2-D, ``strides == kernel``, no padding or dilation: every output pixel comes
  from exactly one input pixel and kernel position): that input pixel's channels placed in the
  block of its kernel position, so that the features are (channel, kernel row, kernel column);
- depthwise Conv: the same patches kept per channel (``[rows, channels, kernel positions]``);
- Gemm / MatMul: the input rows themselves, at random rows.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

__all__ = ["refit_problem", "rows"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def refit_problem(node: onnx.NodeProto, kind: str, weight: np.ndarray | None) -> str | None:
    """Why this layer cannot be re-fitted, or ``None`` when it can."""
    if weight is None:
        return "weight is not a constant"
    if kind in ("Gemm", "MatMul"):
        return None
    if weight.ndim != 4:
        return f"{kind} that is not 2-D"
    if kind == "ConvTranspose":
        attrs = _attrs(node)
        auto = attrs.get("auto_pad", b"NOTSET")
        plain = (list(attrs.get("strides", [1, 1])) == list(weight.shape[2:]) and not any(attrs.get("pads", []))
                 and set(attrs.get("dilations", [1])) == {1} and not any(attrs.get("output_padding", []))
                 and "output_shape" not in attrs and auto in (b"NOTSET", "NOTSET", b"VALID", "VALID"))
        if not plain:
            return "ConvTranspose whose kernel positions overlap or that pads"
    return None


def _pads(node: onnx.NodeProto, x_shape: tuple[int, ...], kernel: tuple[int, int], strides, dilations) -> list[int]:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            begin.append(total - small if auto == "SAME_LOWER" else small)
            end.append(total - begin[-1])
        return begin + end
    return [0, 0, 0, 0] if auto == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))


def _conv_rows(node: onnx.NodeProto, x: np.ndarray, y: np.ndarray, kernel: tuple[int, int], pick: np.ndarray) -> np.ndarray:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    strides, dilations = list(attrs.get("strides", [1, 1])), list(attrs.get("dilations", [1, 1]))
    pads = _pads(node, x.shape, kernel, strides, dilations)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]][:, :, : y.shape[2], : y.shape[3]]
    n, i, j = np.unravel_index(pick, (y.shape[0], y.shape[2], y.shape[3]))
    return win[n, :, i, j].reshape(len(pick), -1)


def _transpose_rows(x: np.ndarray, y: np.ndarray, kernel: tuple[int, int], pick: np.ndarray) -> np.ndarray:
    n, oy, ox = np.unravel_index(pick, (y.shape[0], y.shape[2], y.shape[3]))
    (i, a), (j, b) = divmod(oy, kernel[0]), divmod(ox, kernel[1])
    design = np.zeros((len(pick), x.shape[1], *kernel), dtype=x.dtype)
    design[np.arange(len(pick)), :, a, b] = x[n, :, i, j]
    return design.reshape(len(pick), -1)


def rows(
    node: onnx.NodeProto, kind: str, kernel: tuple[int, ...], x: np.ndarray, y: np.ndarray, count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Design rows (inputs) and targets (outputs) of one batch, at most ``count`` of them."""
    if kind in ("Conv", "Depthwise", "ConvTranspose"):
        positions = y.shape[0] * y.shape[2] * y.shape[3]
        pick = rng.choice(positions, size=min(count, positions), replace=False)
        design = _transpose_rows(x, y, kernel, pick) if kind == "ConvTranspose" else _conv_rows(node, x, y, kernel, pick)
        if kind == "Depthwise":  # [rows, channels, kernel positions]: each channel on its own
            design = design.reshape(len(pick), x.shape[1], -1)
        n, i, j = np.unravel_index(pick, (y.shape[0], y.shape[2], y.shape[3]))
        return design, y[n, :, i, j]
    design, target = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if len(design) > count:
        pick = rng.choice(len(design), size=count, replace=False)
        design, target = design[pick], target[pick]
    return design, target
