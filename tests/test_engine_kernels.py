"""The engine's small native kernels against their NumPy references, bit for bit, at every ISA:
fp16 conversion (KV cache), the 8-lane dot and axpy (attention), int8 GEMV (LM head)."""

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


@pytest.mark.parametrize("n", [1, 7, 8, 64, 96, 100, 128])
def test_dot_and_axpy(isa, rng, n):
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    b16 = ref.float_to_half(b)
    assert _core.dot(a, b) == ref.lane_dot(a, b)
    assert _core.dot(a, b16) == ref.lane_dot(a, ref.half_to_float(b16))
    y = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(_core.axpy(0.37, b, y), ref.axpy(0.37, b, y))
    np.testing.assert_array_equal(_core.axpy(0.37, b16, y), ref.axpy(0.37, ref.half_to_float(b16), y))


@pytest.mark.parametrize("k", [1, 31, 32, 64, 100, 1536])
def test_int8_gemv(isa, rng, k):
    rows = rng.integers(-127, 128, size=(37, k), dtype=np.int8)
    x = rng.integers(-127, 128, size=k, dtype=np.int8)
    np.testing.assert_array_equal(_core.int8_gemv(rows, x), ref.int8_gemv(rows, x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="b has shape"):
        _core.dot(np.zeros(8, np.float32), np.zeros(7, np.float32))
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        _core.int8_gemv(np.zeros((2, 3), np.int8), np.array([1, -128, 0], np.int8))
    with pytest.raises(ValueError, match="rows has shape"):
        _core.int8_gemv(np.zeros((2, 4), np.int8), np.zeros(3, np.int8))
