"""Synthetic printed text for the OCR tasks: random Latin lines rendered with Pillow.

The font is Pillow's built-in scalable font (Aileron Regular, ``ImageFont.load_default(size)``,
Pillow ≥ 10.1 with FreeType), so the data does not depend on which fonts a machine has. Variety
comes from the text (words, numbers, dates, prices, punctuation), the size (22-40 px), faux
bold (stroke), a slight italic shear, horizontal stretch, foreground/background shade (mostly
dark on light, some light on dark), mild Gaussian blur and pixel noise.

A line *crop* is what a detector would hand the recognizer: the ink's horizontal extent and the
font's line height (ascender to descender of ``"Agy|"``), each plus a small margin.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from benchmarks.tasks._common import TaskUnavailable

__all__ = [
    "WORDS",
    "PUNCTUATION",
    "LineStyle",
    "font",
    "random_text",
    "random_style",
    "line_mask",
    "render_line",
    "sample_line",
    "resize_normalize",
]

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part over new sound take only little work know place year live me back give most very "
    "after thing our just name good sentence man think say great where help through much before line right "
    "too mean old any same tell boy follow came want show also around form three small set put end does "
    "another well large must big even such because turn here why ask went men read need land different home "
    "us move try kind hand picture again change off play spell air away animal house point page letter "
    "mother answer found study still learn should America world Paris London Monday Friday June October "
    "Street Road Total Price Invoice Order Model Station Market Hotel Coffee Garden River North South"
).split()
PUNCTUATION = ".,:;!?"
_REFERENCE_LINE = "Agy|"


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in Aileron Regular at ``size`` px.

    Raises:
        TaskUnavailable: Pillow is older than 10.1 or was built without FreeType.
    """
    try:
        loaded = ImageFont.load_default(size=size)
    except TypeError as err:  # pragma: no cover - Pillow < 10.1 has no size argument
        raise TaskUnavailable("the OCR tasks need Pillow >= 10.1 (its scalable built-in font)") from err
    if not isinstance(loaded, ImageFont.FreeTypeFont):  # pragma: no cover - Pillow without FreeType
        raise TaskUnavailable("Pillow was built without FreeType; the OCR tasks need its scalable built-in font")
    return loaded


def _token(rng: np.random.Generator) -> str:
    """One word, number, date, price, time, code or percentage, sometimes with punctuation."""
    kind = rng.choice(["word", "word", "word", "Word", "number", "price", "date", "time", "code", "pct", "paren"])
    word = str(rng.choice(WORDS))
    match kind:
        case "Word":
            text = word.capitalize()
        case "number":
            text = str(int(rng.integers(0, 100000)))
        case "price":
            text = f"${rng.integers(1, 1000)}.{rng.integers(0, 100):02d}"
        case "date":
            text = f"{rng.integers(1990, 2031)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
        case "time":
            text = f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
        case "code":
            letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ"), size=2))
            text = f"{letters}-{rng.integers(10, 1000)}"
        case "pct":
            text = f"{rng.integers(1, 100)}%"
        case "paren":
            text = f"({word})"
        case _:
            text = word
    if kind in ("word", "Word") and rng.random() < 0.2:
        text += str(rng.choice(list(PUNCTUATION)))
    return text


def random_text(rng: np.random.Generator, *, max_tokens: int = 6) -> str:
    """1 to ``max_tokens`` tokens separated by single spaces."""
    count = int(rng.integers(1, max_tokens + 1))
    return " ".join(_token(rng) for _ in range(count))


@dataclasses.dataclass(frozen=True)
class LineStyle:
    """How one line is drawn; shades are 0-255 gray levels."""

    size: int
    stroke: int
    shear: float
    stretch: float
    foreground: int
    background: int
    blur: float
    noise: float
    margin_x: int
    margin_y: int


def random_style(rng: np.random.Generator) -> LineStyle:
    """A random but legible style: contrast between shades is at least 90 gray levels."""
    dark_on_light = rng.random() < 0.8
    background = int(rng.integers(170, 256)) if dark_on_light else int(rng.integers(0, 70))
    contrast = int(rng.integers(90, 170))
    foreground = max(0, background - contrast) if dark_on_light else min(255, background + contrast)
    return LineStyle(
        size=int(rng.integers(22, 41)),
        stroke=int(rng.random() < 0.15),
        shear=float(rng.uniform(-0.15, 0.15)) if rng.random() < 0.3 else 0.0,
        stretch=float(rng.uniform(0.85, 1.15)),
        foreground=foreground,
        background=background,
        blur=float(rng.uniform(0.0, 1.0)),
        noise=float(rng.uniform(0.0, 6.0)),
        margin_x=int(rng.integers(2, 9)),
        margin_y=int(rng.integers(2, 7)),
    )


def line_mask(text: str, style: LineStyle) -> np.ndarray:
    """Ink coverage 0-255 (uint8, H x W) of ``text``, cropped to the line box plus margins."""
    f = font(style.size)
    pad = style.size
    width = int(f.getlength(text)) + 2 * pad + style.size
    height = 3 * style.size
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).text((pad, pad), text, font=f, fill=255, stroke_width=style.stroke, stroke_fill=255)
    _, top, _, bottom = ImageDraw.Draw(canvas).textbbox((pad, pad), _REFERENCE_LINE, font=f)
    if style.shear:
        canvas = canvas.transform(canvas.size, Image.Transform.AFFINE,
                                  (1, style.shear, -style.shear * (top + bottom) / 2, 0, 1, 0),
                                  resample=Image.Resampling.BILINEAR)
    if style.stretch != 1.0:
        canvas = canvas.resize((max(1, round(width * style.stretch)), height), Image.Resampling.BILINEAR)
    ink = np.asarray(canvas)
    cols = np.flatnonzero(ink.max(axis=0) > 0)
    x0 = max(0, int(cols[0]) - style.margin_x)
    x1 = min(ink.shape[1], int(cols[-1]) + 1 + style.margin_x)
    y0 = max(0, top - style.stroke - style.margin_y)
    y1 = min(ink.shape[0], bottom + style.stroke + style.margin_y)
    return np.ascontiguousarray(ink[y0:y1, x0:x1])


def render_line(text: str, style: LineStyle, rng: np.random.Generator) -> np.ndarray:
    """The gray line image (uint8, H x W): shades from the mask, then blur, then noise."""
    mask = line_mask(text, style).astype(np.float32) / 255.0
    gray = style.background + (style.foreground - style.background) * mask
    image = Image.fromarray(np.clip(gray + 0.5, 0, 255).astype(np.uint8))
    if style.blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    out = np.asarray(image, dtype=np.float32)
    if style.noise > 0:
        out = out + rng.normal(0.0, style.noise, size=out.shape)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def sample_line(rng: np.random.Generator, *, max_ratio: float, max_tokens: int = 6) -> tuple[str, np.ndarray]:
    """A random text and its rendered gray crop whose width is at most ``max_ratio`` x its height.

    Tokens are dropped from the end until the line fits (a fresh text is drawn if even one
    token does not), so the recognizer never sees a squeezed line.
    """
    while True:
        tokens = random_text(rng, max_tokens=max_tokens).split(" ")
        style = random_style(rng)
        while tokens:
            text = " ".join(tokens)
            height, width = line_mask(text, style).shape
            if width <= max_ratio * height:
                return text, render_line(text, style, rng)
            tokens.pop()


def resize_normalize(image: np.ndarray, *, width: int, height: int = 48) -> np.ndarray:
    """PaddleOCR's rec/cls input: ``[3, height, width]`` float32 in [-1, 1], padded right with 0.

    The line is resized to ``height`` keeping its aspect ratio (width ``ceil(height * w / h)``,
    capped at ``width``) with bilinear interpolation, scaled as ``(x / 255 - 0.5) / 0.5`` and
    zero-padded on the right. ``image`` is gray (H x W) or 3-channel (H x W x 3) in the
    channel order the model expects: PaddleOCR and RapidOCR feed OpenCV's BGR.
    """
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    resized_w = min(width, math.ceil(height * w / h))
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
        (resized_w, height), Image.Resampling.BILINEAR
    )
    x = (np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = x
    return out
