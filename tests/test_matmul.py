"""Native ternary matmul kernels against the NumPy references, at every ISA."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tellme
from tellme.kernels import KERNELS, TernaryWeights, quantize
from tellme.kernels import reference as ref

from tests.helpers import random_int8, random_ternary

pytestmark = pytest.mark.kernels

INS = (3, 7, 96, 1536, 4096, 4097)
OUTS = (1, 17, 1536, 4096)
TOKENS = (1, 2, 7, 128)

# Every `in` with small outputs, every `out` at a model width, every token count at a model shape.
SHAPES = sorted(
    {(o, i, t) for i in INS for o in (1, 17) for t in (1, 7)}
    | {(o, i, t) for o in OUTS for i in (96, 1536) for t in (1, 2)}
    | {(1536, 1536, t) for t in TOKENS}
    | {(17, 4097, 128), (4096, 4097, 2)}
)
LARGE = [(4096, 4097, 128), (4096, 1536, 128)]


def check_exact(kernel, out_features, in_features, tokens, rng):
    w = random_ternary(rng, out_features, in_features)
    q = random_int8(rng, tokens, in_features)
    packed = TernaryWeights.pack(w, 0.25, kernel)
    np.testing.assert_array_equal(packed.matmul_int(q), ref.ternary_matmul(w, q))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_integer_accumulators_exact(kernel, shape, isa, threads, rng):
    check_exact(kernel, *shape, rng)


@pytest.mark.large
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", LARGE, ids=lambda s: "x".join(map(str, s)))
def test_large_shapes_exact(kernel, shape, isa, rng):
    check_exact(kernel, *shape, rng)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("weight, activation", [(1, -128), (1, 127), (-1, -128), (-1, 127)])
def test_largest_sums_exact(kernel, weight, activation, isa):
    """Every product at its largest and of one sign, over a K of several int16 widening periods
    (the 2B-4T down projection's 6912, and more): the sums where a kernel's int16 stage would
    overflow, as bitnet.cpp's NEON kernel did."""
    in_features = 6912 + 256 + 3
    w = np.full((33, in_features), weight, np.int8)
    q = np.full((5, in_features), activation, np.int8)
    packed = TernaryWeights.pack(w, 1.0, kernel)
    np.testing.assert_array_equal(packed.matmul_int(q), ref.ternary_matmul(w, q))


@pytest.mark.parametrize("kernel", KERNELS)
def test_native_matches_layout_references(kernel, isa, rng):
    """The layout-level references (table lookup; code multiply-add) agree with the plain math too."""
    w = random_ternary(rng, 70, 100)
    q = random_int8(rng, 3, 100)
    packed = TernaryWeights.pack(w, 1.0, kernel)
    by_layout = (ref.tlmm(packed.data, 70, 100, q) if kernel == "tlmm"
                 else ref.i2_matmul(packed.data, 70, 100, q))
    np.testing.assert_array_equal(by_layout, ref.ternary_matmul(w, q))
    np.testing.assert_array_equal(packed.matmul_int(q), by_layout)


@pytest.mark.parametrize("kernel", KERNELS)
def test_dequantized_output(kernel, isa, rng):
    w = random_ternary(rng, 300, 1000)
    x = rng.standard_normal((5, 1000)).astype(np.float32)
    q, s = quantize(x)
    packed = TernaryWeights.pack(w, 0.037, kernel)
    expected = ref.dequantize(ref.ternary_matmul(w, q), s, 0.037)
    # identical fp32 operations in the same order: equal, not just close
    np.testing.assert_array_equal(packed.matmul(q, s), expected)
    np.testing.assert_array_equal(packed(x), expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_same_result_for_any_thread_count(kernel, isa, rng):
    w = random_ternary(rng, 640, 2560)
    q = random_int8(rng, 9, 2560)
    packed = TernaryWeights.pack(w, 1.0, kernel)
    previous = tellme.get_num_threads()
    results = []
    for n in (1, 2, 3):
        tellme.set_num_threads(n)
        results.append(packed.matmul_int(q))
    tellme.set_num_threads(previous)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_all_levels_agree(rng):
    """Bit-identical results across every level this machine can run, in one test."""
    w = random_ternary(rng, 100, 500)
    q = random_int8(rng, 4, 500)
    previous = tellme.get_isa()
    outputs = {}
    for level in tellme.runtime.available_isas():
        tellme.set_isa(level)
        for kernel in KERNELS:
            outputs[level, kernel] = TernaryWeights.pack(w, 1.0, kernel).matmul_int(q)
    tellme.set_isa(previous)
    first = next(iter(outputs.values()))
    for key, value in outputs.items():
        np.testing.assert_array_equal(value, first, err_msg=str(key))


@settings(max_examples=60, deadline=None)
@given(
    out_features=st.integers(1, 80),
    in_features=st.integers(1, 300),
    tokens=st.integers(1, 6),
    zero_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    kernel=st.sampled_from(KERNELS),
    level=st.sampled_from(tellme.runtime.available_isas()),
)
def test_property_random_small_shapes(out_features, in_features, tokens, zero_fraction, seed, kernel, level):
    rng = np.random.default_rng(seed)
    w = random_ternary(rng, out_features, in_features, zero_fraction)
    q = random_int8(rng, tokens, in_features)
    previous = tellme.get_isa()
    tellme.set_isa(level)
    try:
        got = TernaryWeights.pack(w, 1.0, kernel).matmul_int(q)
    finally:
        tellme.set_isa(previous)
    np.testing.assert_array_equal(got, ref.ternary_matmul(w, q))


GROUPED = [(64, 33, 256, 1), (128, 70, 384, 2), (128, 300, 1024, 7), (64, 1536, 1536, 17), (32, 40, 96, 3)]


@pytest.mark.parametrize("group, out_features, in_features, tokens", GROUPED, ids=lambda v: str(v))
def test_group_scales_exact(group, out_features, in_features, tokens, isa, threads, rng):
    """Bonsai's layout: one fp16 scale per `group` weights along a row. Integer sums per group, scaled
    and added in fp32 in group order: bit for bit the NumPy reference, at every ISA and thread count."""
    w = random_ternary(rng, out_features, in_features)
    scales = rng.uniform(0.01, 0.1, (out_features, in_features // group)).astype(np.float16).astype(np.float32)
    q, s = quantize(rng.standard_normal((tokens, in_features)).astype(np.float32))
    packed = TernaryWeights.pack(w, scales, "i2")
    assert packed.group == group
    expected = ref.grouped_matmul(w, scales, q, s)
    np.testing.assert_array_equal(packed.matmul(q, s), expected)
    # the extreme sums: a group of +1 weights against activations of 127
    w[:] = 1
    q[:] = 127
    np.testing.assert_array_equal(TernaryWeights.pack(w, scales, "i2").matmul(q, s), ref.grouped_matmul(w, scales, q, s))
    # one scale for every group is the plain kernel's answer up to float order; same ternary sums
    ones = np.full_like(scales, 0.5)
    np.testing.assert_allclose(TernaryWeights.pack(w, ones, "i2").matmul(q, s),
                               TernaryWeights.pack(w, 0.5, "i2").matmul(q, s), rtol=1e-6)


def test_group_scales_refused_where_they_cannot_run(rng):
    w = random_ternary(rng, 8, 256)
    with pytest.raises(ValueError, match="i2 kernel only"):
        TernaryWeights.pack(w, np.ones((8, 2), np.float32), "tlmm")
    with pytest.raises(ValueError, match="groups of a multiple of 32"):
        TernaryWeights.pack(w, np.ones((8, 16), np.float32), "i2")  # groups of 16
    with pytest.raises(ValueError, match="no single integer result"):
        TernaryWeights.pack(w, np.ones((8, 2), np.float32), "i2").matmul_int(random_int8(rng, 1, 256))
