"""Simplify a model without changing what it computes: onnxsim first, then our own rewrites.

Rewrites (each is exact in real arithmetic; only float rounding differs):

1. **onnxsim** (constant folding, dead-code elimination, its own fusions) on a copy of the model,
   with its random-input check off (the pipeline verifies), subgraphs left alone, its console
   output captured and logged at DEBUG. Its result is kept only when the model's interface
   (input/output names and element types, opset, IR version) is unchanged, it has no more
   nodes than its input, and it differs from its input in more than node names or value_info.
   The original input/output declarations and ``metadata_props`` are restored on the result,
   so dynamic dims stay dynamic.
2. **BatchNormalization folding** into the producer of its input when that producer's output
   is read by the BN only, with ``f = γ / √(σ² + ε)`` per channel:

   - ``Conv`` (any ``group``; W is ``[C_out, C_in/group, k…]``):
     ``W'[c] = W[c]·f[c]``, ``B' = (B − μ)·f + β`` (``B = 0`` when absent).
   - ``ConvTranspose`` (W is ``[C_in, C_out/group, k…]``; output channel
     ``c = g·(C_out/group) + j`` comes from ``W[g·(C_in/group):(g+1)·(C_in/group), j]``):
     ``W'[i, j] = W[i, j]·f[g(i)·(C_out/group) + j]``, ``B'`` as for Conv.
   - ``Gemm`` (``Y = α·A'·B' + β_g·C``, ``B' = Bᵀ`` when ``transB``): scale column ``n`` of
     ``B'`` by ``f[n]`` and set ``C' = (β_g·C − μ)·f + β`` with ``beta = 1``; C of shape
     ``[N]``, ``[1, N]``, a scalar or absent.

   New weights are written as new initializers; shared ones are never mutated.
3. **Identity / inference Dropout removal**: readers of ``y = Identity(x)`` read ``x``. When
   ``y`` is a graph output, ``x``'s producer is renamed to output ``y`` instead, so output names
   are kept; from a graph input or initializer straight to a graph output, the node stays.
   Dropout is an identity when it cannot be in training mode (opset < 7: ``is_test=1``;
   opset ≥ 12: ``training_mode`` absent or a constant false) and its mask is unread.
4. **HardSwish recomposition**: ``x * clip(x + 3, 0, 6) / 6`` (paddle2onnx's HardSwish) becomes
   ``HardSwish(x)`` (opset >= 14) or ``x * HardSigmoid(x; 1/6, 1/2)``, which onnxruntime fuses
   into the preceding Conv (:mod:`passes.simplify._hardswish`; PicoDet-layout 0.63x latency).
5. **Initializer deduplication**: initializers of equal element type, shape and bytes (hashed,
   then compared in full) are merged into the first; those that are graph inputs (overridable)
   or graph outputs are left alone.
6. **Cleanup**: unread initializers and unread ``Constant`` nodes are removed, stale
   ``value_info`` entries dropped, and the nodes topologically sorted.

Only nodes of the default ONNX domain are rewritten; reads by subgraphs (If/Loop/Scan) count as
uses, and renames follow into subgraphs. Every skip is counted in ``stats`` as
``"skipped: <reason>"`` and logged at DEBUG.

Modules: ``_onnxsim`` (step 1), ``_batchnorm`` (step 2), ``_hardswish`` (step 4), ``_cleanup`` (steps 3, 5, 6),
``_common`` (helpers they share); the pass itself is here.
"""

from __future__ import annotations

import collections
from typing import Any, ClassVar

import onnx

from passes._base import EXACT, Pass, PassResult, RunContext
from passes._graph import opset_version
from passes.simplify._batchnorm import fold_batchnorms
from passes.simplify._cleanup import dedup_initializers, remove_dead, remove_passthroughs, sort_graph
from passes.simplify._common import SimplifyOptions, copy_model
from passes.simplify._hardswish import recompose_hardswish
from passes.simplify._onnxsim import run_onnxsim

__all__ = ["SimplifyOptions", "SimplifyPass"]


class SimplifyPass(Pass):
    """Exact simplification: onnxsim, BN folding, Identity/Dropout removal, HardSwish
    recomposition, initializer dedup."""

    name: ClassVar[str] = "simplify"
    tolerance = EXACT

    def __init__(self, options: SimplifyOptions | None = None) -> None:
        self.options = options or SimplifyOptions()

    def __repr__(self) -> str:
        return f"SimplifyPass({self.options})"

    def apply(self, model: onnx.ModelProto, ctx: RunContext) -> PassResult:
        """Simplify a copy of ``model``; ``model`` itself is never modified."""
        opts = self.options
        stats: dict[str, Any] = {"nodes_before": len(model.graph.node)}
        skips: collections.Counter[str] = collections.Counter()
        work: onnx.ModelProto | None = None
        if opts.use_onnxsim:
            work, stats["onnxsim"] = run_onnxsim(model, opts)
        else:
            stats["onnxsim"] = "disabled"
        changed = work is not None
        if work is None:
            work = copy_model(model)
        else:
            stats["nodes_after_onnxsim"] = len(work.graph.node)
        graph, opset = work.graph, opset_version(work) or 1
        identity = dropout = folded = deduped = hardswish = 0
        if opts.remove_identity:
            identity, dropout = remove_passthroughs(graph, opset, skips)
        if opts.fold_batchnorm:
            folded = fold_batchnorms(graph, opset, skips)
        if opts.recompose_hardswish:
            hardswish = recompose_hardswish(graph, opset, skips)
        if opts.dedup_initializers:
            deduped = dedup_initializers(graph, skips)
        cleanup = remove_dead(graph)
        reordered = sort_graph(graph)
        counts = (identity, dropout, folded, hardswish, deduped, *cleanup.values())
        changed = changed or reordered or any(counts)
        stats.update(
            bn_folded=folded,
            hardswish_recomposed=hardswish,
            identity_removed=identity,
            dropout_removed=dropout,
            initializers_deduplicated=deduped,
            **cleanup,
        )
        stats.update({f"skipped: {reason}": n for reason, n in sorted(skips.items())})
        if not changed:
            stats["nodes_after"] = stats["nodes_before"]
            return PassResult(model, False, stats)
        stats["nodes_after"] = len(graph.node)
        return PassResult(work, True, stats)
