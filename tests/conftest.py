import numpy as np
import pytest

import tellme
from tellme.runtime import available_isas


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test once per instruction set level this machine (or build) can run."""
    previous = tellme.get_isa()
    tellme.set_isa(request.param)
    yield request.param
    tellme.set_isa(previous)


@pytest.fixture(params=[1, 2])
def threads(request):
    previous = tellme.get_num_threads()
    tellme.set_num_threads(request.param)
    yield request.param
    tellme.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_ternary(rng, out_features, in_features, zero_fraction=0.3):
    w = rng.integers(-1, 2, size=(out_features, in_features)).astype(np.int8)
    w[rng.random(w.shape) < zero_fraction] = 0
    return w


def random_int8(rng, tokens, in_features):
    """Full int8 range, -128 included: the kernels must be exact for any int8 input."""
    return rng.integers(-128, 128, size=(tokens, in_features)).astype(np.int8)
