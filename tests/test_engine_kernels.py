"""The engine's small native kernels against their NumPy references, bit for bit, at every ISA:
fp16 conversion (KV cache), the 8-lane dots and axpys (attention), int8 GEMM (LM head)."""

import numpy as np
import pytest

from tellme import _core
from tellme.kernels import reference as ref

pytestmark = pytest.mark.kernels


def special_floats(rng, n):
    x = (rng.standard_normal(n) * np.float32(10.0) ** rng.integers(-9, 6, n)).astype(np.float32)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.9, 65520, 6e-8, 2.98e-8, 3e-8, 1e-40], np.float32)
    return np.concatenate([x, edge])


def test_float_to_half(rng):
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


@pytest.mark.parametrize("n", [1, 7, 8, 64, 96, 100, 128, 200])
@pytest.mark.parametrize("count", [1, 3, 4, 9])
def test_dots_and_axpys(isa, rng, n, count):
    q = rng.standard_normal(n).astype(np.float32)
    rows = rng.standard_normal((count, n)).astype(np.float32)
    rows16 = ref.float_to_half(rows)
    np.testing.assert_array_equal(_core.dots(q, rows), [ref.lane_dot(q, r) for r in rows])
    np.testing.assert_array_equal(_core.dots(q, rows16), [ref.lane_dot(q, r) for r in ref.half_to_float(rows16)])
    p = rng.random(count).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    want, want16 = y, y
    for j in range(count):  # in order: each row's products rounded, then added
        want = ref.axpy(p[j], rows[j], want)
        want16 = ref.axpy(p[j], ref.half_to_float(rows16[j]), want16)
    np.testing.assert_array_equal(_core.axpys(p, rows, y), want)
    np.testing.assert_array_equal(_core.axpys(p, rows16, y), want16)


@pytest.mark.parametrize("k", [1, 31, 32, 64, 100, 200, 1536])
@pytest.mark.parametrize("tokens", [1, 3, 4, 9])
def test_int8_gemm(isa, rng, k, tokens):
    rows = rng.integers(-127, 128, size=(37, k), dtype=np.int8)
    x = rng.integers(-127, 128, size=(tokens, k), dtype=np.int8)
    np.testing.assert_array_equal(_core.int8_gemm(rows, x), ref.int8_gemm(rows, x))


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


def test_int8_gemm_extremes(isa):
    """The largest sums of either sign, where an offset or a pair sum could overflow."""
    k = 4096
    for w, v in ((127, 127), (127, -127), (-128, 127), (-128, -127)):
        rows = np.full((5, k), w, np.int8)
        x = np.full((2, k), v, np.int8)
        np.testing.assert_array_equal(_core.int8_gemm(rows, x), ref.int8_gemm(rows, x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rows has shape"):
        _core.dots(np.zeros(8, np.float32), np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        _core.int8_gemm(np.zeros((2, 3), np.int8), np.array([[1, -128, 0]], np.int8))
    with pytest.raises(ValueError, match="rows has shape"):
        _core.int8_gemm(np.zeros((2, 4), np.int8), np.zeros((1, 3), np.int8))


def test_has_code_3_against_the_layout_reference(rng):
    from tellme.kernels import layout

    clean = rng.choice(np.array([0x00, 0x55, 0xAA, 0x16, 0x94], np.uint8), size=(300, 5000))  # codes 0-2 only
    assert not _core.has_code_3(clean) and not layout.i2_has_code_3(clean)
    for at in [(0, 0), (150, 2500), (299, 4999)]:  # first byte, a middle chunk, the last byte
        for field in range(4):
            bad = clean.copy()
            bad[at] |= 3 << (2 * field)
            assert _core.has_code_3(bad) and layout.i2_has_code_3(bad), (at, field)
