"""Calibration datasets and observers (filled in by the calibration issue)."""

__all__: list[str] = []
