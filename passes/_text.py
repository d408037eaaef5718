"""Markdown tables for reports (shared by the passes' own summaries and the application's)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

__all__ = ["COUNT_UNITS", "BYTE_UNITS", "markdown_table"]

COUNT_UNITS = ("", " K", " M", " G", " T", " P")
BYTE_UNITS = (" B", " KiB", " MiB", " GiB", " TiB", " PiB")


def _cell(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _is_number(text: str) -> bool:
    stripped = text.replace(",", "").replace("%", "").rstrip("x×").strip()
    for unit in COUNT_UNITS[1:] + BYTE_UNITS:
        stripped = stripped.removesuffix(unit)
    try:
        float(stripped)
    except ValueError:
        return text in ("unknown", "-", "—")
    return True


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Collection[int] | None = None
) -> str:
    """A Markdown table padded to column width (readable in a terminal too).

    Args:
        headers: column titles.
        rows: cell values; ``None`` renders as ``unknown``, floats with 4 significant digits.
        right: indexes of right-aligned columns; by default every column whose cells are all
            numbers (with thousands separators, ``%``, ``x`` or units) is right-aligned.
    """
    cells = [[_cell(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    if right is None:
        right = {i for i in range(len(headers)) if len(cells) > 1 and all(_is_number(r[i]) for r in cells[1:])}
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(cells[0]), "| " + " | ".join(rule) + " |", *(line(r) for r in cells[1:])])
