"""Weight packing: exact round trips, padding, and the density of the TLMM layout."""

import numpy as np
import pytest

from tellme.kernels import TernaryWeights, absmean_ternary, layout

from tests.helpers import random_ternary


@pytest.mark.parametrize("shape", [(1, 1), (17, 7), (33, 25), (64, 96), (100, 4097)])
def test_round_trip(shape, rng):
    w = random_ternary(rng, *shape)
    tiles, neg = layout.pack_tlmm(w)
    np.testing.assert_array_equal(layout.unpack_tlmm(tiles, *shape), w)
    np.testing.assert_array_equal(layout.unpack_i2(layout.pack_i2(w), *shape), w)
    assert neg[: shape[0]].tolist() == [
        sum(1 for g in range(0, shape[1], 3) if next((v for v in w[r, g:g + 3] if v), 0) < 0)
        for r in range(shape[0])
    ]


def test_every_group_pattern_round_trips():
    patterns = np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], np.int8)
    w = patterns.reshape(1, 81).repeat(32, axis=0)
    tiles, _ = layout.pack_tlmm(w)
    np.testing.assert_array_equal(layout.unpack_tlmm(tiles, 32, 81), w)


@pytest.mark.parametrize("shape", [(1536, 1536), (4096, 1536), (1536, 4096), (2560, 2560),
                                   (640, 2560), (6912, 2560), (2560, 6912), (8640, 3200)])
def test_tlmm_density_on_model_shapes(shape, rng):
    packed = TernaryWeights.pack(random_ternary(rng, *shape), 1.0, "tlmm")
    assert packed.bits_per_weight <= 1.75
    assert TernaryWeights.pack(random_ternary(rng, *shape), 1.0, "i2").bits_per_weight <= 2.1


def test_absmean_ternary_matches_bitnet(rng):
    w = rng.standard_normal((64, 96)).astype(np.float32)
    t, scale = absmean_ternary(w)
    assert scale == pytest.approx(float(np.abs(w).mean()))
    np.testing.assert_array_equal(t, np.clip(np.rint(w / np.float32(scale)), -1, 1))
    assert set(np.unique(t)) <= {-1, 0, 1}


def test_default_kernel_policy():
    from tellme.kernels import DEFAULT_KERNEL
    assert DEFAULT_KERNEL == "i2"  # every ISA and shape (docs/kernels.md)
    assert TernaryWeights.pack(np.ones((2, 3), np.int8)).kernel == DEFAULT_KERNEL
    assert TernaryWeights.pack(np.ones((6912, 3), np.int8), kernel="auto").kernel == DEFAULT_KERNEL
