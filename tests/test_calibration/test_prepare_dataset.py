"""``prepare_dataset``: open, limit and check calibration data in one call (quantize, prune, calibrate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.datasets import InputSpec, NpzDataset, prepare_dataset
from passes._errors import DataError

SPECS = [InputSpec("x", np.dtype(np.float32), (1, 3))]


def test_opens_limits_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.arange(30, dtype=np.float32).reshape(10, 1, 3))
    dataset = prepare_dataset(path, SPECS, limit=4)
    assert len(dataset) == 4 and [float(s["x"][0, 0]) for s in dataset] == [0.0, 3.0, 6.0, 9.0]
    opened = NpzDataset(path, SPECS)
    assert len(prepare_dataset(opened, SPECS)) == 10  # a dataset is used as it is
    shuffled = prepare_dataset(path, SPECS, limit=4, shuffle=True, seed=1)
    assert sorted(float(s["x"][0, 0]) for s in shuffled) != [0.0, 3.0, 6.0, 9.0]


def test_wrong_data_is_refused_before_any_run(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((2, 1, 5), np.float32))  # 5 features where the model takes 3
    with pytest.raises(DataError, match="c.npz"):
        prepare_dataset(path, SPECS)
    with pytest.raises(DataError):
        prepare_dataset(tmp_path / "missing.npz", SPECS)
