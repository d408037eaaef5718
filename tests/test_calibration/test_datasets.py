"""Dataset readers and their checks against the model's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from calibration.datasets import (
    FolderDataset,
    IterableDataset,
    NpzDataset,
    SyntheticDataset,
    check_dataset,
    input_specs,
    open_dataset,
    select_samples,
)
from passes._errors import DataError

MODEL = onnx.parser.parse_model(
    """
    <ir_version: 8, opset_import: ["" : 13]>
    two_inputs (float[N, 3] a, int64[2] b) => (float[N, 3] y)
    {
        y = Identity(a)
    }
    """
)
SPECS = input_specs(MODEL)


def test_input_specs() -> None:
    assert [(s.name, str(s.dtype), s.dims) for s in SPECS] == [("a", "float32", ("N", 3)), ("b", "int64", (2,))]
    assert SPECS[0].shape_text() == "Nx3"


def test_npz_rows_keep_or_add_the_batch_axis(tmp_path: Path) -> None:
    a = np.arange(15, dtype=np.float32).reshape(5, 3)  # same rank as input a: batch kept
    b = np.arange(10, dtype=np.int64).reshape(5, 2)  # one more axis than input b: rows
    np.savez(tmp_path / "d.npz", a=a, b=b, labels=np.arange(5))
    data = open_dataset(tmp_path / "d.npz", SPECS)
    assert isinstance(data, NpzDataset) and len(data) == 5
    samples = list(data)
    assert samples[2]["a"].shape == (1, 3) and samples[2]["b"].shape == (2,)
    np.testing.assert_array_equal(samples[4]["a"], a[4:5])
    np.testing.assert_array_equal(samples[4]["b"], b[4])
    assert set(samples[0]) == {"a", "b"}  # labels are never fed
    np.testing.assert_array_equal(data.labels, np.arange(5))
    check_dataset(data, SPECS)
    assert [s["a"][0, 0] for s in data] == [0, 3, 6, 9, 12]  # re-iterable, same order


def test_npz_count_mismatch_and_labels_count(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", a=np.zeros((5, 3), np.float32), b=np.zeros((4, 2), np.int64))
    with pytest.raises(DataError, match="same number"):
        NpzDataset(tmp_path / "d.npz", SPECS)
    np.savez(tmp_path / "l.npz", a=np.zeros((5, 3), np.float32), b=np.zeros((5, 2), np.int64), labels=np.arange(3))
    with pytest.raises(DataError, match="3 labels for 5 samples"):
        NpzDataset(tmp_path / "l.npz", SPECS)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a": np.zeros((2, 3), np.float32)}, "no data for input 'b'"),
        ({"a": np.zeros((2, 3), np.float32), "b": np.zeros((2, 2), np.int64), "c": np.zeros(2)}, "'c' is not an input"),
        ({"a": np.zeros((2, 3), np.float64), "b": np.zeros((2, 2), np.int64)}, "input 'a' is float64, the model expects float32"),
        ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 2), np.int64)}, "input 'a' has shape 1x4, the model expects Nx3"),
        ({"a": np.zeros((2, 3, 1), np.float32), "b": np.zeros((2, 2), np.int64)}, "input 'a' has shape 3x1, the model expects Nx3"),
    ],
)
def test_check_names_dtype_shape(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        check_dataset(open_dataset(tmp_path / "d.npz", SPECS), SPECS)
    assert "\n" not in str(info.value) and "d.npz" in str(info.value)


def test_folder_of_npz_and_npy(tmp_path: Path) -> None:
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", a=np.full((1, 3), i, np.float32), b=np.array([i, i], np.int64))
    np.save(tmp_path / "labels.npy", np.array([7, 8, 9]))
    data = open_dataset(tmp_path, SPECS)
    assert isinstance(data, FolderDataset) and len(data) == 3
    assert [int(s["b"][0]) for s in data] == [0, 1, 2]
    np.testing.assert_array_equal(data.labels, [7, 8, 9])
    check_dataset(data, SPECS)

    one_input = [s for s in SPECS if s.name == "a"]
    npy = tmp_path / "npy"
    npy.mkdir()
    for i in range(2):
        np.save(npy / f"{i}.npy", np.full((1, 3), i, np.float32))
    assert [float(s["a"][0, 0]) for s in open_dataset(npy, one_input)] == [0.0, 1.0]
    with pytest.raises(DataError, match="exactly one input"):
        list(open_dataset(npy, SPECS))


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "missing.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match=".npz file or a folder"):
        open_dataset(tmp_path / "x.csv")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read"):
        open_dataset(tmp_path / "bad.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npz or .npy"):
        open_dataset(tmp_path / "empty")


def test_iterable_dataset() -> None:
    data = IterableDataset(({"a": np.ones((1, 3), np.float32), "b": np.ones(2, np.int64)} for _ in range(4)), labels=[1, 2, 3, 4])
    assert len(data) == 4 and len(list(data)) == 4 and len(list(data)) == 4
    check_dataset(data, SPECS)
    with pytest.raises(DataError, match="2 labels for 1 samples"):
        IterableDataset([{"a": np.ones((1, 3), np.float32)}], labels=[1, 2])


def test_npz_rows_are_read_from_the_file(tmp_path: Path) -> None:
    from calibration._npz import StoredArray

    a = np.arange(15, dtype=np.float32).reshape(5, 3)
    b = np.arange(10, dtype=np.int64).reshape(5, 2)
    np.savez(tmp_path / "d.npz", a=a, b=b, labels=np.arange(5))
    np.savez_compressed(tmp_path / "c.npz", a=a, b=b)
    lazy, loaded = NpzDataset(tmp_path / "d.npz", SPECS), NpzDataset(tmp_path / "c.npz", SPECS)
    assert isinstance(lazy._arrays["a"], StoredArray)  # uncompressed: nothing held
    assert isinstance(loaded._arrays["a"], np.ndarray)  # compressed: loaded whole
    for x, y in zip(lazy, loaded):
        np.testing.assert_array_equal(x["a"], y["a"])
        np.testing.assert_array_equal(x["b"], y["b"])
        assert x["a"].shape == (1, 3) and x["b"].shape == (2,)
    np.testing.assert_array_equal(lazy.sample(3)["a"], a[3:4])
    np.testing.assert_array_equal(lazy.labels, np.arange(5))
    with pytest.raises(IndexError):
        lazy.sample(5)


def test_select_samples_first_n_or_seeded_shuffle() -> None:
    data = IterableDataset([{"a": np.full((1, 3), i, np.float32), "b": np.zeros(2, np.int64)} for i in range(10)],
                           labels=list(range(10)))
    first = select_samples(data, limit=4)
    assert len(first) == 4 and [int(s["a"][0, 0]) for s in first] == [0, 1, 2, 3]
    np.testing.assert_array_equal(first.labels, [0, 1, 2, 3])
    assert select_samples(data) is data and len(select_samples(data, limit=50)) == 10
    shuffled = select_samples(data, limit=5, shuffle=True, seed=3)
    order = [int(s["a"][0, 0]) for s in shuffled]
    assert order == list(np.random.default_rng(3).permutation(10)[:5])
    assert order == [int(s["a"][0, 0]) for s in select_samples(data, limit=5, shuffle=True, seed=3)]
    assert order != [int(s["a"][0, 0]) for s in select_samples(data, limit=5, shuffle=True, seed=4)]
    np.testing.assert_array_equal(shuffled.labels, order)
    assert "shuffled with seed 3" in shuffled.source
    with pytest.raises(DataError, match="at least 1"):
        select_samples(data, limit=0)


def test_synthetic_dataset_is_deterministic_and_fits_the_model() -> None:
    data = SyntheticDataset(SPECS, 3, seed=5, shapes={"a": (2, 3)})
    assert data.synthetic and len(data) == 3
    first, again = list(data), list(SyntheticDataset(SPECS, 3, seed=5, shapes={"a": (2, 3)}))
    np.testing.assert_array_equal(first[2]["a"], again[2]["a"])
    assert first[0]["a"].shape == (2, 3) and first[0]["b"].dtype == np.int64
    check_dataset(data, SPECS)
    assert SyntheticDataset(SPECS, 1).sample(0)["a"].shape == (1, 3)  # dynamic dims default to 1
    assert select_samples(data, limit=2).synthetic


def test_npz_scalar_inputs_are_arrays(tmp_path: Path) -> None:
    scalar_model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        s (float[N, 2] x, int64 sr) => (float[N, 2] y)
        {
            y = Identity(x)
        }
        """
    )
    specs = input_specs(scalar_model)
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), sr=np.full(3, 16000, np.int64))
    sample = next(iter(open_dataset(tmp_path / "d.npz", specs)))
    assert isinstance(sample["sr"], np.ndarray) and sample["sr"].shape == () and sample["sr"] == 16000
