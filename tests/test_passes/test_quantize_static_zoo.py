"""Zoo models quantize (default static options, a few synthesized calibration samples) to models
that pass ``onnx.checker`` and run in onnxruntime with the fused graph. Accuracy on real data is
measured by ``benchmarks/quantize_static.py``, not here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from calibration.collect import collect
from onnxslim.runtime import make_session, run_model, synthesize_feeds
from passes._base import RunContext
from passes.quantize import PrepareForQuantizationPass, QuantizeStaticPass, StaticQuantOptions

SHAPES = {
    "ppocr-det": {"x": (1, 3, 96, 96)},
    "ppocr-rec": {"x": (1, 3, 48, 160)},
    "ppocr-cls": {"x": (1, 3, 48, 192)},
    "yolov8n-nudenet": {"images": (1, 3, 320, 320)},
    "silero-vad": {"input": (1, 576), "state": (2, 1, 128)},
}


@pytest.mark.zoo
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_zoo_model_quantizes_and_runs(zoo_model, name):
    model = PrepareForQuantizationPass().apply(onnx.load(zoo_model(name)), RunContext()).model
    rng = np.random.default_rng(0)
    feeds = [synthesize_feeds(model, rng=rng, shapes=SHAPES[name]) for _ in range(4)]
    if name == "silero-vad":
        for f in feeds:
            f["sr"] = np.array(16000, np.int64)
    table = collect(model, feeds)
    result = QuantizeStaticPass(StaticQuantOptions(fallback_min_sqnr=None)).apply(model, RunContext(calibration=table))
    assert result.changed and result.stats["nodes_quantized"] > 0
    onnx.checker.check_model(result.model)
    out = run_model(make_session(result.model, graph_opt="all"), feeds[0])
    assert all(np.all(np.isfinite(v)) for v in out.values())
