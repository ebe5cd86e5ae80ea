"""Plain NumPy references for every native kernel. They document the math; tests compare the
native results against them (bit for bit where the math is integer)."""

from __future__ import annotations

import numpy as np

from .layout import GROUP, KB_GROUPS, ROW_BLOCK, unpack_i2, unpack_int6

ACT_MAX = np.float32(127.0)
ACT_EPS = np.float32(1e-5)


def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BitNet b1.58 per-token absmax quantization to int8 in [-127, 127].

    amax = max(max|x|, 1e-5); q = round_half_even(x * (127 / amax)); scale = amax / 127, so that
    x ~= q * scale. All in float32.
    """
    x = np.asarray(x, dtype=np.float32)
    amax = np.maximum(np.abs(x).max(axis=-1), ACT_EPS)
    inv = ACT_MAX / amax
    q = np.clip(np.rint(x * inv[:, None]), -127, 127).astype(np.int8)
    return q, amax / ACT_MAX


def rmsnorm(x: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    """y = (x * inv_rms) * gamma, inv_rms = float32(1 / sqrt(mean(x^2) + eps)) with the sum in float64.

    The sum in the native order, so the result is the native one bit for bit: 8 lanes (lane l
    adds x[i]^2 for i = l mod 8, in order), joined as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
    """
    x = np.asarray(x, dtype=np.float32)
    sq = x.astype(np.float64) ** 2
    sq = np.pad(sq, [(0, 0)] * (x.ndim - 1) + [(0, -x.shape[-1] % 8)])  # + 0.0 changes no lane
    lane = np.cumsum(sq.reshape(*x.shape[:-1], -1, 8), axis=-2)[..., -1, :]  # cumsum: in order
    ss = ((lane[..., 0] + lane[..., 1]) + (lane[..., 2] + lane[..., 3])) + \
         ((lane[..., 4] + lane[..., 5]) + (lane[..., 6] + lane[..., 7]))
    inv_rms = (1.0 / np.sqrt(ss / x.shape[-1] + eps)).astype(np.float32)
    return (x * inv_rms[:, None]) * np.asarray(gamma, dtype=np.float32)


def rmsnorm_quantize(x, gamma, eps):
    return quantize(rmsnorm(x, gamma, eps))


def ternary_matmul(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The exact integer result every kernel must produce: acc[t, r] = sum_k q[t, k] * w[r, k]."""
    # float64 products and sums are exact here (|acc| <= 128 * in < 2**53) and use BLAS.
    return (q.astype(np.float64) @ w.astype(np.float64).T).astype(np.int32)


def dequantize(acc: np.ndarray, act_scale: np.ndarray, weight_scale: float) -> np.ndarray:
    """fp32 output = float(acc) * (act_scale[t] * weight_scale), in that order."""
    return acc.astype(np.float32) * (act_scale.astype(np.float32) * np.float32(weight_scale))[:, None]


# The 27 ternary patterns of a group, named by balanced-ternary value v = 9*w0 + 3*w1 + w2.
PATTERNS = np.array([[(v + 13) // 9 - 1, (v + 13) // 3 % 3 - 1, (v + 13) % 3 - 1]
                     for v in range(-13, 14)], dtype=np.int32)


def tlmm(tiles: np.ndarray, out_features: int, in_features: int, q: np.ndarray) -> np.ndarray:
    """Table-lookup ternary matmul on the packed TLMM layout, written out in NumPy.

    Per token and group of 3 activations, a table of all 27 partial sums is built once; every
    output row then looks its value up by the stored pattern index and adds it. No multiplies.
    """
    rb, kt, _ = tiles.shape
    groups = kt * KB_GROUPS
    a = np.zeros((q.shape[0], groups * GROUP), dtype=np.int32)
    a[:, :in_features] = q
    tables = a.reshape(q.shape[0], groups, GROUP) @ PATTERNS.T               # [tokens, groups, 27]
    nibbles = tiles[:, :, :128].reshape(rb, kt, 4, ROW_BLOCK)
    magnitude = np.empty((rb, kt, KB_GROUPS, ROW_BLOCK), dtype=np.int32)
    magnitude[:, :, 0::2] = nibbles & 15
    magnitude[:, :, 1::2] = nibbles >> 4
    negative = np.stack([(tiles[:, :, 128:] >> j) & 1 for j in range(KB_GROUPS)], axis=2)
    value = np.where(negative == 1, -magnitude, magnitude)                   # [rb, kt, 8, 32]
    index = (value.transpose(0, 3, 1, 2).reshape(rb * ROW_BLOCK, groups) + 13)[:out_features]
    acc = np.empty((q.shape[0], out_features), dtype=np.int32)
    for t in range(q.shape[0]):
        acc[t] = np.take_along_axis(tables[t][None, :, :], index[:, :, None], axis=2)[..., 0].sum(axis=1)
    return acc


def i2_matmul(codes: np.ndarray, out_features: int, in_features: int, q: np.ndarray) -> np.ndarray:
    """Multiply-add on 2-bit codes: sum_k code * a - sum_k a, since w = code - 1."""
    c = (unpack_i2(codes, out_features, in_features) + 1).astype(np.int64)
    a = q.astype(np.int64)
    return (a @ c.T - a.sum(axis=1, keepdims=True)).astype(np.int32)



def grouped_matmul(w: np.ndarray, group_scale: np.ndarray, q: np.ndarray, act_scale: np.ndarray) -> np.ndarray:
    """Ternary w [out, in] with one scale per group of in / group_scale.shape[1] weights along a row:
    each group's exact integer sum, times its scale, added in float32 group by group from 0 (each
    product rounded before the add), then times act_scale[t]."""
    groups = group_scale.shape[1]
    g = w.shape[1] // groups
    acc = np.zeros((q.shape[0], w.shape[0]), np.float32)
    for j in range(groups):
        sums = ternary_matmul(w[:, j * g:(j + 1) * g], q[:, j * g:(j + 1) * g]).astype(np.float32)
        acc = acc + group_scale[:, j].astype(np.float32)[None, :] * sums
    return acc * np.asarray(act_scale, np.float32)[:, None]


# ---- the engine's small kernels (attention arithmetic, fp16 KV cache, int8 LM head) ----

def lane_dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    """float32 dot product in 8 lanes: lane j sums a[i] * b[i] for i = j mod 8 in order (each
    product rounded, no fused multiply-add), then ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    lanes = np.zeros(8, np.float32)
    n8 = len(a) // 8 * 8
    for i in range(0, n8, 8):
        lanes += a[i:i + 8] * b[i:i + 8]
    tail = len(a) - n8
    lanes[:tail] += a[n8:] * b[n8:]
    s = lanes
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))


def axpy(alpha: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y + alpha * x in float32, each product rounded before the add."""
    return np.asarray(y, np.float32) + np.float32(alpha) * np.asarray(x, np.float32)


def half_to_float(h: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # a signalling NaN raises the flag on AArch64; it stays a NaN
        return np.asarray(h, np.uint16).view(np.float16).astype(np.float32)


def float_to_half(x: np.ndarray) -> np.ndarray:
    """IEEE round to nearest even, as numpy's float16 cast."""
    return np.asarray(x, np.float32).astype(np.float16).view(np.uint16)


def int8_gemm(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x [tokens, k] times the int8 rows [n, k], exact: [tokens, n]."""
    return (x.astype(np.int64) @ rows.astype(np.int64).T).astype(np.int32)


def int6_gemm(packed: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x [tokens, k] times the 6-bit rows (layout.pack_int6), exact: [tokens, n]."""
    return int8_gemm(unpack_int6(packed, x.shape[1]), x)
