"""Pruning the real zoo models (depthwise convs, SE blocks, C2f Split/Concat, FPN Resize/Add).

Simplify first (as the command line does), prune 30% per layer without data, and check: the
result passes the full checker, keeps its interface, runs in onnxruntime with finite outputs of
the same shapes, and has at least 20% fewer MACs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from _helpers import run_ort
from passes._base import RunContext
from passes.prune import PruneChannelsPass, PruneOptions
from passes.simplify import SimplifyPass

SHAPES = {
    "ppocr-det": {"x": (1, 3, 320, 320)},
    "ppocr-rec": {"x": (1, 3, 48, 320)},
    "ppocr-cls": {"x": (1, 3, 48, 192)},
    "yolov8n-nudenet": {"images": (1, 3, 320, 320)},
}


def _interface(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(v.name, str(v.type)) for v in [*model.graph.input, *model.graph.output]]


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_zoo_model_pruned_by_30_percent(name: str, zoo_model) -> None:
    model = onnx.load(str(zoo_model(name)))
    simplified = SimplifyPass().apply(model, RunContext()).model
    options = PruneOptions(ratio=0.3, per_layer=True, input_shapes=SHAPES[name])
    result = PruneChannelsPass(options).apply(simplified, RunContext())
    assert result.changed
    onnx.checker.check_model(result.model, full_check=True)
    assert _interface(result.model) == _interface(model)
    stats = result.stats
    assert stats["macs_after"] <= 0.8 * stats["macs_before"], stats
    feeds = {k: np.random.default_rng(0).uniform(0, 1, v).astype(np.float32) for k, v in SHAPES[name].items()}
    before, after = run_ort(simplified, feeds), run_ort(result.model, feeds)
    for key, value in before.items():
        assert after[key].shape == value.shape and np.isfinite(after[key]).all()


@pytest.mark.zoo
def test_zoo_sensitivity_allocation_meets_the_mac_budget(zoo_model) -> None:
    """ppocr-cls (SE blocks, depthwise convs): 30 % of the MACs, chosen by probing 4 random samples."""
    name = "ppocr-cls"
    model = onnx.load(str(zoo_model(name)))
    simplified = SimplifyPass().apply(model, RunContext()).model
    rng = np.random.default_rng(0)
    samples = [{k: rng.uniform(0, 1, v).astype(np.float32) for k, v in SHAPES[name].items()} for _ in range(4)]
    options = PruneOptions(ratio=0.3, allocation="sensitivity", reconstruct=False, input_shapes=SHAPES[name])
    result = PruneChannelsPass(options).apply(simplified, RunContext(dataset=samples))
    stats = result.stats
    onnx.checker.check_model(result.model, full_check=True)
    assert _interface(result.model) == _interface(model)
    assert stats["sensitivity_budget_met"] and stats["macs_after"] <= 0.7 * stats["macs_before"], stats
    assert all(r["channels_after"] % 8 == 0 or r["channels_after"] == r["channels_before"] for r in stats["groups"])


@pytest.mark.zoo
def test_zoo_search_finds_a_ratio_within_the_drop(zoo_model, tmp_path) -> None:
    """``onnxslim prune --search`` on ppocr-cls with its task metric: the ratio written holds the gate."""
    import json

    from click.testing import CliRunner

    for module in ("PIL", "scipy", "skimage", "sklearn"):
        pytest.importorskip(module)
    from benchmarks.tasks import load_task, metric_spec
    from onnxslim.cli import main

    data = load_task("ocr-cls").generate(tmp_path / "data", seed=0, n_eval=40, n_calib=32)
    out = tmp_path / "cls.pruned.onnx"
    result = CliRunner().invoke(main, [
        "prune", str(zoo_model("ppocr-cls")), "-o", str(out), "--calib", str(data.calib_path), "--eval",
        str(data.eval_path), "--metric", metric_spec("ocr-cls"), "--ratio", "0.6", "--max-drop", "0.05", "--search",
        "--search-steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    chosen = [t for t in doc["search"] if t["passed"]]
    assert chosen and all(t["drop"] <= 0.05 for t in chosen)
    assert doc["validation"]["metric"]["drop"] == max(chosen, key=lambda t: t["ratio"])["drop"]
    prune = doc["steps"][1]["stats"]
    assert prune["macs_after"] < prune["macs_before"]
    onnx.checker.check_model(onnx.load(out), full_check=True)
