"""The engine's small native kernels against their NumPy references, bit for bit, at every ISA:
fp16 conversion (KV cache), the 8-lane dots and axpys (attention), int8 GEMM (LM head)."""

import numpy as np
import pytest

from tellme import _core
from tellme.kernels import layout
from tellme.kernels import reference as ref

pytestmark = pytest.mark.kernels


def special_floats(rng, n):
    x = (rng.standard_normal(n) * np.float32(10.0) ** rng.integers(-9, 6, n)).astype(np.float32)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.9, 65520, 6e-8, 2.98e-8, 3e-8, 1e-40], np.float32)
    return np.concatenate([x, edge])


def test_float_to_half(isa, rng):
    x = special_floats(rng, 20000)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(_core.float_to_half(x), ref.float_to_half(x))
    nan = _core.float_to_half(np.array([np.nan], np.float32)).view(np.float16)
    assert np.isnan(nan[0])


def test_half_to_float_every_value(isa):
    h = np.arange(65536, dtype=np.uint16)
    ours, theirs = _core.half_to_float(h), ref.half_to_float(h)
    finite = ~np.isnan(theirs)
    np.testing.assert_array_equal(ours[finite], theirs[finite])
    assert np.isnan(ours[~finite]).all()


@pytest.mark.parametrize("n", [1, 7, 8, 40, 64, 96, 100, 128, 200])
@pytest.mark.parametrize("count", [1, 3, 4, 8, 9, 13])
@pytest.mark.parametrize("queries", [1, 2, 4, 7])
def test_dots_and_axpys(isa, rng, n, count, queries):
    """Each query's bits are the plain loop's, one query at a time or several (a GQA group's heads
    against one chunk: 4 in 2B-4T; 7 covers blocks of 4 and 2 and one left over)."""
    q = rng.standard_normal((queries, n)).astype(np.float32)
    rows = rng.standard_normal((count, n)).astype(np.float32)
    rows16 = ref.float_to_half(rows)
    rows8 = rng.integers(-127, 128, (count, n), dtype=np.int8)  # the q8 KV cache's values
    np.testing.assert_array_equal(_core.dots(q, rows), [[ref.lane_dot(qh, r) for r in rows] for qh in q])
    np.testing.assert_array_equal(_core.dots(q, rows16),
                                  [[ref.lane_dot(qh, r) for r in ref.half_to_float(rows16)] for qh in q])
    p = rng.random((queries, count)).astype(np.float32)
    y = rng.standard_normal((queries, n)).astype(np.float32)
    for h in range(queries):
        want, want16, want8 = y[h], y[h], y[h]
        for j in range(count):  # in order: each row's products rounded, then added
            want = ref.axpy(p[h, j], rows[j], want)
            want16 = ref.axpy(p[h, j], ref.half_to_float(rows16[j]), want16)
            want8 = ref.axpy(p[h, j], rows8[j], want8)
        np.testing.assert_array_equal(_core.axpys(p, rows, y)[h], want)
        np.testing.assert_array_equal(_core.axpys(p, rows16, y)[h], want16)
        np.testing.assert_array_equal(_core.axpys(p, rows8, y)[h], want8)


@pytest.mark.parametrize("n", [1, 5, 8, 13, 63, 64])
def test_softmax_weights(rng, n):
    """Attention's softmax weights of a chunk (8 wide where the CPU has AVX2) are the plain loop's
    bits, and e^(x - max) to within a few ulp of float64, 0 below e^-69."""
    for spread in (1.0, 30.0, 600.0):  # at 600 most weights fall below e^-69
        s = (rng.standard_normal(n) * spread).astype(np.float32)
        fast, m, total = _core.softmax_weights(s, 0.125)
        plain, m_plain, total_plain = _core.softmax_weights(s, 0.125, fast=False)
        np.testing.assert_array_equal(fast, plain)
        assert (m, total) == (m_plain, total_plain)
        x = s * np.float32(0.125)
        assert m == x.max()
        want = np.exp(x.astype(np.float64) - m)
        want[x - m < -69] = 0
        np.testing.assert_allclose(plain, want, rtol=2e-6, atol=0)
        assert total == pytest.approx(want.sum(), rel=1e-5)


@pytest.mark.parametrize("k", [1, 24, 31, 32, 64, 96, 100, 128, 200, 1536])
@pytest.mark.parametrize("tokens", [1, 3, 4, 9])
def test_int8_gemm(isa, rng, k, tokens):
    rows = rng.integers(-127, 128, size=(37, k), dtype=np.int8)
    x = rng.integers(-127, 128, size=(tokens, k), dtype=np.int8)
    np.testing.assert_array_equal(_core.int8_gemm(rows, x), ref.int8_gemm(rows, x))


@pytest.mark.parametrize("k", [1, 31, 96, 128, 200, 1536])
@pytest.mark.parametrize("tokens", [1, 3, 4, 9])  # the AVX-512 tiles: 4 tokens, then 1 or 2 or 3
def test_int6_gemm(isa, rng, k, tokens):
    rows = layout.pack_int6(rng.integers(-31, 32, size=(37, k), dtype=np.int8))
    x = rng.integers(-127, 128, size=(tokens, k), dtype=np.int8)
    np.testing.assert_array_equal(_core.int6_gemm(rows, x), ref.int6_gemm(rows, x))


def test_int6_gemm_extremes(isa):
    """The largest sums of either sign (u = 63 or 1 against +-127), where int16 pairs could overflow;
    and every stored byte (u in 0..63, beyond the packer's range) read as the layout says."""
    k = 4096
    for w, v in ((31, 127), (31, -127), (-31, 127), (-31, -127)):
        rows = layout.pack_int6(np.full((5, k), w, np.int8))
        x = np.full((6, k), v, np.int8)
        np.testing.assert_array_equal(_core.int6_gemm(rows, x), ref.int6_gemm(rows, x))
    any_bytes = np.random.default_rng(0).integers(0, 256, size=(7, 3 * 96), dtype=np.uint8)
    x = np.random.default_rng(1).integers(-127, 128, size=(2, 384), dtype=np.int8)
    np.testing.assert_array_equal(_core.int6_gemm(any_bytes, x), ref.int6_gemm(any_bytes, x))


def test_int6_layout_round_trip(rng):
    for k in (1, 127, 128, 129, 2560):
        q = rng.integers(-31, 32, size=(3, k), dtype=np.int8)
        assert layout.pack_int6(q).shape == (3, layout.int6_row_bytes(k))
        np.testing.assert_array_equal(layout.unpack_int6(layout.pack_int6(q), k), q)
    e = rng.standard_normal((4, 300)).astype(np.float32)
    packed, scale = layout.quantize_int6(e)
    q = layout.unpack_int6(packed, 300)
    assert np.abs(q).max() == 31  # each row's absmax lands on the end of the range
    np.testing.assert_allclose(q * scale[:, None], e, atol=scale.max() / 2 + 1e-7)
    with pytest.raises(ValueError, match="6-bit rows"):
        layout.pack_int6(np.full((1, 4), 32, np.int8))


def test_int6_quantizer_against_the_reference(rng):
    """The native quantizer (float32 and fp16 rows) gives the reference's bits, halves included."""
    for cols in (1, 96, 300, 2560):
        e = rng.standard_normal((9, cols)).astype(np.float32)
        e[0, :] = 0  # amax floored at 1e-5
        e[1, :] = np.arange(cols) % 7 - 3  # amax 3: x * 31 / 3 lands on halves only by rounding
        e[2, : min(cols, 4)] = [31.0, 0.5, -0.5, 1.5][: min(cols, 4)]  # exact halves: to even
        for x in (e, e.astype(np.float16)):
            packed, scale = _core.quantize_int6(x.view(np.uint16) if x.dtype == np.float16 else x)
            want_packed, want_scale = layout.quantize_int6(x.astype(np.float32))
            np.testing.assert_array_equal(packed, want_packed)
            np.testing.assert_array_equal(scale, want_scale)
    bad = np.ones((3, 5), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 contains NaN"):
        _core.quantize_int6(bad)


def test_activations():
    """SiLU with the epilogue's exp: within 4 ulp of float64 math (the NumPy reference model uses
    libm's); exactly -0 below -80 and x above 20. ReLU^2 exact."""
    x = np.concatenate([np.linspace(-100, 100, 200001), [0.0, -0.0, 1e-30, -1e-30, 87.5, -87.5]]).astype(np.float32)
    silu = _core.activate(x, "silu")
    x64 = x.astype(np.float64)
    want = (x64 / (1 + np.exp(-x64))).astype(np.float32)
    mid = (x >= -80) & (x <= 20)
    ulps = np.abs(silu[mid].view(np.int32).astype(np.int64) - want[mid].view(np.int32).astype(np.int64))
    assert ulps.max() <= 4, (ulps.max(), x[mid][ulps.argmax()])
    assert np.all(silu[x < -80] == 0) and np.all(np.signbit(silu[x < -80]))
    np.testing.assert_array_equal(silu[x > 20], x[x > 20])
    np.testing.assert_array_equal(_core.activate(x, "relu2"), np.square(np.maximum(x, 0)))
    with pytest.raises(ValueError, match="unsupported activation"):
        _core.activate(x, "gelu")


def test_exp_approx():
    """The e^x of SiLU and the softmax weights: within 1 ulp of float64 math on [-87, 88] (the
    softmax takes [-69, 0]), clamped outside."""
    x = np.concatenate([np.linspace(-87, 88, 400001), [0.0, -0.0, -69.0, -1e-30]]).astype(np.float32)
    ours = _core.exp_approx(x)
    want = np.exp(x.astype(np.float64)).astype(np.float32)
    ulps = np.abs(ours.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1, (ulps.max(), x[ulps.argmax()])
    np.testing.assert_array_equal(_core.exp_approx(np.array([-200, 200], np.float32)),
                                  _core.exp_approx(np.array([-87, 88], np.float32)))


def test_silu_vector_loop_matches_scalar_loop():
    """Rows shorter than 8 take the scalar loop, longer ones the vector loop (AVX2 where the CPU
    has it): the same bits for every input, NaN, infinities and the clamp edges included."""
    x = np.concatenate([np.linspace(-100, 100, 20001), [np.nan, np.inf, -np.inf, 0.0, -0.0, 87.5, -87.5,
                        88.5, -88.5, -80.0, 20.0, 1e-30, -1e-30]]).astype(np.float32)
    whole = _core.activate(x, "silu")
    one_by_one = np.concatenate([_core.activate(x[i:i + 1], "silu") for i in range(len(x))])
    np.testing.assert_array_equal(whole.view(np.int32), one_by_one.view(np.int32))


def test_int8_gemm_extremes(isa):
    """The largest sums of either sign, where an offset or a pair sum could overflow."""
    for k in (96, 4096):  # a head of the q8 KV cache, a row of the LM head
        for w, v in ((127, 127), (127, -127), (-128, 127), (-128, -127)):
            rows = np.full((5, k), w, np.int8)
            x = np.full((2, k), v, np.int8)
            np.testing.assert_array_equal(_core.int8_gemm(rows, x), ref.int8_gemm(rows, x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rows has shape"):
        _core.dots(np.zeros((1, 8), np.float32), np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="y has shape"):
        _core.axpys(np.zeros((2, 3), np.float32), np.zeros((3, 8), np.float32), np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        _core.int8_gemm(np.zeros((2, 3), np.int8), np.array([[1, -128, 0]], np.int8))
    with pytest.raises(ValueError, match="rows has shape"):
        _core.int8_gemm(np.zeros((2, 4), np.int8), np.zeros((1, 3), np.int8))
    for gemm, rows in ((_core.int8_gemm, np.zeros((2, 3), np.int8)), (_core.int6_gemm, np.zeros((2, 96), np.uint8))):
        with pytest.raises(ValueError, match="x must be 2-D"):
            gemm(rows, np.zeros(3, np.int8))
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        _core.int6_gemm(np.zeros((2, 96), np.uint8), np.array([[1, -128, 0]], np.int8))
    with pytest.raises(ValueError, match="rows has shape"):  # 3 values take one 96-byte block
        _core.int6_gemm(np.zeros((2, 95), np.uint8), np.zeros((1, 3), np.int8))


def test_has_code_3_against_the_layout_reference(rng):
    from tellme.kernels import layout

    clean = rng.choice(np.array([0x00, 0x55, 0xAA, 0x16, 0x94], np.uint8), size=(300, 5000))  # codes 0-2 only
    assert not _core.has_code_3(clean) and not layout.i2_has_code_3(clean)
    for at in [(0, 0), (150, 2500), (299, 4999)]:  # first byte, a middle chunk, the last byte
        for field in range(4):
            bad = clean.copy()
            bad[at] |= 3 << (2 * field)
            assert _core.has_code_3(bad) and layout.i2_has_code_3(bad), (at, field)
