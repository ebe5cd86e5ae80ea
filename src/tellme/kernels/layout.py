"""Packing ternary weight matrices into the kernel layouts (offline, NumPy).

The byte-level description of both layouts is in csrc/core.h and docs/kernels.md. Packing and
unpacking are exact inverses, so a packed matrix carries no loss.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

ROW_BLOCK = 32      # output rows per tile
GROUP = 3           # weights per TLMM group (27 patterns)
KB_GROUPS = 8       # groups per TLMM tile
KB_WEIGHTS = GROUP * KB_GROUPS
TILE_BYTES = 160    # 4 x 32 nibble-pair bytes + 32 sign bytes
I2_BLOCK = 128      # weights per 32-byte block of 2-bit codes
I2_K_PAD = 256      # `in` padding of the 2-bit layout
INT6_BLOCK = 128    # values per block of 6-bit head rows
INT6_BLOCK_BYTES = 96
INT6_MAX = 31       # 6-bit head values are -31..31, stored as u = q + 32


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def check_ternary(w) -> np.ndarray:
    """`w` as a C-contiguous int8 [out, in] matrix with values in {-1, 0, 1}, or a ValueError."""
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise UsageError(f"ternary weights must be a non-empty 2-D [out, in] matrix, got shape {w.shape}")
    if not (np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)):
        raise UsageError(f"ternary weights must be numeric, got dtype {w.dtype}")
    bad = (w != -1) & (w != 0) & (w != 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UsageError(f"ternary weights must be -1, 0 or 1; found {w[r, c].item()!r} at [{r}, {c}]")
    return np.ascontiguousarray(w, dtype=np.int8)


def _padded(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), dtype=np.int8)
    out[: w.shape[0], : w.shape[1]] = w
    return out


def pack_tlmm(w) -> tuple[np.ndarray, np.ndarray]:
    """TLMM layout: returns (tiles uint8 [out_pad/32, in_pad/24, 160], neg_count int32 [out_pad])."""
    w = check_ternary(w)
    out_pad, in_pad = round_up(w.shape[0], ROW_BLOCK), round_up(w.shape[1], KB_WEIGHTS)
    g = _padded(w, out_pad, in_pad).astype(np.int16).reshape(out_pad, in_pad // GROUP, GROUP)
    value = 9 * g[..., 0] + 3 * g[..., 1] + g[..., 2]          # balanced ternary, [-13, 13]
    magnitude = np.abs(value).astype(np.uint8)
    negative = (value < 0).astype(np.uint8)
    rb, kt = out_pad // ROW_BLOCK, in_pad // KB_WEIGHTS
    # [row block, row, tile, group] -> [row block, tile, group, row]
    magnitude = magnitude.reshape(rb, ROW_BLOCK, kt, KB_GROUPS).transpose(0, 2, 3, 1)
    negative = negative.reshape(rb, ROW_BLOCK, kt, KB_GROUPS).transpose(0, 2, 3, 1)
    nibbles = magnitude[:, :, 0::2, :] | (magnitude[:, :, 1::2, :] << 4)   # [rb, kt, 4, 32]
    signs = np.zeros((rb, kt, ROW_BLOCK), dtype=np.uint8)
    for j in range(KB_GROUPS):
        signs |= negative[:, :, j, :] << j
    tiles = np.concatenate([nibbles.reshape(rb, kt, 4 * ROW_BLOCK), signs], axis=2)
    neg_count = (value < 0).sum(axis=1, dtype=np.int32)
    return np.ascontiguousarray(tiles), neg_count


def unpack_tlmm(tiles: np.ndarray, out_features: int, in_features: int) -> np.ndarray:
    """Inverse of pack_tlmm: the int8 [out, in] ternary matrix."""
    rb, kt, _ = tiles.shape
    nibbles = tiles[:, :, :128].reshape(rb, kt, 4, ROW_BLOCK)
    magnitude = np.empty((rb, kt, KB_GROUPS, ROW_BLOCK), dtype=np.int16)
    magnitude[:, :, 0::2] = nibbles & 15
    magnitude[:, :, 1::2] = nibbles >> 4
    signs = tiles[:, :, 128:]
    negative = np.stack([(signs >> j) & 1 for j in range(KB_GROUPS)], axis=2)
    value = np.where(negative == 1, -magnitude, magnitude)
    value = value.transpose(0, 3, 1, 2).reshape(rb * ROW_BLOCK, kt * KB_GROUPS)
    w = np.empty((value.shape[0], value.shape[1], GROUP), dtype=np.int8)
    v = value.astype(np.int16)
    for i in (2, 1, 0):                                         # balanced-ternary digits
        digit = ((v + 1) % 3) - 1
        w[..., i] = digit
        v = (v - digit) // 3
    return w.reshape(value.shape[0], -1)[:out_features, :in_features]


def pack_i2(w) -> np.ndarray:
    """2-bit code layout: codes uint8 [out_pad, in_pad/4] (code = w + 1)."""
    w = check_ternary(w)
    out_pad, in_pad = round_up(w.shape[0], ROW_BLOCK), round_up(w.shape[1], I2_K_PAD)
    codes = (_padded(w, out_pad, in_pad) + 1).astype(np.uint8)
    blocks = codes.reshape(out_pad, in_pad // I2_BLOCK, 4, 32)   # [row, block, plane s, j]
    packed = (blocks[:, :, 0] << 6) | (blocks[:, :, 1] << 4) | (blocks[:, :, 2] << 2) | blocks[:, :, 3]
    return np.ascontiguousarray(packed.reshape(out_pad, in_pad // 4))


def unpack_i2(codes: np.ndarray, out_features: int, in_features: int) -> np.ndarray:
    """Inverse of pack_i2: the int8 [out, in] ternary matrix."""
    rows, row_bytes = codes.shape
    b = codes.reshape(rows, row_bytes // 32, 1, 32)
    planes = np.concatenate([(b >> (6 - 2 * s)) & 3 for s in range(4)], axis=2)
    w = planes.reshape(rows, row_bytes * 4).astype(np.int8) - 1
    return w[:out_features, :in_features]


def int6_row_bytes(k: int) -> int:
    """Bytes of one 6-bit head row of k values."""
    return round_up(k, INT6_BLOCK) // INT6_BLOCK * INT6_BLOCK_BYTES


def pack_int6(q) -> np.ndarray:
    """6-bit LM head rows: q int8 [n, k] in [-31, 31] -> uint8 [n, k_pad / 128 * 96], k padded to
    128 with zeros. Per block of 128 values u = q + 32 (0..63): bytes 0-31 hold the low 4 bits of
    u[j] (low nibble) and u[j + 64] (high nibble), bytes 32-63 those of u[32 + j] and u[96 + j],
    bytes 64-95 the top 2 bits of u[j], u[j + 32], u[j + 64], u[j + 96] in bits 0-1, 2-3, 4-5, 6-7."""
    q = np.asarray(q)
    if q.ndim != 2 or q.size and np.abs(q.astype(np.int32)).max() > INT6_MAX:
        raise UsageError(f"6-bit rows must be a 2-D matrix of values in [-{INT6_MAX}, {INT6_MAX}]")
    n, k = q.shape
    u = np.full((n, round_up(k, INT6_BLOCK)), 32, np.uint8)
    u[:, :k] = q.astype(np.int16) + 32
    b = u.reshape(n, -1, 4, 32)  # [row, block, quarter, j]: quarter s holds values 32s + j
    lo, hi = b & 15, b >> 4
    out = np.concatenate([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4,
                          hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6], axis=2)
    return np.ascontiguousarray(out.reshape(n, -1))


def unpack_int6(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_int6: int8 [n, k]."""
    n = packed.shape[0]
    b = packed.reshape(n, -1, 3, 32)
    n0, n1, h = b[:, :, 0], b[:, :, 1], b[:, :, 2]
    u = np.stack([n0 & 15 | (h & 3) << 4, n1 & 15 | (h >> 2 & 3) << 4,
                  n0 >> 4 | (h >> 4 & 3) << 4, n1 >> 4 | (h >> 6) << 4], axis=2)
    return (u.reshape(n, -1)[:, :k].astype(np.int16) - 32).astype(np.int8)


def quantize_int6(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float rows to 6-bit head rows: (pack_int6(q), scale float32 [n]) with one absmax scale per
    row, q = round-half-even(e * 31 / amax), amax at least 1e-5 (float32 math, as the int8 rows)."""
    e = np.asarray(e, dtype=np.float32)
    amax = np.maximum(np.abs(e).max(axis=1), np.float32(1e-5))
    q = np.clip(np.rint(e * (np.float32(INT6_MAX) / amax)[:, None]), -INT6_MAX, INT6_MAX).astype(np.int8)
    return pack_int6(q), (amax / np.float32(INT6_MAX)).astype(np.float32)


def i2_has_code_3(codes: np.ndarray) -> bool:
    """Whether any 2-bit code is 3 (a weight of +2: never written, and read differently per kernel)."""
    return bool((codes & (codes >> 1) & 0x55).any())


def check_tlmm_tiles(tiles: np.ndarray, neg_count: np.ndarray) -> str:
    """'' if the tiles hold only the 27 patterns and neg_count counts their negative groups per row
    (the correction of the plane-table kernels: AVX2, NEON), else what is wrong."""
    nibbles = tiles[:, :, :4 * ROW_BLOCK]
    if ((nibbles & 15) > 13).any() or ((nibbles >> 4) > 13).any():
        return "holds a group magnitude above 13 (not one of the 27 patterns)"
    signs = np.unpackbits(tiles[:, :, 4 * ROW_BLOCK:, None], axis=-1).sum(axis=(1, 3), dtype=np.int64)  # [rb, row]
    if not np.array_equal(signs.reshape(-1), neg_count):
        return "does not match its neg_count (negative groups per row)"
    return ""
