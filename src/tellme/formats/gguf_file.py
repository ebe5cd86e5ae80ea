"""Validated reading of a GGUF file: metadata and a table of tensors as memory-mapped bytes.

The `gguf` library parses the header and metadata. Around it we add what a loader facing
arbitrary files needs: every read is bounds-checked (a truncated or corrupt header is a
FormatError naming the file, never an IndexError, a huge allocation or an endless loop), and
the tensor table is built here rather than by the library, because bitnet.cpp's fork of ggml
numbers its types over upstream's: I2_S is 36 (upstream's former IQ4_NL_4_4), TL1 is 38 and TL2
is 39 (upstream's MXFP4). Which one a tensor is follows from its byte size (the gap to the next
tensor) and, for type 36, the file type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

from ..errors import FormatError
from .fileio import read_bytes
from .gguf_quants import I2_S, I2_S_FILE_TYPE, Q2_0, Q2_0_BLOCKS, i2s_nbytes, q2_0_block

MAX_DIMS = 4
IQ4_NL_4_4 = (32, 18)  # upstream ggml's former type 36: (block, bytes per block)
TL1, TL2 = 38, 39      # bitnet.cpp's lookup-table types, laid out for one machine's kernels
_MIN_ITEM_BYTES = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}


def is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


class _Truncated(ValueError):
    pass


def _string_array_end(buf: memoryview, pos: int, count: int) -> int:
    for _ in range(count):
        if pos + 8 > len(buf):
            raise _Truncated(f"a string array runs past the end of the file (at byte {pos})")
        pos += 8 + int.from_bytes(buf[pos: pos + 8], "little")
    if pos > len(buf):
        raise _Truncated("a string array runs past the end of the file")
    return pos


def strings_of(blob: np.ndarray, count: int) -> list[str]:
    """The strings of a GGUF string array kept as one blob: (uint64 length, UTF-8 bytes) each."""
    buf, pos, out = blob.tobytes(), 0, []
    for _ in range(count):
        n = int.from_bytes(buf[pos: pos + 8], "little")
        out.append(buf[pos + 8: pos + 8 + n].decode("utf-8"))
        pos += 8 + n
    return out


class _CheckedReader(GGUFReader):
    """GGUFReader whose reads fail on running past the end of the file, and which leaves the
    tensor table to GGUFFile."""

    def _get(self, offset, dtype, count=1, override_order=None):
        arr = super()._get(offset, dtype, count, override_order)
        if len(arr) < int(count):
            raise _Truncated(f"the header runs past the end of the file (at byte {offset})")
        return arr

    def _need(self, offset: int, count: int, item_bytes: int, what: str) -> None:
        if count * item_bytes > len(self.data) - offset:
            raise _Truncated(f"{count} {what} at byte {offset} cannot fit in the file")

    def _get_field_parts(self, orig_offs, raw_type):
        if raw_type == GGUFValueType.ARRAY:  # check the length before the library loops over it
            item = int(self._get(orig_offs, np.uint32)[0])
            count = int(self._get(orig_offs + 4, np.uint64)[0])
            try:
                size = _MIN_ITEM_BYTES.get(GGUFValueType(item)) or np.dtype(self.gguf_scalar_to_np[GGUFValueType(item)]).itemsize
            except (ValueError, KeyError):
                raise ValueError(f"unknown metadata value type {item} at byte {orig_offs}") from None
            self._need(orig_offs + 12, count, size, "array items")
            if item == GGUFValueType.STRING and self.byte_order == "I":
                # the library makes numpy views per string (~30 s for a 128k vocabulary and its
                # merges); keep the array as one blob, decoded by strings_of()
                end = _string_array_end(memoryview(self.data), orig_offs + 12, count)
                blob = self._get(orig_offs + 12, np.uint8, end - orig_offs - 12)
                return end - orig_offs, [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64), blob], \
                    [], [GGUFValueType.ARRAY, GGUFValueType.STRING]
            if GGUFValueType(item) in self.gguf_scalar_to_np:  # likewise: one array, not a view per value
                values = self._get(orig_offs + 12, self.gguf_scalar_to_np[GGUFValueType(item)], count)
                return 12 + int(values.nbytes), [self._get(orig_offs, np.uint32), self._get(orig_offs + 4, np.uint64),
                                                 values], [2], [GGUFValueType.ARRAY, GGUFValueType(item)]
        return super()._get_field_parts(orig_offs, raw_type)

    def _build_fields(self, offs, count):
        self._need(offs, int(count), 13, "metadata entries")
        return super()._build_fields(offs, count)

    def _build_tensor_info(self, offs, count):
        self._need(offs, int(count), 24, "tensor entries")
        return super()._build_tensor_info(offs, count)

    def _get_tensor_info_field(self, orig_offs):
        name_len = int(self._get(orig_offs, np.uint64)[0])
        self._need(orig_offs + 8, name_len, 1, "bytes of tensor name")
        n_dims = int(self._get(orig_offs + 8 + name_len, np.uint32)[0])
        if not 1 <= n_dims <= MAX_DIMS:
            raise ValueError(f"tensor entry at byte {orig_offs} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        return super()._get_tensor_info_field(orig_offs)

    def _build_tensors(self, start_offs, fields):
        self.tensor_fields = fields


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: int                 # ggml type id
    type_name: str
    shape: tuple[int, ...]    # NumPy order: rows first (GGUF lists ne0, the row length, first)
    offset: int               # absolute, in the file
    nbytes: int


class GGUFFile:
    """`metadata` (key -> Python value), `tensors` (name -> TensorInfo), `raw(name)` (uint8 view)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model not found: {self.path}")
        if self.path.stat().st_size < 24:
            raise FormatError(f"{self.path}: too short to be a GGUF file ({self.path.stat().st_size} bytes)")
        try:
            r = _CheckedReader(self.path)
            self.metadata = {k: strings_of(f.parts[-1], int(f.parts[-2][0])) if f.types == [GGUFValueType.ARRAY, GGUFValueType.STRING]
                             and not f.data else f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
        except (ValueError, KeyError, IndexError, OverflowError, TypeError, UnicodeDecodeError, RecursionError) as e:
            raise FormatError(f"{self.path}: not a valid GGUF file: {type(e).__name__}: {e}") from None
        self._data = r.data
        self.alignment = int(r.alignment)
        self.tensors = self._tensor_table(r.tensor_fields, int(r.data_offset))

    def _error(self, message: str) -> FormatError:
        return FormatError(f"{self.path}: {message}")

    def _tensor_table(self, fields, data_offset: int) -> dict[str, TensorInfo]:
        size = len(self._data)
        entries = []
        for f in fields:
            _, name_bytes, _, dims, raw_type, rel = f.parts
            name = bytes(name_bytes).decode("utf-8", errors="replace")
            dims = [int(d) for d in dims]
            if any(d <= 0 for d in dims) or int(np.prod(dims, dtype=np.float64)) > 1 << 48:
                raise self._error(f"tensor {name!r} has invalid dimensions {dims}")
            entries.append((name, int(raw_type[0]), tuple(reversed(dims)), data_offset + int(rel[0])))
        # a tensor's span: up to the next tensor's data, or the end of the file
        starts = sorted(e[3] for e in entries) + [size]
        shared = next((s for s, t in zip(starts, starts[1:-1]) if s == t), None)
        if shared is not None:
            raise self._error(f"two tensors start at byte {shared}: {[e[0] for e in entries if e[3] == shared]}")
        span = {s: starts[i + 1] - s for i, s in enumerate(starts[:-1])}
        last = starts[-2] if entries else None
        table = {}
        for name, qtype, shape, offset in entries:
            if name in table:
                raise self._error(f"tensor {name!r} appears twice")
            if offset % self.alignment:
                raise self._error(f"tensor {name!r} starts at byte {offset}, not aligned to {self.alignment}")
            type_name, nbytes = self._type_and_size(name, qtype, shape, span.get(offset, 0))
            what = f"tensor {name!r} ({type_name} {list(shape)}, {nbytes} bytes at byte {offset})"
            if offset + nbytes > size:
                raise self._error(f"{what} runs past the end of the file ({size} bytes): truncated?")
            # writers pad each tensor to the alignment: its data must fill the gap to the next one
            if nbytes > span[offset] or (offset != last and span[offset] >= nbytes + self.alignment):
                raise self._error(f"{what} does not fit the {span[offset]} bytes before the next tensor: "
                                  "a wrong type, shape or offset")
            table[name] = TensorInfo(name, qtype, type_name, shape, offset, nbytes)
        return table

    def _type_and_size(self, name: str, qtype: int, shape: tuple[int, ...], span: int) -> tuple[str, int]:
        n = int(np.prod(shape, dtype=np.int64))
        if qtype == I2_S:
            return "I2_S", self._check_type_36(name, n, span)
        if qtype in (TL1, TL2):
            self._refuse_tl(name, qtype, shape, span)
        if qtype == Q2_0:  # unknown to the library; 64 or 128 weights per block, told apart by size
            for block, per in Q2_0_BLOCKS.items():
                if shape[-1] % block == 0 and q2_0_block(n, n // block * per) and \
                        n // block * per <= span < n // block * per + self.alignment:
                    return "Q2_0", n // block * per
            raise self._error(f"tensor {name!r} has type id 42 (Q2_0) but spans {span} bytes, which is neither "
                              f"{n // 64 * 18} (blocks of 64) nor {n // 128 * 34} (blocks of 128)")
        try:
            t = GGMLQuantizationType(qtype)
        except ValueError:
            raise self._error(f"tensor {name!r} has unknown type id {qtype}") from None
        block, type_size = GGML_QUANT_SIZES[t]
        if shape[-1] % block:
            raise self._error(f"tensor {name!r}: rows of {shape[-1]} values are not whole {t.name} blocks of {block}")
        return t.name, n // block * type_size

    def _check_type_36(self, name: str, n: int, span: int) -> int:
        """Type 36 is I2_S in bitnet.cpp's files and IQ4_NL_4_4 in upstream ggml's (since removed)."""
        def fits(nbytes):
            return nbytes <= span < nbytes + self.alignment

        i2s = fits(i2s_nbytes(n))
        iq4 = n % IQ4_NL_4_4[0] == 0 and fits(n // IQ4_NL_4_4[0] * IQ4_NL_4_4[1])
        declared = self.metadata.get("general.file_type") == I2_S_FILE_TYPE
        if i2s and not iq4:
            return i2s_nbytes(n)
        what = (f"tensor {name!r} has type id 36, which is I2_S in bitnet.cpp's files (needing {i2s_nbytes(n)} bytes "
                f"for {n} weights) and IQ4_NL_4_4 in upstream ggml's; it spans {span} bytes and the file type is "
                f"{self.metadata.get('general.file_type')!r} (I2_S files declare {I2_S_FILE_TYPE})")
        if i2s and declared:
            return i2s_nbytes(n)
        if iq4 and not i2s:
            raise self._error(what + ": this is an upstream IQ4_NL_4_4 tensor, which tellme does not read")
        raise self._error(what + (": ambiguous" if i2s else ": the size matches neither"))

    def _refuse_tl(self, name: str, qtype: int, shape: tuple[int, ...], span: int) -> None:
        """bitnet.cpp's TL1 (38) and TL2 (39) are refused by name when the tensor has their size;
        otherwise the type id is upstream's (39 is MXFP4: read, then refused as not ternary)."""
        rows, cols = (shape[0], shape[-1]) if len(shape) > 1 else (1, shape[0])
        if qtype == TL1:
            nbytes = rows * cols // 4 + 32
        else:  # bitnet.cpp's ggml_nbytes: 3 weights in 5 bits, the last 256 columns 2 in 4 bits
            nbytes = (cols - 256) * rows // 3 * 5 // 8 + 256 * rows // 2 * 4 // 8
            nbytes = -(-nbytes // 32) * 32 + 32
        if cols < 256 or not nbytes <= span < nbytes + self.alignment:
            return
        kind = "TL1" if qtype == TL1 else "TL2"
        raise self._error(f"tensor {name!r} is bitnet.cpp's {kind} (type id {qtype}), a layout generated for one "
                          "machine's kernels that tellme does not read: convert the model to I2_S instead "
                          "(bitnet.cpp's converter with --quant-type i2_s) or to TQ2_0 (llama.cpp)")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a view of the file's memory map (pages count as memory once read)."""
        t = self.tensors[name]
        return self._data[t.offset: t.offset + t.nbytes]

    def read(self, name: str, first_row: int = 0, rows: int | None = None) -> np.ndarray:
        """A copy of rows [first_row, first_row + rows) of a tensor (all by default), read from the
        file without mapping it: the bytes are freed with the array, nothing stays resident."""
        t = self.tensors[name]
        total = t.shape[0] if len(t.shape) > 1 else 1
        rows = total - first_row if rows is None else rows
        row_bytes = t.nbytes // total
        return read_bytes(self.path, t.offset + first_row * row_bytes, rows * row_bytes)

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)
