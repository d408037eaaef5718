"""benchmarks.corrections: the table says which variant refused, which was not run, and bolds the
best only where the variants differ."""

from __future__ import annotations

from benchmarks.corrections import VARIANTS, Row, render


def test_render_marks_refused_not_run_and_the_best() -> None:
    rows = [Row("detect", "per-channel", "map50", 1.0, {"default": 0.93, "bias": 0.95, "auto": None}, 0),
            Row("digits", "per-tensor", "accuracy", 0.99, {"default": 0.99, "bias": 0.99}, 1)]
    lines = render(rows, ["default", "bias", "auto", "rounding"]).splitlines()
    assert lines[0].startswith("| task | weights | metric | fp32 | default | bias | auto | rounding |")
    assert "| **0.9500 (+0.0500)** | refused | not run |" in lines[2]
    assert "**" not in lines[3]  # all equal: nothing is best


def test_every_variant_maps_to_quantize_settings() -> None:
    from onnxslim.api import QuantizeSettings

    for name, kwargs in VARIANTS.items():
        settings = {k: v for k, v in kwargs.items() if k in QuantizeSettings.__dataclass_fields__}
        assert settings == kwargs, name
        QuantizeSettings(**settings)
