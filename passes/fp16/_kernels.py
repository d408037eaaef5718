"""What onnxruntime can load in float16, and per-op typing rules that the schemas do not say.

How :data:`ORT_UNSUPPORTED` was derived (``tests/test_passes/test_fp16.py`` re-derives it from the
installed onnxruntime, checks that nothing it refuses is missing here, and prints it when run as a
script: ``PYTHONPATH=tests:. python tests/test_passes/test_fp16.py``): for every default-domain
schema of ``onnx.defs`` usable at opset 7 or later (a schema older than 7 is probed at opset 7
when it is still the active version there) with a type variable
that allows both ``tensor(float)`` and ``tensor(float16)``, a one-node model is built with every
type variable bound to float (other variables to an integer/bool type they allow) and loaded in
onnxruntime's CPU provider; when that loads, every non-empty subset of those variables is bound to
float16 in turn and loaded again. Listed here are the subsets that failed to load although the
float32 model loaded.

What the probe showed (onnxruntime 1.32.0, onnx 1.23.2): onnxruntime's CPU provider has native
float16 kernels mostly for data movement (Reshape, Transpose, Concat, Gather, Slice, Resize, …),
plus Clip, Min/Max and LayerNormalization; for every other op it inserts Casts to float32 around
the node at load time and runs the float32 kernel. So on CPU an fp16 model is a smaller file
whose nodes compute in float32 between fp16 tensors, and "no fp16 kernel" is not a reason to keep
a node fp32 (it loads and runs); what does fail to load is listed below.
"""

from __future__ import annotations

__all__ = [
    "PROBED_WITH",
    "ORT_MIN_OPSET",
    "ORT_UNSUPPORTED",
    "EXTRA_CONVERTED",
    "DEFAULT_BLOCK_OPS",
]

#: The versions the table below was measured with.
PROBED_WITH = "onnxruntime 1.32.0 (CPUExecutionProvider), onnx 1.23.2"

#: onnxruntime only guarantees models of default-domain opset 7 and later; older ones were not probed.
ORT_MIN_OPSET = 7

#: (op type, schema since_version) -> the sets of type variables that onnxruntime's CPU provider
#: cannot load when exactly those (among the float-capable ones) are float16.
ORT_UNSUPPORTED: dict[tuple[str, int], tuple[frozenset[str], ...]] = {
    ("Attention", 23): (frozenset({"T1"}), frozenset({"T2"}), frozenset({"T1", "U"}), frozenset({"T2", "U"})),
    ("Attention", 24): (frozenset({"T1"}), frozenset({"T2"}), frozenset({"T1", "U"}), frozenset({"T2", "U"})),
    ("Attention", 25): (frozenset({"T1"}), frozenset({"T2"}), frozenset({"T1", "U"}), frozenset({"T2", "U"})),
    ("DequantizeLinear", 23): (frozenset({"T2"}), frozenset({"T3"})),
    ("DequantizeLinear", 24): (frozenset({"T2"}), frozenset({"T3"})),
    ("DequantizeLinear", 25): (frozenset({"T2"}), frozenset({"T3"})),
    ("EyeLike", 9): (frozenset({"T2"}),),
    ("EyeLike", 22): (frozenset({"T2"}),),
    ("MeanVarianceNormalization", 9): (frozenset({"T"}),),
    ("MeanVarianceNormalization", 13): (frozenset({"T"}),),
    ("MelWeightMatrix", 17): (frozenset({"T3"}), frozenset({"T2", "T3"})),
    ("OptionalGetElement", 18): (frozenset({"O"}), frozenset({"V"})),
    ("RMSNormalization", 23): (frozenset({"T"}), frozenset({"V"})),
    ("RandomNormal", 1): (frozenset({"T"}),),
    ("RandomNormalLike", 1): (frozenset({"T2"}),),
    ("RandomUniform", 1): (frozenset({"T"}),),
    ("RandomUniformLike", 1): (frozenset({"T2"}),),
}

#: Input-only type variables converted with the op's output type: BatchNormalization-15 types its
#: scale/bias (T1) and mean/var (T2) apart from X/Y (T); they are weights, stored in fp16 like a
#: Conv's W (onnxruntime loads every combination, see the table above).
EXTRA_CONVERTED: dict[str, frozenset[str]] = {
    "BatchNormalization": frozenset({"T1", "T2"}),
}

#: Ops kept fp32 by default although onnxruntime loads them in fp16, with the reason.
DEFAULT_BLOCK_OPS: dict[str, str] = {
    # rois share X's type variable T1: box corners in pixels lose up to 0.5 px at 1024 and 2 px
    # at 4096 in fp16 (10-bit mantissa), which moves every sampled bin.
    "RoiAlign": "box coordinates would be rounded (fp16 spacing is 0.5 at 1024)",
}
