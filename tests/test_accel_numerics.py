"""tellme.accel.numerics: each unit of the TeLLMe v2 datapath against a plain per-element
definition (Python scalars, one element at a time), and TLMM against tellme's native kernels."""

import math

import numpy as np
import pytest

from tellme.accel import numerics as nm
from tellme.errors import TellmeError
from tellme.kernels import TernaryWeights

from .helpers import random_ternary

H = np.float16


def test_patterns_are_the_published_table():
    v = np.array([3, 5, 11])  # distinct sums for every pattern
    entries = nm.PATTERNS.astype(int) @ v
    assert entries[0] == 0 and list(entries[1:4]) == [3, 5, 11]
    assert list(entries[4:10]) == [8, -2, 14, -8, 16, -6]
    assert list(entries[10:14]) == [19, -3, 9, 13]
    assert list(entries[14:]) == [-e for e in entries[1:14]]
    assert len({tuple(p) for p in nm.PATTERNS}) == 27


def test_indices_round_trip(rng):
    w = random_ternary(rng, 37, 170)
    idx = nm.encode_indices(w)
    assert idx.shape == (37, nm.pad_to_block(170) // 3) and idx.max() <= 26
    for r, g in [(0, 0), (5, 13), (36, 56)]:  # per element: the index names the pattern
        assert tuple(nm.PATTERNS[idx[r, g]]) == tuple(np.pad(w[r], (0, 82))[3 * g:3 * g + 3])
    assert np.array_equal(nm.decode_indices(idx, 170), w)
    bad = idx.copy()
    bad[0, 0] = 27
    with pytest.raises(TellmeError, match="27 patterns"):
        nm.decode_indices(bad, 170)


def test_tables_per_element(rng):
    a = rng.integers(-127, 128, size=(2, 84)).astype(np.int8)
    t = nm.build_tables(a)
    for tok in range(2):
        for g in (0, 17, 27):
            v = [int(x) for x in a[tok, 3 * g:3 * g + 3]]
            for i in range(27):
                assert t[tok, g, i] == sum(int(w) * x for w, x in zip(nm.PATTERNS[i], v))
    assert np.abs(t).max() < 512  # 10-bit entries
    with pytest.raises(TellmeError, match="10 bits"):
        nm.build_tables(np.full((1, 3), -128, np.int16) * 2)


@pytest.mark.kernels
def test_tlmm_is_the_integer_matmul_and_the_native_kernels(rng, isa):
    for out, k in [(48, 84), (33, 300), (64, 1536)]:
        w = random_ternary(rng, out, k)
        a = rng.integers(-127, 128, size=(5, k)).astype(np.int8)
        plain = np.array([[sum(int(x) * int(y) for x, y in zip(a[t], w[r])) for r in range(8)] for t in range(2)])
        looked = nm.tlmm_lookup(nm.encode_indices(w), a)
        fast = nm.tlmm(w, a)
        assert np.array_equal(looked[:2, :8], plain) and np.array_equal(fast, looked)
        for kernel in ("tlmm", "i2"):
            native = TernaryWeights.pack(w, 1.0, kernel).matmul_int(a)
            assert np.array_equal(native, fast), (kernel, isa)


def test_accumulator_overflow_is_reported_never_wrapped():
    # a 12-bit accumulator (range -2048..2047): 84 activations of 127 with all weights +1 reach 10,668
    w = np.ones((3, 168), np.int8)
    w[1, :] = 0
    w[1, :16] = 1  # 16 * 127 = 2032 fits
    a = np.full((1, 168), 127, np.int8)
    for f in (nm.tlmm, lambda w_, a_, bits, where: nm.tlmm_lookup(nm.encode_indices(w_), a_, bits, where)):
        with pytest.raises(nm.AccumulatorOverflow, match="12-bit TLMM accumulator overflowed"):
            f(w, a, 12, "test")
        assert f(w[1:2], a, 12, "test")[0, 0] == 2032  # at the edge: no false alarm
    assert nm.tlmm(w, a, 24)[0, 0] == 168 * 127


def test_overflow_seen_only_mid_sum():
    # the total fits, a partial sum after the first block does not: reported
    w = np.concatenate([np.ones((1, 84), np.int8), -np.ones((1, 84), np.int8)], axis=1)
    a = np.full((1, 168), 100, np.int8)
    with pytest.raises(nm.AccumulatorOverflow):
        nm.tlmm(w, a, 13)  # 8400 > 4095 after block 0; the final 0 fits


def test_quantize_per_element(rng):
    x = rng.standard_normal((3, 50)).astype(H)
    x[0, 3] = H(0.0)
    q, amax = nm.quantize(x)
    qa, _ = nm.quantize(x, "away")
    for t in range(3):
        m = max(abs(float(v)) for v in x[t])
        assert amax[t] == np.float32(m)
        for i in range(50):
            v = float(np.float32(x[t, i]) * (np.float32(127) / np.float32(m)))
            assert q[t, i] == max(-127, min(127, round(v)))  # Python's round: half to even
            assert qa[t, i] == max(-127, min(127, int(math.copysign(math.floor(abs(v) + 0.5), v))))
    # exact halves: convergent rounding goes to even, the other away from zero
    half = np.array([[127, 0.5, 2.5, -2.5, 3.5]], np.float32)  # max 127: a scale of exactly 1
    assert nm.quantize(half)[0].tolist() == [[127, 0, 2, -2, 4]]
    assert nm.quantize(half, "away")[0].tolist() == [[127, 1, 3, -3, 4]]
    assert not nm.quantize(np.zeros((1, 4), H))[0].any()


def test_dequantize_per_element():
    acc = np.array([[5, -300000]])
    y = nm.dequantize(acc, np.array([2.5], np.float32), 0.75)
    for i in range(2):
        f = np.float32(2.5) * (np.float32(0.75) / np.float32(127))
        assert y[0, i] == H(np.float32(acc[0, i]) * f)


def test_rmsnorm_per_element(rng):
    x = (rng.standard_normal((2, 21)) * 3).astype(H)
    g = rng.standard_normal(21).astype(np.float32)
    y = nm.rmsnorm(x, g, 1e-5)
    for t in range(2):
        even = odd = np.float32(0)
        for i in range(21):
            sq = np.float32(x[t, i]) * np.float32(x[t, i])
            if i % 2:
                odd = np.float32(odd + sq)
            else:
                even = np.float32(even + sq)
        ms = np.float32(np.float32(even + odd) * np.float32(1 / 21)) + np.float32(1e-5)
        r = H(np.float32(1) / np.sqrt(np.float32(ms)))
        for i in range(21):
            assert y[t, i] == H(H(x[t, i] * r) * H(g[i]))


def test_silu_table_per_element():
    table = nm.silu_table()
    assert table.shape == (64,) and table.dtype == H
    for x in [-100.0, -8.0, -7.9, -0.3, 0.0, 0.1, 3.99, 7.75, 7.99, 8.0, 50.0]:
        b = min(63, max(0, math.floor((x + 8) / 0.25)))
        c = -8 + (b + 0.5) * 0.25
        assert nm.silu(np.array([x], H))[0] == H(c / (1 + math.exp(-c))), x
    x = np.linspace(-10, 10, 101).astype(H)
    exact = nm.silu(x, table=False, dtype=np.float32)
    assert np.allclose(exact, x.astype(np.float32) / (1 + np.exp(-x.astype(np.float32))), rtol=1e-6)


def test_rope_per_element(rng):
    x = rng.standard_normal((2, 8)).astype(H)  # 2 heads of 4: pairs (0,1), (2,3)
    cos = rng.standard_normal((2, 2)).astype(H)
    sin = rng.standard_normal((2, 2)).astype(H)
    y = nm.rope(x, cos, sin)
    for t in range(2):
        for h in range(2):
            for p in range(2):
                a, b = x[t, 4 * h + 2 * p], x[t, 4 * h + 2 * p + 1]
                c, s = cos[t, p], sin[t, p]
                assert y[t, 4 * h + 2 * p] == H(H(a * c) - H(b * s))
                assert y[t, 4 * h + 2 * p + 1] == H(H(b * c) + H(a * s))


def _dot_by_loop(q, k, hd):
    blocks = []
    for b in range(0, hd, 16):
        level = [H(q[i] * k[i]) if i < hd else H(0) for i in range(b, b + 16)]
        while len(level) > 1:
            level = [H(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        blocks.append(level[0])
    total = blocks[0]
    for s in blocks[1:]:
        total = H(total + s)
    return total


def test_dot16_per_element(rng):
    for hd in (96, 40):
        q, k = rng.standard_normal(hd).astype(H), rng.standard_normal(hd).astype(H)
        assert nm.dot16(q, k) == _dot_by_loop(q, k, hd)


@pytest.mark.parametrize("n", [5, 8, 11])  # padded to 8, 8, 16 rows by the host
def test_prefill_attention_per_element(rng, n):
    heads, kvh, hd = 4, 2, 16
    q = rng.standard_normal((n, heads * hd)).astype(H)
    k = rng.standard_normal((n, kvh * hd)).astype(H)
    v = rng.standard_normal((n, kvh * hd)).astype(H)
    out = nm.prefill_attention(q, k, v, heads, kvh)
    scale = H(1 / math.sqrt(hd))
    for i in range(n):
        for h in range(heads):
            g = h // (heads // kvh)
            m, l, o = H(-np.inf), H(0), np.zeros(hd, H)
            for j in range(i, -1, -1):  # the diagonal first, then older keys
                s = H(_dot_by_loop(q[i, h * hd:(h + 1) * hd], k[j, g * hd:(g + 1) * hd], hd) * scale)
                mn = max(m, s)
                c, p = H(np.exp(H(m - mn))), H(np.exp(H(s - mn)))
                l = H(H(l * c) + p)
                o = np.array([H(H(o[d] * c) + H(p * v[j, g * hd + d])) for d in range(hd)], H)
                m = mn
            assert np.array_equal(out[i, h * hd:(h + 1) * hd], (o / l).astype(H)), (i, h)


def test_host_layout_for_rpa():
    x = np.arange(1, 12, dtype=np.float16).reshape(11, 1)  # positions 0..10
    r = nm.host_reverse(x)
    assert r.shape == (16, 1) and not r[:5].any()  # padded to 2 blocks of 8, the padding first
    assert r[5:, 0].tolist() == list(range(11, 0, -1))  # then positions 10..0


def test_decode_attention_per_element(rng):
    L, heads, hd = 7, 2, 32
    q = rng.standard_normal((1, heads * hd)).astype(H)
    k = rng.standard_normal((L, heads * hd)).astype(H)
    v = rng.standard_normal((L, heads * hd)).astype(H)
    out = nm.decode_attention(q, k, v, heads, heads)
    scale = H(1 / math.sqrt(hd))
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        s = [H(_dot_by_loop(q[0, sl], k[j, sl], hd) * scale) for j in range(L)]
        m, l = H(-np.inf), H(0)
        for j in range(L):
            mn = max(m, s[j])
            l = H(H(l * H(np.exp(H(m - mn)))) + H(np.exp(H(s[j] - mn))))
            m = mn
        banks = [np.zeros(hd, H), np.zeros(hd, H)]
        for j in range(L):
            w = H(H(np.exp(H(s[j] - m))) / l)
            banks[j % 2] = np.array([H(banks[j % 2][d] + H(w * v[j, h * hd + d])) for d in range(hd)], H)
        assert np.array_equal(out[0, sl], (banks[0] + banks[1]).astype(H)), h


def test_decode_attention_limit():
    q = np.zeros((1, 32), H)
    kv = np.zeros((1025, 32), H)
    with pytest.raises(TellmeError, match="score FIFO holds 1024"):
        nm.decode_attention(q, kv, kv, 1, 1)
    nm.decode_attention(q, kv[:1024], kv[:1024], 1, 1)


def test_head_logits_per_element(rng):
    h = rng.standard_normal((2, 40)).astype(H)
    rows = rng.integers(-127, 128, size=(6, 40)).astype(np.int8)
    scale = rng.random(6).astype(np.float32)
    y = nm.head_logits(h, rows, scale)
    a, amax = nm.quantize(h)
    for t in range(2):
        for r in range(6):
            acc = sum(int(x) * int(w) for x, w in zip(a[t], rows[r]))
            assert y[t, r] == np.float32(acc) * (np.float32(amax[t] / np.float32(127)) * scale[r])


def test_bad_numerics():
    from tellme.errors import UsageError
    for bad in (dict(rounding="up"), dict(acc_bits=8), dict(acc_bits=True), dict(acc_bits=24.5)):
        with pytest.raises(UsageError):
            nm.Numerics(**bad)


def test_exact_matmul_splits_large_sums(rng):
    a = np.full((1, 3000), 127, np.int64)
    w = np.full((2, 3000), 127, np.int64)
    assert nm.exact_matmul(a, w)[0, 0] == 127 * 127 * 3000  # past 2**24: float32 alone would round
