"""Reading ``.npz`` files without holding them: uncompressed members are read row by row.

``np.savez`` stores each array as an uncompressed ``.npy`` member; its data sits at a fixed
offset in the file, so row ``i`` is one seek and one read. Compressed members (``savez_compressed``),
Fortran-order and object arrays are loaded whole.
"""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from passes._errors import DataError

__all__ = ["StoredArray", "open_npz"]


class StoredArray:
    """A C-order array stored uncompressed in a ``.npz``, read from the file a few rows at a time."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.ndim = len(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice) -> np.ndarray:
        start, stop, step = key.indices(len(self)) if isinstance(key, slice) else (key, key + 1, 1)
        if step != 1 or not 0 <= start <= stop <= len(self):
            raise IndexError(f"unsupported row selection {key!r}")
        row = math.prod(self.shape[1:]) * self.dtype.itemsize
        buffer = bytearray((stop - start) * row)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * row)
            if f.readinto(buffer) != len(buffer):
                raise DataError(f"{self.path}: truncated array data")
        rows = np.frombuffer(buffer, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))
        return rows if isinstance(key, slice) else rows[0]


def _stored_member(path: Path, f: BinaryIO, info: zipfile.ZipInfo) -> StoredArray | None:
    """The lazily read array of an uncompressed member, or ``None`` when it must be loaded whole."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    f.seek(info.header_offset)
    local = f.read(30)  # zip local file header; name and extra-field lengths at bytes 26..29
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    f.seek(info.header_offset + 30 + name_len + extra_len)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        return None
    if fortran or dtype.hasobject or not shape:
        return None
    return StoredArray(path, f.tell(), tuple(shape), np.dtype(dtype))


def open_npz(path: Path) -> dict[str, np.ndarray | StoredArray]:
    arrays: dict[str, np.ndarray | StoredArray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            stored = _stored_member(path, f, info)
            if stored is None:
                with archive.open(info) as member:
                    stored = np.lib.format.read_array(member, allow_pickle=False)
            arrays[key] = stored
    return arrays

