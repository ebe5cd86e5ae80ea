import numpy as np
import pytest

import tellme
from tellme.runtime import available_isas


@pytest.fixture(params=available_isas())
def isa(request):
    """Runs the test once per ISA this machine (or build) can run."""
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
