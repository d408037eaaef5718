"""``prepare_dataset``: open, limit and check calibration data in one call (quantize, prune, calibrate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.datasets import InputSpec, IterableDataset, NpzDataset, prepare_dataset
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


# -- NaN/Inf checked as samples are read ------------------------------------------------------


def _poisoned(path: Path, count: int = 8, bad: dict[int, float] | None = None) -> Path:
    """``count`` samples of x (``[1, 3]`` each, value = sample index) with ``bad[i]`` put in sample i."""
    x = np.repeat(np.arange(count, dtype=np.float32), 3).reshape(count, 1, 3)
    for index, value in (bad or {}).items():
        x[index, 0, :2] = value
    np.savez(path, x=x, labels=np.arange(count) % 2)
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_sample_names_source_sample_and_input(tmp_path: Path, value: float) -> None:
    dataset = prepare_dataset(_poisoned(tmp_path / "calib.npz", bad={3: value}), SPECS)
    seen = []
    with pytest.raises(DataError, match=r"calib\.npz: sample 3: input 'x' has 2 NaN/Inf values"):
        for sample in dataset:  # checked as read: samples before the bad one come through
            seen.append(float(sample["x"][0, 2]))
    assert seen == [0.0, 1.0, 2.0]
    with pytest.raises(DataError, match="sample 3"):
        dataset.sample(3)
    assert float(dataset.sample(4)["x"][0, 0]) == 4.0


def test_nonfinite_error_names_the_index_in_the_file_after_shuffling(tmp_path: Path) -> None:
    path = _poisoned(tmp_path / "calib.npz", count=20, bad={13: np.nan})
    dataset = prepare_dataset(path, SPECS, shuffle=True, seed=0)
    position = [int(s["x"][0, 2]) for s in prepare_dataset(_poisoned(tmp_path / "ok.npz", count=20), SPECS,
                                                           shuffle=True, seed=0)].index(13)
    assert position != 13  # the shuffled order puts it elsewhere
    with pytest.raises(DataError, match=r"calib\.npz: sample 13: input 'x' has 2 NaN"):
        list(dataset)


def test_nonfinite_checks_only_float_inputs(tmp_path: Path) -> None:
    path = tmp_path / "ints.npz"
    np.savez(path, x=np.zeros((2, 1, 3), np.float32), ids=np.full((2, 1, 4), -1, np.int64))
    specs = [*SPECS, InputSpec("ids", np.dtype(np.int64), (1, 4))]
    assert len(list(prepare_dataset(path, specs))) == 2


def test_skip_nonfinite_drops_and_counts(tmp_path: Path) -> None:
    path = _poisoned(tmp_path / "calib.npz", count=10, bad={1: np.nan, 6: np.inf})
    dataset = prepare_dataset(path, SPECS, skip_nonfinite=True)
    assert dataset.skipped_nonfinite == 2 and len(dataset) == 8
    assert [int(s["x"][0, 2]) for s in dataset] == [0, 2, 3, 4, 5, 7, 8, 9]
    assert list(dataset.labels) == [0, 0, 1, 0, 1, 1, 0, 1]  # labels follow the kept samples
    assert "2 of 10 samples skipped for NaN/Inf" in dataset.source
    limited = prepare_dataset(path, SPECS, limit=4, skip_nonfinite=True)  # the limit comes first
    assert limited.skipped_nonfinite == 1 and len(limited) == 3
    clean = prepare_dataset(_poisoned(tmp_path / "ok.npz"), SPECS, skip_nonfinite=True)
    assert clean.skipped_nonfinite == 0 and len(clean) == 8
    assert prepare_dataset(_poisoned(tmp_path / "ok.npz"), SPECS).skipped_nonfinite == 0


def test_no_sample_left_is_an_error(tmp_path: Path) -> None:
    path = _poisoned(tmp_path / "calib.npz", count=3, bad={0: np.nan, 1: np.nan, 2: np.inf})
    with pytest.raises(DataError, match=r"all 3 samples hold NaN/Inf.*sample 0: input 'x'"):
        prepare_dataset(path, SPECS, skip_nonfinite=True)
    with pytest.raises(DataError, match="sample 0: input 'x' has 2 NaN/Inf"):
        prepare_dataset(path, SPECS)  # the first sample is read by the shape check


def test_zero_samples_is_an_error() -> None:
    for skip in (False, True):
        with pytest.raises(DataError, match="holds no samples"):
            prepare_dataset(IterableDataset([]), SPECS, skip_nonfinite=skip)


def test_preparing_twice_checks_once_and_still_names_the_file_index(tmp_path: Path) -> None:
    path = _poisoned(tmp_path / "calib.npz", count=10, bad={6: np.nan})
    once = prepare_dataset(path, SPECS)
    assert prepare_dataset(once, SPECS) is once
    for seed in range(4):  # whichever position the shuffles give it
        with pytest.raises(DataError, match=r"calib\.npz: sample 6: input 'x'"):
            list(prepare_dataset(prepare_dataset(path, SPECS, shuffle=True, seed=seed), SPECS, shuffle=True, seed=9))
