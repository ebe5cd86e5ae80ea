"""The TeLLMe v2 datapath's arithmetic, one function per unit, in NumPy.

Each function is the unit as the released design computes it (../shared/TELLME-HARDWARE.md,
"Numerics", "TLMM", "RPA", "DA"); where the release leaves an order or a rounding open, the
choice made here is stated in docs/accel.md ("Numerics"). `Numerics` switches each of the
design's approximations on or off, so that its cost can be measured alone (`IDEAL` has none).

Integer parts are exact: TLMM's sums are integers that float32 BLAS adds exactly while they stay
below 2**24 (`exact_matmul` checks the bound and splits the reduction when it does not).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import TellmeError, UsageError
from .design import TELLME_V2

G = TELLME_V2.G                  # weights per TLMM group: 27 patterns, a 5-bit index
T_TABLES = TELLME_V2.T           # tables per TLMM step: 84 activations, a 140-bit index vector
BLOCK = TELLME_V2.block          # 84: reduction dims are zero-padded to a multiple of this
ENTRY_BITS = TELLME_V2.entry_bits  # a table entry: 8-bit activations, sums of 3
DOT_WIDTH = TELLME_V2.dot_lanes  # fp16 lanes of one attention dot-product step (a 256-bit vector)
SCORE_FIFO = TELLME_V2.score_fifo  # decode attention's score FIFO depth: the decode context limit
N_PE = TELLME_V2.N_pe            # RPA's query block: the host pads prompts to a multiple of it
ACT_MAX = 127                    # activations saturate to -127..127   [C]
SILU_ENTRIES, SILU_RANGE = 64, 8.0  # SiLU table over [-8, 8], saturating outside   [C]


class AccumulatorOverflow(TellmeError):
    """A TLMM accumulator left its signed range (the hardware would have wrapped)."""


@dataclass(frozen=True)
class Numerics:
    """Which of the design's approximations are on. The default is the design as released."""

    fp16: bool = True          # activations, RoPE, residuals, attention, KV cache in fp16 (else fp32)
    silu_table: bool = True    # the 64-entry SiLU table (else SiLU in fp32)
    acc_bits: int | None = TELLME_V2.acc_bits  # TLMM accumulator width, 24 (None: unbounded)
    rounding: str = "even"     # quantizer rounding: "even" (convergent, the design) or "away" (from zero)
    kv_fp16: bool | None = None  # the KV cache in fp16 (None: as `fp16`; tellme's own engine keeps fp16 K/V)

    def __post_init__(self):
        if self.rounding not in ("even", "away"):
            raise UsageError(f"rounding must be 'even' or 'away', got {self.rounding!r}")
        if self.acc_bits is not None and (isinstance(self.acc_bits, bool) or not isinstance(self.acc_bits, int)
                                          or not 12 <= self.acc_bits <= 64):
            raise UsageError(f"acc_bits must be an integer from 12 to 64, or None, got {self.acc_bits!r}")

    @property
    def dtype(self):
        return np.float16 if self.fp16 else np.float32

    @property
    def kv_dtype(self):
        return np.float16 if (self.fp16 if self.kv_fp16 is None else self.kv_fp16) else np.float32


HARDWARE = Numerics()
IDEAL = Numerics(fp16=False, silu_table=False, acc_bits=None)
ACCEL_NUMERICS = {"tellme-v2": HARDWARE, "tellme-v2-ideal": IDEAL}  # names for load(numerics=...)
APPROXIMATIONS = {  # each alone, on top of IDEAL (docs/accel.md, "What the approximations cost")
    "silu_table": replace(IDEAL, silu_table=True),
    "fp16": replace(IDEAL, fp16=True),
    "acc24": replace(IDEAL, acc_bits=24),
    "round_away": replace(IDEAL, rounding="away"),
}


# ---- TLMM: indices, tables, lookups ----

def _patterns_in_index_order() -> np.ndarray:
    """PATTERNS[i] = the weights (w1, w2, w3) whose dot with (v1, v2, v3) is table entry i:
    0; v1, v2, v3; v1+v2, v1-v2; v1+v3, v1-v3; v2+v3, v2-v3; v1+v2+v3, v1+v2-v3, v1-v2+v3,
    -v1+v2+v3; then entries 14-26 negate 1-13 in the same order   [P], [C]."""
    positive = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1),
                (0, 1, 1), (0, 1, -1), (1, 1, 1), (1, 1, -1), (1, -1, 1), (-1, 1, 1)]
    return np.array([(0, 0, 0)] + positive + [tuple(-w for w in p) for p in positive], dtype=np.int8)


PATTERNS = _patterns_in_index_order()                          # [27, 3]
_INDEX_OF = np.zeros(27, np.uint8)                             # balanced-ternary code -> index
_INDEX_OF[(PATTERNS.astype(np.int32) + 1) @ np.array([9, 3, 1])] = np.arange(27)


def pad_to_block(k: int) -> int:
    return -(-k // BLOCK) * BLOCK


def encode_indices(ternary: np.ndarray) -> np.ndarray:
    """Ternary weights [out, in] -> 5-bit indices [out, pad_to_block(in) / 3] (uint8, 0..26);
    the reduction dimension zero-padded to a multiple of 84."""
    t = np.asarray(ternary, np.int8)
    out, k = t.shape
    padded = np.zeros((out, pad_to_block(k)), np.int8)
    padded[:, :k] = t
    codes = (padded.reshape(out, -1, G).astype(np.int32) + 1) @ np.array([9, 3, 1])
    return _INDEX_OF[codes]


def decode_indices(indices: np.ndarray, in_features: int) -> np.ndarray:
    """5-bit indices [out, groups] -> ternary weights [out, in_features]; a code above 26 is an error."""
    idx = np.asarray(indices)
    if idx.size and int(idx.max()) > 26:
        raise TellmeError(f"TLMM index {int(idx.max())} is not one of the 27 patterns (0..26)")
    w = PATTERNS[idx].reshape(idx.shape[0], -1)
    if np.any(w[:, in_features:]):
        raise TellmeError("TLMM indices carry non-zero weights in the zero padding past the reduction dimension")
    return w[:, :in_features]


def build_tables(a: np.ndarray) -> np.ndarray:
    """Per token and group of 3 int8 activations, all 27 partial sums [tokens, groups, 27] (int16):
    13 sums are formed, the rest are 0 and their negations. Every entry fits 10 signed bits."""
    a = np.asarray(a, np.int16).reshape(a.shape[0], -1, G)
    v1, v2, v3 = a[..., 0], a[..., 1], a[..., 2]
    pos = np.stack([v1, v2, v3, v1 + v2, v1 - v2, v1 + v3, v1 - v3, v2 + v3, v2 - v3,
                    v1 + v2 + v3, v1 + v2 - v3, v1 - v2 + v3, -v1 + v2 + v3], axis=-1)
    tables = np.concatenate([np.zeros_like(pos[..., :1]), pos, -pos], axis=-1)
    limit = 1 << (ENTRY_BITS - 1)
    if tables.size and (tables.min() < -limit or tables.max() >= limit):
        raise TellmeError(f"a TLMM table entry left {ENTRY_BITS} bits: activations must be within -127..127")
    return tables


def _check_acc(partial: np.ndarray, bits: int | None, where: str) -> None:
    if bits is None or not partial.size:
        return
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    bad = np.argwhere((partial < lo) | (partial > hi))
    if bad.size:
        first = tuple(int(i) for i in bad[0])
        raise AccumulatorOverflow(
            f"{where}: a {bits}-bit TLMM accumulator overflowed (value {int(partial[first])} at "
            f"index {first}, range {lo}..{hi}); the hardware would wrap it")


def tlmm_lookup(indices: np.ndarray, a: np.ndarray, acc_bits: int | None = TELLME_V2.acc_bits, where: str = "tlmm") -> np.ndarray:
    """TLMM as the hardware runs it: per 84-activation step, 28 tables are built; each output row
    looks up its 28 indices and adds them to its accumulator, whose width is checked after every
    step. indices [out, groups], a int8 [tokens, in <= 3 * groups]. Returns int64 [tokens, out]."""
    tokens, groups = a.shape[0], indices.shape[1]
    padded = np.zeros((tokens, groups * G), np.int16)
    padded[:, :a.shape[1]] = a
    tables = build_tables(padded).astype(np.int64)              # [tokens, groups, 27]
    acc = np.zeros((tokens, indices.shape[0]), np.int64)
    gidx = np.arange(T_TABLES)
    for step in range(groups // T_TABLES):
        cols = slice(step * T_TABLES, (step + 1) * T_TABLES)
        looked = tables[:, cols][:, gidx[None, :], indices[:, cols]]  # [tokens, out, 28]
        acc += looked.sum(axis=2)
        _check_acc(acc, acc_bits, where)
    return acc


def exact_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a int [tokens, k] @ w int [out, k].T exactly, through float32 BLAS: the reduction is split
    so that no partial sum can reach 2**24 (float32's exact integers). Returns int64."""
    amax = max(int(np.abs(a).max(initial=0)), 1) * max(int(np.abs(w).max(initial=0)), 1)
    step = max(1, (1 << 24) // amax - 1)
    af, wf = a.astype(np.float32), w.astype(np.float32)
    out = np.zeros((a.shape[0], w.shape[0]), np.int64)
    for k in range(0, a.shape[1], step):
        out += (af[:, k:k + step] @ wf[:, k:k + step].T).astype(np.int64)
    return out


def tlmm(ternary: np.ndarray, a: np.ndarray, acc_bits: int | None = TELLME_V2.acc_bits, where: str = "tlmm") -> np.ndarray:
    """The same integers as `tlmm_lookup`, fast: one BLAS product. The accumulator check is exact:
    a running sum of one token never exceeds that token's sum of |a| (|w| <= 1), so the per-step
    sums are formed only for tokens where that bound passes the accumulator's range."""
    a = np.asarray(a)
    acc = exact_matmul(a, ternary)
    if acc_bits is not None:
        risky = np.abs(a.astype(np.int64)).sum(axis=1) > (1 << (acc_bits - 1)) - 1
        if risky.any():
            ar, kk = a[risky], a.shape[1]
            partial = np.zeros((ar.shape[0], ternary.shape[0]), np.int64)
            for k in range(0, kk, BLOCK):
                partial += exact_matmul(ar[:, k:k + BLOCK], ternary[:, k:k + BLOCK])
                _check_acc(partial, acc_bits, where)
    return acc


# ---- quantize, dequantize, norms, element-wise ----

def quantize(x: np.ndarray, rounding: str = "even") -> tuple[np.ndarray, np.ndarray]:
    """Per token: a = x * 127 / max|x|, rounded (convergent: half to even), saturated to -127..127.
    Returns (int8 [tokens, k], amax float32 [tokens]); max|x| is floored at 1e-5 (an all-zero
    token quantizes to zeros)."""
    x = np.asarray(x).astype(np.float32)
    amax = np.maximum(np.abs(x).max(axis=-1), np.float32(1e-5))
    v = x * (np.float32(ACT_MAX) / amax)[:, None]
    r = np.rint(v) if rounding == "even" else np.trunc(v + np.copysign(np.float32(0.5), v))
    return np.clip(r, -ACT_MAX, ACT_MAX).astype(np.int8), amax


def dequantize(acc: np.ndarray, amax: np.ndarray, w_scale, dtype=np.float16) -> np.ndarray:
    """y = acc * (max|x| * w_scale / 127), the factor in float32, the product rounded to `dtype`.
    w_scale: one per linear (a number), or one per output row."""
    factor = amax.astype(np.float32)[:, None] * (np.asarray(w_scale, np.float32) / np.float32(ACT_MAX))
    return (acc.astype(np.float32) * factor).astype(dtype)


def rmsnorm(x: np.ndarray, gamma: np.ndarray, eps: float, dtype=np.float16) -> np.ndarray:
    """RMS-MAX's norm: the sum of squares in float32 as two alternating partial sums (even and odd
    elements, each in order), times 1/d, plus eps, float32 rsqrt; then x * rsqrt * gamma, each
    product rounded to `dtype`."""
    x = np.asarray(x, dtype)
    sq = np.square(x.astype(np.float32))
    even = np.cumsum(sq[..., 0::2], axis=-1, dtype=np.float32)[..., -1]
    odd = np.cumsum(sq[..., 1::2], axis=-1, dtype=np.float32)[..., -1] if x.shape[-1] > 1 else 0
    ms = (even + odd) * np.float32(1.0 / x.shape[-1]) + np.float32(eps)
    r = (np.float32(1) / np.sqrt(ms.astype(np.float32))).astype(dtype)
    return (x * r[..., None]) * np.asarray(gamma).astype(dtype)


SILU_STEP = np.float32(2 * SILU_RANGE / SILU_ENTRIES)


def silu_table() -> np.ndarray:
    """The 64 fp16 entries: SiLU at the centre of each 0.25-wide bin of [-8, 8]."""
    centres = -SILU_RANGE + (np.arange(SILU_ENTRIES, dtype=np.float64) + 0.5) * float(SILU_STEP)
    return (centres / (1 + np.exp(-centres))).astype(np.float16)


_SILU = silu_table()


def silu(x: np.ndarray, table: bool = True, dtype=np.float16) -> np.ndarray:
    """SiLU by the 64-entry table (bin floor((x + 8) / 0.25), saturating to the end bins outside
    [-8, 8]), or computed in float32 when `table` is off."""
    x = np.asarray(x)
    if table:
        i = np.clip(np.floor((x.astype(np.float32) + np.float32(SILU_RANGE)) / SILU_STEP), 0, SILU_ENTRIES - 1)
        return _SILU[i.astype(np.int64)].astype(dtype)
    xf = x.astype(np.float32)
    return (xf / (np.float32(1) + np.exp(-xf))).astype(dtype)


def relu2(x: np.ndarray, dtype=np.float16) -> np.ndarray:
    r = np.maximum(np.asarray(x, dtype), dtype(0))
    return r * r


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, dtype=np.float16) -> np.ndarray:
    """Consecutive pairs (x_2t, x_2t+1) of every head rotated by angle t: x [tokens, heads * hd],
    cos/sin [tokens, hd / 2] (already in `dtype`). Each product and sum rounded to `dtype`."""
    n = x.shape[0]
    p = np.asarray(x, dtype).reshape(n, -1, cos.shape[1], 2)
    c, s = cos[:, None, :], sin[:, None, :]
    a, b = p[..., 0], p[..., 1]
    return np.stack([a * c - b * s, b * c + a * s], axis=-1).reshape(n, -1)


# ---- attention ----

def dot16(q: np.ndarray, k: np.ndarray, dtype=np.float16) -> np.ndarray:
    """Per head, the dot product over its last axis as the PE forms it: products rounded to
    `dtype`, each 16-wide block summed by a binary tree, the blocks added in order. q and k
    broadcast; the last axis is the head dimension (zero-padded to a multiple of 16)."""
    prod = np.asarray(q, dtype) * np.asarray(k, dtype)
    hd = prod.shape[-1]
    if hd % DOT_WIDTH:
        prod = np.concatenate([prod, np.zeros(prod.shape[:-1] + (-hd % DOT_WIDTH,), dtype)], axis=-1)
    v = prod.reshape(prod.shape[:-1] + (-1, DOT_WIDTH))
    while v.shape[-1] > 1:
        v = v[..., 0::2] + v[..., 1::2]
    v = v[..., 0]
    total = v[..., 0]
    for b in range(1, v.shape[-1]):
        total = total + v[..., b]
    return total


def _group(x: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """[n, kv_heads * hd] -> [n, heads, hd], each KV head repeated for the query heads sharing it."""
    n = x.shape[0]
    return np.repeat(x.reshape(n, kv_heads, -1), heads // kv_heads, axis=1)


def host_reverse(x: np.ndarray, n_pe: int = N_PE) -> np.ndarray:
    """The host's prompt layout for RPA: zero rows pad the prompt to a multiple of N_pe, and the
    token order is reversed with the padding first (row r holds position n_padded - 1 - r)."""
    pad = -x.shape[0] % n_pe
    return np.concatenate([np.zeros((pad,) + x.shape[1:], x.dtype), x[::-1]])


def prefill_attention(q, k, v, heads: int, kv_heads: int, dtype=np.float16, n_pe: int = N_PE) -> np.ndarray:
    """RPA: FlashAttention with block size 1 for a prompt from position 0, on the host's reversed,
    padded layout. Query block b (rows [n_pe b, n_pe b + n_pe)) sweeps the keys from row n_pe b to
    the end in increasing order, so a query's first key is its own (its diagonal), then older ones;
    within the diagonal block, keys above a query's row are masked. Each query keeps a running max
    m, denominator l and output o. q [n, heads * hd], k and v [n, kv_heads * hd] in position order;
    returns [n, heads * hd] in position order (the padding queries' rows are dropped)."""
    n = q.shape[0]
    qh = host_reverse(np.asarray(q, dtype), n_pe).reshape(-1, heads, np.shape(q)[1] // heads)
    hd = qh.shape[-1]
    kh = _group(host_reverse(np.asarray(k, dtype), n_pe), heads, kv_heads)
    vh = _group(host_reverse(np.asarray(v, dtype), n_pe), heads, kv_heads)
    rows_total = qh.shape[0]
    scale = dtype(1 / np.sqrt(hd))
    m = np.full((rows_total, heads), -np.inf, dtype)
    l = np.zeros((rows_total, heads), dtype)
    o = np.zeros((rows_total, heads, hd), dtype)
    rows = np.arange(rows_total)
    for j in range(rows_total):             # the key j rows past each query's own
        live = rows[:rows_total - j]
        kj, vj = kh[live + j], vh[live + j]
        s = dot16(qh[live], kj, dtype) * scale
        m_new = np.maximum(m[live], s)
        c = np.exp(m[live] - m_new)
        p = np.exp(s - m_new)
        l[live] = l[live] * c + p
        o[live] = o[live] * c[..., None] + p[..., None] * vj
        m[live] = m_new
    out = (o / l[..., None]).reshape(rows_total, heads * hd).astype(dtype)
    return out[::-1][:n]                    # back to position order, padding (now last) dropped


def decode_attention(q, k_cache, v_cache, heads: int, kv_heads: int, dtype=np.float16) -> np.ndarray:
    """DA for one token: pass 1 streams the K cache (positions 0..L-1 in order), keeping the
    scores and a running max and sum; pass 2 streams the V cache, adding exp(s - max) / sum * v
    into two accumulator banks that alternate by position, joined at the end.
    q [1, heads * hd]; caches [L, kv_heads * hd]. L is at most the score FIFO's 1024."""
    L = k_cache.shape[0]
    if L > SCORE_FIFO:
        raise TellmeError(f"decode attention over {L} positions: the TeLLMe v2 score FIFO holds {SCORE_FIFO} "
                          "(the design's decode context limit)")
    qh = np.asarray(q, dtype).reshape(heads, -1)
    hd = qh.shape[-1]
    kh = _group(np.asarray(k_cache, dtype), heads, kv_heads)     # [L, heads, hd]
    vh = _group(np.asarray(v_cache, dtype), heads, kv_heads)
    scores = dot16(qh[None], kh, dtype) * dtype(1 / np.sqrt(hd))  # [L, heads]
    m = np.full(heads, -np.inf, dtype)
    l = np.zeros(heads, dtype)
    for j in range(L):
        m_new = np.maximum(m, scores[j])
        l = l * np.exp(m - m_new) + np.exp(scores[j] - m_new)
        m = m_new
    w = np.exp(scores - m) / l                                    # [L, heads]
    banks = np.zeros((2, heads, hd), dtype)
    for j in range(L):
        banks[j % 2] = banks[j % 2] + w[j][:, None] * vh[j]
    return (banks[0] + banks[1]).reshape(1, heads * hd)


# ---- the host's int8 LM head ----

def head_logits(h: np.ndarray, rows_int8: np.ndarray, row_scale: np.ndarray, rounding: str = "even") -> np.ndarray:
    """The host's LM head: the final hidden state quantized per token like a linear's input, an
    exact int8 x int8 product, times the activation scale and each row's fp32 scale. float32."""
    a, amax = quantize(h, rounding)
    acc = exact_matmul(a, rows_int8)
    return acc.astype(np.float32) * ((amax / np.float32(ACT_MAX))[:, None] * np.asarray(row_scale, np.float32)[None])
