"""Activation quantization kernels against the NumPy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tellme.kernels import quantize, rmsnorm_quantize
from tellme.kernels import reference as ref

pytestmark = pytest.mark.kernels


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1536), (128, 2560), (3, 4097)])
def test_quantize_exact(shape, isa, threads, rng):
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(np.float32)
    q, s = quantize(x)
    q_ref, s_ref = ref.quantize(x)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)
    assert np.abs(q).max() <= 127


def test_quantize_edge_rows():
    x = np.array([[0, 0, 0], [1e-9, -1e-9, 0], [0.5, -1.0, 0.25], [3e38, -3e38, 1]], dtype=np.float32)
    q, s = quantize(x)
    q_ref, s_ref = ref.quantize(x)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(q[2], [64, -127, 32])  # 63.5 rounds half to even


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                  elements=st.floats(-1e6, 1e6, width=32)))
def test_quantize_property(x):
    q, s = quantize(x)
    q_ref, s_ref = ref.quantize(x)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)


@pytest.mark.parametrize("shape", [(1, 3), (2, 13), (4, 1536), (33, 2560)])
def test_rmsnorm_quantize(shape, isa, threads, rng):
    x = rng.standard_normal(shape).astype(np.float32) * 3
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    q, s = rmsnorm_quantize(x, gamma, 1e-5)
    q_ref, s_ref = ref.rmsnorm_quantize(x, gamma, 1e-5)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)
