"""What onnxruntime actually runs in int8: count fused integer nodes in its optimized graph.

A quantized model is only faster when onnxruntime fuses its Q/DQ pairs or its dynamic-quantize
chains into integer kernels at session creation. Whether that happened cannot be seen in the
file we wrote; it can be seen in the graph ORT saves after optimization. :func:`fusion_report`
builds a CPU session with every graph optimization on (``ORT_ENABLE_ALL``) and
``optimized_model_filepath`` in a temporary folder, loads the saved graph and counts:

- **int8 nodes** (:data:`INT8_OPS`): QLinearConv, QLinearMatMul, QGemm, the com.microsoft
  QLinear* element-wise/pooling ops, MatMulInteger, ConvInteger, DynamicQuantizeMatMul,
  MatMulIntegerToFloat, …;
- **weight-only nodes** (:data:`WEIGHT_ONLY_OPS`): ``MatMulNBits`` and the like, compressed
  weights with float compute;
- **leftover Q/DQ** (:data:`QDQ_OPS`): QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear
  nodes that no fusion absorbed;
- **float compute nodes** (:data:`FLOAT_COMPUTE_OPS`): Conv, MatMul, Gemm, FusedConv,
  FusedMatMul, ConvTranspose, … that still run in float.

Quantizable compute nodes are the int8 *compute* kernels (:data:`INT8_COMPUTE_OPS`), the
weight-only nodes and the float compute nodes; the verdict reads "N of M quantizable compute nodes run in int8". Nodes of
subgraphs (If/Loop/Scan bodies) are counted too.

The optimized graph is written by onnxruntime for this machine's CPU; counts can differ on
another CPU or onnxruntime version (e.g. S8 activations are rewritten to U8 on x86).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from onnxslim.runtime import make_session

__all__ = [
    "INT8_COMPUTE_OPS",
    "INT8_OPS",
    "WEIGHT_ONLY_OPS",
    "QDQ_OPS",
    "FLOAT_COMPUTE_OPS",
    "FusionReport",
    "fusion_report",
    "count_ops",
]

#: Integer kernels doing a Conv / MatMul / Gemm (the nodes that carry the int8 speed-up).
INT8_COMPUTE_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeLSTM",
    "QLinearConvTranspose", "NhwcQLinearConv",
})
#: Compressed-weight kernels that still compute in float (onnxruntime fuses an 8-bit or 4-bit
#: ``DequantizeLinear`` + ``MatMul`` into ``MatMulNBits``; with its default accuracy level the
#: activations stay float): smaller, not int8 compute.
WEIGHT_ONLY_OPS = frozenset({"MatMulNBits", "MatMulBnb4", "GatherBlockQuantized"})
#: Every fused int8 node: the compute kernels plus int8 element-wise, pooling and data ops.
INT8_OPS = INT8_COMPUTE_OPS | frozenset({
    "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearSoftmax", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearReduceMean",
    "QLinearWhere", "QLinearGather", "QEmbedLayerNormalization", "QOrderedMatMul",
})
#: Quantize / dequantize nodes; left over after optimization they are pure overhead.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: Float compute nodes that an int8 pass could have turned into integer kernels.
FLOAT_COMPUTE_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm",
    "NhwcFusedConv", "Attention",
})


@dataclasses.dataclass(frozen=True)
class FusionReport:
    """Node counts of onnxruntime's optimized graph.

    Attributes:
        int8: fused int8 node count by op type.
        weight_only: compressed-weight float kernels (``MatMulNBits``) by op type.
        qdq: leftover QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear by op type.
        float_compute: float Conv / MatMul / Gemm / Fused* count by op type.
        total_nodes: all nodes of the optimized graph (subgraphs included).
        threads: intra-op threads of the session that optimized it.
    """

    int8: dict[str, int]
    weight_only: dict[str, int]
    qdq: dict[str, int]
    float_compute: dict[str, int]
    total_nodes: int
    threads: int = 1

    @property
    def int8_compute(self) -> int:
        """Integer Conv/MatMul/Gemm kernels."""
        return sum(n for op, n in self.int8.items() if op in INT8_COMPUTE_OPS)

    @property
    def int8_total(self) -> int:
        """All fused int8 nodes."""
        return sum(self.int8.values())

    @property
    def quantizable(self) -> int:
        """Compute nodes that are, or could be, int8: int8 compute, weight-only and float compute."""
        return self.int8_compute + sum(self.weight_only.values()) + sum(self.float_compute.values())

    def verdict(self) -> str:
        """``"N of M quantizable compute nodes run in int8"`` plus leftover Q/DQ, if any."""
        text = f"{self.int8_compute} of {self.quantizable} quantizable compute nodes run in int8"
        if self.weight_only:
            text += f", {sum(self.weight_only.values())} with compressed weights and float compute"
        leftover = sum(self.qdq.values())
        if leftover:
            text += f"; {leftover} Q/DQ nodes left unfused"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields, the totals and the verdict."""
        out = dataclasses.asdict(self)
        out.update(int8_compute=self.int8_compute, int8_total=self.int8_total,
                   quantizable=self.quantizable, verdict=self.verdict())
        return out

    def render(self) -> str:
        """A few Markdown lines: the verdict, then the three groups of counts."""
        def group(counts: dict[str, int]) -> str:
            return ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "none"

        return "\n".join([
            f"**{self.verdict()}** (onnxruntime optimized graph, {self.total_nodes} nodes)",
            f"- int8 nodes: {group(self.int8)}",
            f"- weight-only (float compute): {group(self.weight_only)}",
            f"- Q/DQ left: {group(self.qdq)}",
            f"- float compute: {group(self.float_compute)}",
        ])


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _iter_nodes(sub)


def count_ops(model: onnx.ModelProto) -> collections.Counter[str]:
    """Node count by op type over the main graph and every subgraph."""
    return collections.Counter(node.op_type for node in _iter_nodes(model.graph))


def _optimized_graph(model: onnx.ModelProto | str | os.PathLike[str], threads: int) -> onnx.ModelProto:
    source = model if isinstance(model, onnx.ModelProto) else str(model)
    with tempfile.TemporaryDirectory(prefix="onnxslim-fusion-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        make_session(source, threads=threads, graph_opt="all", optimized_model_path=str(target))
        return onnx.load(str(target), load_external_data=False)


def fusion_report(model: onnx.ModelProto | str | os.PathLike[str], *, threads: int = 1) -> FusionReport:
    """Let onnxruntime optimize ``model`` (``ORT_ENABLE_ALL``, CPU) and count what it fused.

    Args:
        model: the model, or the path of its file.
        threads: intra-op threads of the session (fusions do not depend on it; kept for parity
            with how the model is benchmarked).

    Raises:
        OnnxSlimError: onnxruntime cannot load the model.
    """
    counts = count_ops(_optimized_graph(model, threads))
    return FusionReport(
        int8={op: n for op, n in sorted(counts.items()) if op in INT8_OPS},
        weight_only={op: n for op, n in sorted(counts.items()) if op in WEIGHT_ONLY_OPS},
        qdq={op: n for op, n in sorted(counts.items()) if op in QDQ_OPS},
        float_compute={op: n for op, n in sorted(counts.items()) if op in FLOAT_COMPUTE_OPS},
        total_nodes=sum(counts.values()),
        threads=threads,
    )
