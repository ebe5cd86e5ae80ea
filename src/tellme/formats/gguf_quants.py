"""Tensor encodings of GGUF files <-> NumPy, for what tellme reads and writes.

Ternary weights (W = scale * T, T in {-1, 0, 1}):

    TQ2_0 (llama.cpp, type 35)  blocks of 256 weights along a row, 66 bytes: 64 bytes of 2-bit codes,
                                then an fp16 scale d. Byte 32g + j of a block holds weight
                                128g + 32k + j in bits 2k..2k+1 (k = 0..3); code = t + 1.
    TQ1_0 (llama.cpp, type 34)  blocks of 256, 54 bytes: 5 trits per byte, then 4 per byte, fp16 d.
    I2_S  (bitnet.cpp, type 36) one code stream for the whole tensor, blocks of 128 weights in 32
                                bytes: byte j holds weights j, j+32, j+64, j+96 in bits 6, 4, 2, 0;
                                code = t + 1. Then one fp32 scale, padded to 32 bytes.

So TQ2_0 and I2_S differ only in bit order (the same 128-weight groups, k at bits 2k against
6 - 2k) and in where the scale lives (per block against per tensor). TQ1_0/TQ2_0 go through the
`gguf` library's quantize/dequantize; I2_S, which the library does not know, is done here.
Dense types (F32, F16, BF16, Q8_0, Q6_K, Q4_0, ...) are dequantized by the library.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

from .. import _core

I2_S = 36            # bitnet.cpp's type id (upstream ggml later used 36 for the removed IQ4_NL_4_4)
I2_S_BLOCK = 128
I2_S_TAIL = 32       # fp32 scale, then padding
I2_S_FILE_TYPE = 40  # bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S


def i2s_nbytes(n_elements: int) -> int:
    return n_elements // 4 + I2_S_TAIL


def pack_i2s(ternary: np.ndarray, scale: float) -> np.ndarray:
    """ternary int8 [rows, cols] (size a multiple of 128) -> I2_S bytes."""
    t = np.ascontiguousarray(ternary, dtype=np.int8).reshape(-1)
    if t.size % I2_S_BLOCK:
        raise ValueError(f"I2_S needs a multiple of {I2_S_BLOCK} weights, got {t.size}")
    codes = (t + 1).astype(np.uint8).reshape(-1, 4, 32)           # [block, group k, j]
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8)[None, :, None]
    packed = np.bitwise_or.reduce(codes << shifts, axis=1).reshape(-1)
    tail = np.zeros(I2_S_TAIL, dtype=np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return np.concatenate([packed, tail])


def unpack_i2s(raw: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float]:
    """I2_S bytes -> (ternary int8 [rows, cols], scale); raises ValueError on the unused code 3."""
    n = shape[0] * shape[1]
    if n % I2_S_BLOCK:
        raise ValueError(f"I2_S needs a multiple of {I2_S_BLOCK} weights, the shape {shape} has {n}")
    b = raw[: n // 4].reshape(-1, 1, 32)
    codes = (b >> np.array([6, 4, 2, 0], dtype=np.uint8)[None, :, None]) & 3
    if (codes == 3).any():
        raise ValueError("holds the unused 2-bit code 3")
    scale = float(raw[n // 4: n // 4 + 4].view(np.float32)[0])
    return (codes.astype(np.int8) - 1).reshape(shape), scale


# llama.cpp's group-wise types (Bonsai). Q2_0 (type 42): blocks of an fp16 scale d, then 2-bit
# codes, weight j at bits 2(j % 4) of byte j / 4, value (code - 1) * d (code 3, +2d, is not
# ternary). Mainline ggml's blocks hold 64 weights (18 bytes), PrismML's fork's 128 (34 bytes):
# the tensor's size tells which. Q1_0 (type 41): blocks of 128, an fp16 d then 16 bytes of bits,
# bit j % 8 of byte j / 8 set for +d, clear for -d.
Q1_0, Q2_0 = 41, 42
Q2_0_BLOCKS = {64: 18, 128: 34}   # weights per block -> bytes per block
Q1_0_BLOCK, Q1_0_BYTES = 128, 18
TERNARY_TYPES = {"tq1_0": T.TQ1_0, "tq2_0": T.TQ2_0, "i2_s": I2_S, "q2_0": Q2_0}


def pack_q2_0(ternary: np.ndarray, d: np.ndarray) -> np.ndarray:
    """ternary int8 [rows, cols] and fp16-exact block scales d [rows, cols / block] -> Q2_0 bytes."""
    rows, cols = ternary.shape
    block = cols // d.shape[1]
    codes = (ternary.astype(np.uint8) + 1).reshape(rows * d.shape[1], block // 4, 4)
    packed = (codes[..., 0] | codes[..., 1] << 2 | codes[..., 2] << 4 | codes[..., 3] << 6).astype(np.uint8)
    scales = d.astype(np.float16).reshape(-1, 1).view(np.uint8)
    return np.concatenate([scales, packed], axis=1).reshape(-1)


def q2_0_block(n_weights: int, nbytes: int) -> int | None:
    """The block size (64 or 128) a Q2_0 tensor of n weights in nbytes bytes has, or None."""
    return next((k for k, b in Q2_0_BLOCKS.items() if n_weights % k == 0 and n_weights // k * b == nbytes), None)


def unpack_grouped(raw: np.ndarray, qtype: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Q2_0 or Q1_0 bytes -> (ternary int8 [rows, cols], scales float32 [rows, cols / block]);
    ValueError on Q2_0's code 3."""
    rows, cols = shape
    n = rows * cols
    block = q2_0_block(n, raw.size) if qtype == Q2_0 else Q1_0_BLOCK
    per = Q2_0_BLOCKS.get(block, 0) if qtype == Q2_0 else Q1_0_BYTES
    if block is None or cols % block or raw.size != n // block * per:
        raise ValueError(f"{raw.size} bytes are not {rows}x{cols} weights in whole blocks")
    blocks = raw.reshape(-1, per)
    d = np.ascontiguousarray(blocks[:, :2]).view(np.float16).astype(np.float32).reshape(rows, cols // block)
    if qtype == Q2_0:
        codes = (blocks[:, 2:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3    # [block, byte, j % 4]
        if (codes == 3).any():
            raise ValueError("holds the 2-bit code 3 (+2 times the scale), which is not ternary")
        t = codes.astype(np.int8) - 1
    else:
        bits = np.unpackbits(blocks[:, 2:], axis=1, bitorder="little")
        t = bits.astype(np.int8) * 2 - 1
    return t.reshape(rows, cols), d


def _pairs_reversed(flip: bool) -> np.ndarray:
    """Byte -> byte with its four 2-bit fields in reverse order (and each code c as 2 - c if flip)."""
    b = np.arange(256)
    fields = [(b >> (2 * k)) & 3 for k in range(4)]
    if flip:
        fields = [np.where(f == 3, 3, 2 - f) for f in fields]
    return (fields[0] << 6 | fields[1] << 4 | fields[2] << 2 | fields[3]).astype(np.uint8)


_REVERSED = {flip: _pairs_reversed(flip) for flip in (False, True)}
_FLIP = {False: np.arange(256, dtype=np.uint8), True: _pairs_reversed(True)[_pairs_reversed(False)]}  # c -> 2 - c
TQ2_0_BYTES = 66  # per block of 256 weights: 64 bytes of codes, an fp16 d
TQ1_0_BYTES = 54  # 48 bytes of 5 trits, 4 of 4, an fp16 d


def _one_block_scale(d: np.ndarray, live: np.ndarray) -> float:
    """The d every live block carries (0.0 when none is live), else ValueError."""
    d = d[live.astype(bool)]
    if d.size and d.min() != d.max():
        scales = np.unique(d)
        raise ValueError(f"is not ternary with one scale per tensor (block scales {', '.join(f'{s:g}' for s in scales[:4])})")
    return float(d[0]) if d.size else 0.0


def tq1_0_to_i2(raw: np.ndarray, shape: tuple[int, int], into: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """TQ1_0 bytes -> (i2 codes uint8 [rows, cols / 4], scale), decoded natively (through NumPy
    this took 30 s of a 2B-4T load); the rules of tq2_0_to_i2."""
    rows, cols = shape
    blocks = np.ascontiguousarray(raw).reshape(-1, TQ1_0_BYTES)
    codes, d, live = _core.tq1_0_blocks(blocks)
    scale = _one_block_scale(d, live)
    return _remapped(codes, _FLIP[scale < 0], live, (rows, cols // 4), into), abs(scale)


def _remapped(blocks, lut, live, shape, into):
    """lut over each live block's 64 code bytes, weight 0 for the others: into `into` when given."""
    if into is None:
        return _core.remap_codes(blocks, lut, live, 64, 0x55).reshape(shape)
    _core.remap_codes(blocks, lut, live, 64, 0x55, into)
    return into


def tq2_0_to_i2(raw: np.ndarray, shape: tuple[int, int], into: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """TQ2_0 bytes -> (i2 codes uint8 [rows, cols / 4] in I2_S bit order, scale), without unpacking:
    the codes only change bit order. Blocks that are all zero (any d) become zero codes; every
    other block must carry the same d, else ValueError (not one scale per tensor)."""
    rows, cols = shape
    blocks = np.ascontiguousarray(raw).reshape(-1, TQ2_0_BYTES)
    d, live, code_3 = _core.tq2_0_blocks(blocks)  # native: this NumPy took 4 s of a 2B-4T load
    if code_3:
        raise ValueError("holds the unused 2-bit code 3")
    scale = _one_block_scale(d, live)
    return _remapped(blocks, _REVERSED[scale < 0], live, (rows, cols // 4), into), abs(scale)


def quantize_ternary(ternary: np.ndarray, scale: float, qtype) -> tuple[np.ndarray, float]:
    """(ternary, scale) -> (bytes of type qtype, leftover scale).

    TQ1_0/TQ2_0 store an fp16 scale per block; the scale goes there when fp16 holds it exactly,
    else the blocks carry d = 1 and the scale is returned, for a `.scale` tensor (which llama.cpp's
    bitnet graph multiplies in), so that no precision is lost.
    """
    if qtype == I2_S:
        return pack_i2s(ternary, scale), 1.0
    if qtype == Q2_0:  # one scale: blocks of 128 carrying it, or 1 (and the scale returned)
        d = np.float32(np.float16(scale))
        exact = bool(d == np.float32(scale)) and d != 0
        blocks = np.full((ternary.shape[0], ternary.shape[1] // 128), d if exact else 1.0, np.float32)
        return pack_q2_0(ternary, blocks), (1.0 if exact else float(scale))
    d = np.float32(np.float16(scale))
    exact = bool(d == np.float32(scale)) and d != 0
    w = ternary.astype(np.float32) * (d if exact else np.float32(1.0))
    return quants.quantize(w, qtype), (1.0 if exact else float(scale))


def dequantize(raw: np.ndarray, qtype: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values of a tensor of any type the gguf library knows, I2_S, Q2_0 or Q1_0."""
    if qtype == I2_S:
        t, s = unpack_i2s(raw, shape)
        return t.astype(np.float32) * np.float32(s)
    if qtype in (Q1_0, Q2_0):
        t, d = unpack_grouped(raw, qtype, shape)
        return (t.reshape(d.shape[0], d.shape[1], -1) * d[..., None]).reshape(shape).astype(np.float32)
    return np.asarray(quants.dequantize(raw, T(qtype)), dtype=np.float32).reshape(shape)


GROUP_SIZES = (128, 64, 32)  # weights per scale that grouped ternary models use (Bonsai: 128 or 64)


def ternary_from_values(values: np.ndarray, groups: bool = False) -> tuple[np.ndarray, float | np.ndarray]:
    """float32 W [rows, cols] -> (T, s) with W == s * T exactly: one scale for the tensor, or with
    `groups`, where no one scale fits, scales [rows, cols / g] for the largest g of GROUP_SIZES that
    fits (each group's largest magnitude). ValueError if W is neither."""
    try:
        return _one_scale(values)
    except ValueError:
        if not groups or values.ndim != 2:
            raise
    rows, cols = values.shape
    for g in GROUP_SIZES:
        if cols % g:
            continue
        v = values.reshape(rows, cols // g, g)
        s = np.abs(v).max(axis=2)
        t = v / np.where(s == 0, 1, s)[..., None]
        if np.isin(t, (-1.0, 0.0, 1.0)).all():
            return t.astype(np.int8).reshape(rows, cols), s.astype(np.float32)
    raise ValueError(f"is not ternary with one scale per tensor nor per group of {', '.join(map(str, GROUP_SIZES))} "
                     "weights along a row")


def _one_scale(values: np.ndarray) -> tuple[np.ndarray, float]:
    s = np.float32(np.abs(values).max()) if values.size else np.float32(0)
    if s == 0:
        return np.zeros(values.shape, dtype=np.int8), 0.0
    t = values / s
    bad = ~np.isin(t, (-1.0, 0.0, 1.0))
    if bad.any():
        odd = np.unique(np.abs(values[bad]))[:4]
        raise ValueError(f"is not ternary with one scale per tensor (|values| {s:g} and {', '.join(f'{v:g}' for v in odd)})")
    return t.astype(np.int8), float(s)
