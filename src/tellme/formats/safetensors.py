"""Safetensors: zero-copy reading (tensors are numpy views of one memory map of each file), reads
of parts into fresh memory, and a streaming writer.

For reading we need views into a shared mmap (so weights are paged in on use, not copied) and
bf16, which numpy does not have. For writing, the `safetensors` package's numpy `save_file`
first copies every tensor into one bytes object (twice a model's size at the peak); `write`
streams each array from where it lies, memory-mapped weights included.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import FormatError
from .fileio import read_bytes

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16, "BOOL": np.bool_,
}


FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_NAMES = {np.dtype(v): k for k, v in DTYPES.items() if k != "BF16"}


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str],
          bf16: frozenset[str] = frozenset()) -> None:
    """A safetensors file of `tensors` (C-contiguous numpy arrays; those named in `bf16` are
    bfloat16 bits as uint16) as the format specifies: header JSON padded with spaces to 8 bytes,
    then the data, widest dtypes first so that every tensor starts aligned to its own size."""
    order = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header, at = {"__metadata__": metadata}, 0
    for name in order:
        a = tensors[name]
        dtype = "BF16" if name in bf16 else _NAMES[a.dtype]
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        at += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name in order:
            f.write(memoryview(np.ascontiguousarray(tensors[name])).cast("B"))


class SafetensorsFile:
    """One .safetensors file: `names`, `metadata`, `dtype(name)`, `shape(name)`, `raw(name)`, `float32(name)`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise FormatError(f"{self.path}: too short to be a safetensors file ({size} bytes)")
                (n,) = struct.unpack("<Q", head)
                if n > min(size - 8, 100 << 20):
                    raise FormatError(f"{self.path}: header length {n} exceeds the file ({size} bytes)")
                header = json.loads(f.read(n))
        except OSError as e:
            raise FormatError(f"{self.path}: cannot read ({e.strerror})") from e
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise FormatError(f"{self.path}: corrupt safetensors header ({type(e).__name__})") from None
        if not isinstance(header, dict):
            raise FormatError(f"{self.path}: corrupt safetensors header")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise FormatError(f"{self.path}: __metadata__ must map strings to strings")
        self._entries = header
        self._data_start = 8 + n
        self._check_entries(size - self._data_start)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > 0 else None

    def _check_entries(self, data_len: int) -> None:
        """As the safetensors library checks: known dtypes, shapes of non-negative integers, byte
        counts that match, and offsets that tile the data exactly (no gap, no overlap)."""
        spans = []
        for name, e in self._entries.items():
            try:
                dtype = np.dtype(DTYPES[e["dtype"]])
                shape, offsets = e["shape"], e["data_offsets"]
                if not (isinstance(shape, list) and all(type(d) is int and 0 <= d < 1 << 48 for d in shape)
                        and isinstance(offsets, list) and len(offsets) == 2 and all(type(v) is int for v in offsets)):
                    raise ValueError("shape or data_offsets")
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(f"{self.path}: tensor {name!r} has a corrupt header entry ({exc!r})") from None
            begin, end = offsets
            count = 1
            for d in shape:
                count *= d
            if not 0 <= begin <= end <= data_len:
                raise FormatError(f"{self.path}: tensor {name!r} lies outside the file (truncated?)")
            if end - begin != count * dtype.itemsize:
                raise FormatError(f"{self.path}: tensor {name!r} holds {end - begin} bytes, its shape "
                                  f"{tuple(shape)} of {e['dtype']} needs {count * dtype.itemsize}")
            spans.append((begin, end, name))
        at = 0
        for begin, end, name in sorted(spans):
            if begin != at:
                raise FormatError(f"{self.path}: tensor {name!r} starts at byte {begin} of the data, expected {at} "
                                  "(invalid offset: tensors must follow each other without gaps or overlap)")
            at = end
        if at != data_len:
            raise FormatError(f"{self.path}: {data_len - at} bytes after the last tensor (invalid offset)")

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def dtype(self, name: str) -> str:
        return self._entry(name)["dtype"]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)["shape"])

    def raw(self, name: str) -> np.ndarray:
        """The stored values as a read-only view (bf16 as uint16 bits)."""
        e = self._entry(name)
        begin, end = e["data_offsets"]
        dtype = np.dtype(DTYPES[e["dtype"]])
        buf = self._map[self._data_start + begin:self._data_start + end]
        if (self._data_start + begin) % dtype.itemsize:  # numpy allows it, native code must not see it
            buf = buf.copy()
        return buf.view(dtype).reshape(e["shape"])

    def read(self, name: str, first_row: int = 0, rows: int | None = None) -> np.ndarray:
        """A copy of rows [first_row, first_row + rows) (all by default), read without mapping the
        file (formats/fileio.py): packing a checkpoint keeps none of it resident."""
        e = self._entry(name)
        shape, dtype = list(e["shape"]) or [1], np.dtype(DTYPES[e["dtype"]])
        rows = shape[0] - first_row if rows is None else rows
        row_bytes = (e["data_offsets"][1] - e["data_offsets"][0]) // max(shape[0], 1)
        raw = read_bytes(self.path, self._data_start + e["data_offsets"][0] + first_row * row_bytes, rows * row_bytes)
        return raw.view(dtype).reshape([rows, *shape[1:]] if e["shape"] else [])

    def float32(self, name: str, first_row: int = 0, rows: int | None = None) -> np.ndarray:
        """A floating-point tensor (F32, F16, BF16, F64) as float32, or rows of it, read as `read`
        does; any other dtype is refused."""
        dtype = self.dtype(name)
        if dtype not in FLOAT_DTYPES:
            raise FormatError(f"{self.path}: tensor {name!r} is {dtype}, expected a floating-point type "
                              f"({', '.join(FLOAT_DTYPES)})")
        a = self.read(name, first_row, rows)
        if dtype == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        return a.astype(np.float32)

    def _entry(self, name: str) -> dict:
        try:
            return self._entries[name]
        except KeyError:
            raise FormatError(f"{self.path}: tensor {name!r} not found") from None


class TensorStore:
    """All tensors of a checkpoint directory (model.safetensors, or shards listed in the index)."""

    def __init__(self, directory: Path):
        index = directory / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                files = sorted(set(weight_map.values()))
                if not all(isinstance(f, str) and f and Path(f).name == f for f in files):
                    raise ValueError("weight_map must name files in this directory")
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError, ValueError,
                    AttributeError) as e:
                raise FormatError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        else:
            files = sorted(p.name for p in directory.glob("*.safetensors"))
        if not files:
            raise FormatError(f"{directory}: no *.safetensors weights found")
        self.files = [SafetensorsFile(directory / f) for f in files]
        self._where = {}
        for f in self.files:
            for n in f.names:
                if n in self._where:
                    raise FormatError(f"tensor {n!r} is in both {self._where[n].path} and {f.path}")
                self._where[n] = f

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def file(self, name: str) -> SafetensorsFile:
        try:
            return self._where[name]
        except KeyError:
            raise FormatError(f"tensor {name!r} not found in {', '.join(str(f.path) for f in self.files)}") from None
