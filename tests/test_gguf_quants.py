"""GGUF tensor encodings: tellme's codecs against the gguf library and against bitnet.cpp's I2_S
layout written out as a loop; TQ2_0 and I2_S carry the same codes in a different bit order."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants

from tellme.formats.gguf_quants import (I2_S, dequantize, pack_i2s, quantize_ternary, ternary_from_values,
                                        unpack_i2s)

from tests.helpers import i2s_by_loop


def ternary(rows=8, cols=512, seed=0):
    return np.random.default_rng(seed).integers(-1, 2, size=(rows, cols)).astype(np.int8)


def test_i2s_layout_and_round_trip():
    t = ternary(4, 256)
    packed = pack_i2s(t, 0.37)
    assert np.array_equal(packed, i2s_by_loop(t, 0.37))
    back, scale = unpack_i2s(packed, t.shape)
    assert np.array_equal(back, t) and scale == np.float32(0.37)


def test_i2_rows_are_i2s_bytes():
    """tellme's i2 codes are I2_S's bytes, row for row, where the shape needs no padding: what lets
    a GGUF I2_S tensor be used in place."""
    from tellme.kernels import layout

    t = ternary(64, 512, seed=3)
    assert np.array_equal(layout.pack_i2(t).reshape(-1), pack_i2s(t, 1.0)[:t.size // 4])


@pytest.mark.parametrize("qtype", [Q.TQ1_0, Q.TQ2_0, I2_S])
@pytest.mark.parametrize("scale", [0.25, 0.0123])  # 0.0123 is not an fp16 value: kept aside, exactly
def test_ternary_types_are_lossless(qtype, scale):
    t = ternary()
    raw, rest = quantize_ternary(t, scale, qtype)
    values = dequantize(raw.reshape(-1), int(qtype), t.shape)
    if qtype != I2_S:  # the library's own decoding agrees
        assert np.array_equal(values, quants.dequantize(raw, qtype).reshape(t.shape))
    back, s = ternary_from_values(values)
    assert np.array_equal(back, t) and np.float32(s) * np.float32(rest) == np.float32(scale)


def test_tq2_0_and_i2s_differ_only_in_bit_order():
    t = ternary(2, 256)
    tq2, _ = quantize_ternary(t, 1.0, Q.TQ2_0)
    i2s = pack_i2s(t, 1.0)
    codes_tq2 = tq2.reshape(-1, 66)[:, :64].reshape(-1, 32)          # per 128 weights: 32 bytes
    codes_i2s = i2s[: t.size // 4].reshape(-1, 32)
    swap = np.zeros(256, dtype=np.uint8)                              # reverse the four 2-bit fields
    for b in range(256):
        swap[b] = sum(((b >> (2 * k)) & 3) << (6 - 2 * k) for k in range(4))
    assert np.array_equal(swap[codes_tq2], codes_i2s)


def test_not_ternary_is_refused():
    values = np.array([[0.5, -0.5, 0.0, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="not ternary"):
        ternary_from_values(values)
    bad = pack_i2s(ternary(1, 128), 1.0)
    bad[0] = 0xFF
    with pytest.raises(ValueError, match="code 3"):
        unpack_i2s(bad, (1, 128))
