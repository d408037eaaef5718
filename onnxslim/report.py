"""Rendering of report data as Markdown: tables, human-readable units, the model summary."""

from __future__ import annotations

from onnxslim.runtime import dynamic_dim_labels, example_shape
from onnxslim.summary import ModelSummary, TensorInfo
from passes._text import BYTE_UNITS, COUNT_UNITS, markdown_table

__all__ = ["markdown_table", "human_bytes", "human_count", "render_summary"]


def _human(value: float, base: int, units: tuple[str, ...]) -> str:
    """``416520`` -> ``416.5 K``; ``1.23e9`` -> ``1.23 G`` (two decimals below 10)."""
    step = 0
    while step < len(units) - 1 and round(value, 2 if value < 10 else 1) >= base:
        value /= base
        step += 1
    if step == 0:
        return f"{int(value)}{units[0]}"
    return f"{value:.{2 if value < 10 else 1}f}{units[step]}"


def human_count(value: int | None) -> str:
    """``416520`` → ``416.5 K``; ``None`` → ``unknown``."""
    return "unknown" if value is None else _human(value, 1000, COUNT_UNITS)


def human_bytes(value: int | None) -> str:
    """``1536`` → ``1.50 KiB``; ``None`` → ``unknown``."""
    return "unknown" if value is None else _human(value, 1024, BYTE_UNITS)


# ----------------------------------------------------------------------------- model summary

_Shape = tuple[int | str | None, ...]


def _shape_text(shape: _Shape | None) -> str:
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _render_model(s: ModelSummary) -> str:
    producer = " ".join(p for p in (s.producer_name, s.producer_version) if p) or "(not recorded)"
    lines = [
        "## Model",
        "",
        f"- graph: {s.graph_name or '(unnamed)'}",
        f"- IR version: {s.ir_version}",
        f"- producer: {producer}",
        "- opsets: " + (", ".join(f"{d} {v}" for d, v in s.opsets.items()) or "(none)"),
    ]
    if s.file_size is not None:
        lines.append(f"- file size: {human_bytes(s.file_size)} ({s.file_size:,} bytes)")
    nodes = f"- nodes: {s.node_count:,} in the main graph"
    lines.append(nodes + (f", {s.subgraph_nodes:,} in subgraphs" if s.subgraph_nodes else ""))
    return "\n".join(lines)


def _render_values(title: str, values: tuple[TensorInfo, ...]) -> str:
    if not values:
        return f"## {title}\n\n(none)"
    rows = [[v.name, v.dtype, _shape_text(v.shape)] for v in values]
    return f"## {title}\n\n" + markdown_table(["name", "dtype", "shape"], rows, right=set())


def _render_ops(s: ModelSummary) -> str:
    if not s.op_counts:
        return "## Ops\n\n(no nodes)"
    rows = [[op, f"{n:,}"] for op, n in s.op_counts.items()]
    rows.append(["total", f"{s.node_count:,}"])
    return "## Ops (main graph)\n\n" + markdown_table(["op", "count"], rows, right={1})


def _render_params(s: ModelSummary) -> str:
    if not s.params_by_dtype:
        return "## Parameters\n\n(none)"
    rows = [[p.dtype, human_count(p.count), f"{p.count:,}", human_bytes(p.bytes)] for p in s.params_by_dtype]
    total, size = s.total_params, s.total_param_bytes
    rows.append(["total", human_count(total), f"{total:,}", human_bytes(size)])
    return "## Parameters\n\n" + markdown_table(["dtype", "params", "exact", "size"], rows, right={1, 2, 3})


def _mac_row(name: str, nodes: int, unknown: int | None, macs: int | None) -> list[str]:
    human, exact = ("unknown", "—") if macs is None else (human_count(macs), f"{macs:,}")
    return [name, str(nodes), *([] if unknown is None else [str(unknown)]), human, exact]


def _render_macs(s: ModelSummary) -> str:
    fixed = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in s.fixed_shapes.items())
    title = f"## MACs ({s.macs_scope}" + (f", {fixed})" if fixed else ")")
    if not s.macs_by_op:
        text = f"{title}\n\nNo Conv, ConvTranspose, Gemm or MatMul in the main graph: 0 MACs."
        return text + _subgraph_note(s)
    show = s.macs_unknown_nodes > 0  # the "unknown" column only when it says something
    headers = ["op", "nodes", *(["unknown"] if show else []), "MACs", "exact"]
    rows = [
        _mac_row(m.op_type, m.nodes, m.unknown_nodes if show else None, m.macs)
        for m in s.macs_by_op
    ]
    nodes = sum(m.nodes for m in s.macs_by_op)
    rows.append(_mac_row("total", nodes, s.macs_unknown_nodes if show else None, s.total_macs))
    text = f"{title}\n\n" + markdown_table(headers, rows, right=set(range(1, len(headers))))
    if show:
        text += "\n\n" + _unknown_note(s)
    return text + _subgraph_note(s)


def _unknown_note(s: ModelSummary) -> str:
    """Why some MACs are unknown, and what the user can do about it (a ``--shape`` that can be
    pasted as printed, with the dynamic dims it sets named)."""
    known = f" Known part: {human_count(s.known_macs)} ({s.known_macs:,})." if s.known_macs else ""
    dynamic = [
        v for v in s.inputs
        if v.name not in s.fixed_shapes
        and (v.shape is None or not all(isinstance(d, int) for d in v.shape))
    ]  # fmt: skip
    if not dynamic:
        return (
            f"MACs are unknown for {s.macs_unknown_nodes} node(s): shape inference could not "
            f"determine their dims (e.g. shapes computed inside If/Loop or by custom ops).{known}"
        )
    named = "; ".join(
        f"input '{v.name}': " + ("rank unknown" if v.shape is None else ", ".join(dynamic_dim_labels(v.shape)))
        for v in dynamic[:3]
    )
    examples = " ".join(
        f"--shape {v.name}=" + ("D1xD2…" if v.shape is None else example_shape(v.shape)) for v in dynamic[:3]
    )
    return (
        f"MACs are unknown for {s.macs_unknown_nodes} node(s) with dynamic dims ({named}).{known} "
        f"Fix them with e.g.: {examples}"
    )


def _subgraph_note(s: ModelSummary) -> str:
    if not s.subgraph_nodes:
        return ""
    return f"\n\nThe {s.subgraph_nodes:,} nodes inside subgraphs are not included."


def render_summary(summary: ModelSummary) -> str:
    """Render ``summary`` as Markdown: model facts, inputs, outputs, ops, parameters, MACs."""
    sections = [
        _render_model(summary),
        _render_values("Inputs", summary.inputs),
        _render_values("Outputs", summary.outputs),
        _render_ops(summary),
        _render_params(summary),
        _render_macs(summary),
    ]
    return "\n\n".join(sections) + "\n"
