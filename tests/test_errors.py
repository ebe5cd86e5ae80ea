"""Bad input gets a clear Python exception naming what is wrong, never a crash."""

import numpy as np
import pytest

import tellme
from tellme import _core
from tellme.kernels import TernaryWeights, quantize, rmsnorm_quantize

pytestmark = pytest.mark.kernels


@pytest.fixture
def tl():
    w = np.ones((40, 50), np.int8)
    return TernaryWeights.pack(w, 1.0, "tlmm")


@pytest.fixture
def i2():
    return TernaryWeights.pack(np.ones((40, 50), np.int8), 1.0, "i2")


Q = np.zeros((3, 50), np.int8)


def test_tlmm_boundary_checks(tl):
    neg = tl.neg_count
    with pytest.raises(TypeError, match="tiles must have dtype uint8"):
        _core.tlmm_matmul_int(tl.data.astype(np.int16), neg, 40, 50, Q)
    with pytest.raises(ValueError, match="tiles has shape"):
        _core.tlmm_matmul_int(tl.data[:, :1], neg, 40, 50, Q)
    with pytest.raises(ValueError, match="tiles has shape"):
        _core.tlmm_matmul_int(tl.data, neg, 80, 50, Q)            # weights do not match out_features
    with pytest.raises(ValueError, match="neg_count has shape"):
        _core.tlmm_matmul_int(tl.data, neg[:5], 40, 50, Q)
    with pytest.raises(TypeError, match="neg_count must have dtype int32"):
        _core.tlmm_matmul_int(tl.data, neg.astype(np.int64), 40, 50, Q)
    with pytest.raises(ValueError, match="must be positive"):
        _core.tlmm_matmul_int(tl.data, neg, 0, 50, Q)


@pytest.mark.parametrize("kernel", ["tlmm", "i2"])
def test_activation_checks(kernel, tl, i2):
    w = tl if kernel == "tlmm" else i2
    with pytest.raises(ValueError, match=r"activations has shape \(3, 49\)"):
        w.matmul_int(np.zeros((3, 49), np.int8))
    with pytest.raises(TypeError, match="activations must have dtype int8"):
        w.matmul_int(np.zeros((3, 50), np.float32))
    with pytest.raises(ValueError, match="activations must be 2-D"):
        w.matmul_int(np.zeros(50, np.int8))
    with pytest.raises(ValueError, match="C-contiguous"):
        w.matmul_int(np.zeros((3, 100), np.int8)[:, ::2])
    with pytest.raises(ValueError, match="at least one token"):
        w.matmul_int(np.zeros((0, 50), np.int8))
    with pytest.raises(ValueError, match=r"act_scale has shape \(2,\)"):
        w.matmul(Q, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="act_scale must have dtype float32"):
        w.matmul(Q, np.ones(3, np.float64))


def test_i2_boundary_checks(i2):
    with pytest.raises(ValueError, match="codes has shape"):
        _core.i2_matmul_int(i2.data[:, :10], 40, 50, Q)
    with pytest.raises(ValueError, match="codes has shape"):
        _core.i2_matmul_int(i2.data, 40, 300, np.zeros((1, 300), np.int8))


def test_read_only_arrays_are_accepted(tl):
    q = Q.copy()
    q.flags.writeable = False
    data = tl.data.copy()
    data.flags.writeable = False
    assert _core.tlmm_matmul_int(data, tl.neg_count, 40, 50, q).shape == (3, 40)


def test_quantize_checks():
    with pytest.raises(ValueError, match="x must be 2-D"):
        quantize(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="x row 1 contains NaN or Inf"):
        quantize(np.array([[1, 2], [np.nan, 1]], np.float32))
    with pytest.raises(ValueError, match="x row 0 contains NaN or Inf"):
        quantize(np.array([[np.inf, 2]], np.float32))
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\)"):
        rmsnorm_quantize(np.ones((2, 4), np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        rmsnorm_quantize(np.ones((2, 4), np.float32), np.ones(4, np.float32), eps=-1.0)
    with pytest.raises(TypeError, match="x must have dtype float32"):
        _core.quantize(np.ones((2, 2), np.float64))


def test_pack_checks():
    with pytest.raises(ValueError, match=r"found 2 at \[1, 0\]"):
        TernaryWeights.pack(np.array([[1, 0], [2, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        TernaryWeights.pack(np.ones(5, np.int8))
    with pytest.raises(ValueError, match="unknown kernel 'fast'"):
        TernaryWeights.pack(np.ones((2, 2), np.int8), kernel="fast")
    with pytest.raises(ValueError, match="scale must be finite"):
        TernaryWeights.pack(np.ones((2, 2), np.int8), scale=float("nan"))


def test_runtime_checks():
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'"):
        tellme.set_isa("sse9")
    if "avx512" not in tellme.runtime.available_isas():
        with pytest.raises(ValueError, match="'avx512' is not available"):
            tellme.set_isa("avx512")
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            tellme.set_num_threads(bad)
    with pytest.raises(ValueError, match="at least one weight copy"):
        _core.time_matmul("tlmm", [], np.zeros(1, np.int32), 1, 1, Q, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("at", [0, 7, 8, 2559, 2562])
def test_non_finite_found_anywhere_in_a_row(bad, at):
    """The vectorised max/NaN scan covers the 8-lane body and the tail alike."""
    x = np.ones((3, 2563), np.float32)
    x[1, at] = bad
    with pytest.raises(ValueError, match="x row 1 contains NaN or Inf"):
        quantize(x)
    with pytest.raises(ValueError, match="row 1"):
        rmsnorm_quantize(x, np.ones(2563, np.float32))
    x[1, at] = -3e38  # the largest finite magnitudes are fine
    q, s = quantize(x)
    assert q[1, at] == -127 and s[1] == np.float32(3e38) / 127
