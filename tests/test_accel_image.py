"""The TeLLMe v2 DDR weight image: written by `tellme convert --type tellme-v2`, its beats checked
bit by bit against the published layout, and decoded back to the same ternary weights."""

import json

import numpy as np
import pytest

from tellme.accel import image
from tellme.accel import numerics as nm
from tellme.cli import main
from tellme.config import ModelConfig
from tellme.errors import FormatError
from tellme.packed import PackedModel

from .helpers import SyntheticReader


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    c = ModelConfig(architecture="bitnet-1bitllm", hidden=1536, intermediate=4096, layers=2, heads=16, kv_heads=16,
                    head_dim=96, vocab=300, context=64, eps=1e-5, activation="silu", sub_norms=True,
                    tied_embeddings=True, rope_theta=10000.0)
    d = tmp_path_factory.mktemp("img")
    packed = PackedModel.pack(SyntheticReader(c, seed=5), head="int8")
    packed.save(d / "model.safetensors")
    assert main(["convert", str(d / "model.safetensors"), str(d / "image"), "--type", "tellme-v2"]) == 0
    return packed, d / "image"


def test_round_trip_bit_for_bit(written):
    packed, out = written
    back = image.read(out)
    c = packed.config
    for layer in range(c.layers):
        for name in image.LINEARS:
            assert np.array_equal(back["linears"][layer, name], packed.linear(layer, name).ternary()), (layer, name)
        for name in c.norm_names():
            assert np.array_equal(back["norms"][layer, name], packed.norm(layer, name).astype(np.float16))
    assert np.array_equal(back["final_norm"], packed.final_norm.astype(np.float16))
    assert np.array_equal(back["scales"][1], [packed.linear(1, n).scale for n in image.LINEARS])


def _beat_by_definition(packed, layer, region, block, beat):
    """One 768-bit beat as a Python integer, from the layout's words alone."""
    name = region.rstrip("012")
    slot = int(region[-1]) if region[-1].isdigit() else 0
    t = packed.linear(layer, name).ternary()
    value = 0
    for v in range(5):
        row = 5 * beat + v + (1536 * slot if name in ("up", "gate") else 0)
        blk = block + (19 * slot if name == "down" else 0)
        for g in range(28):
            w = np.zeros(3, np.int8)
            if row < t.shape[0]:
                cols = t[row, 84 * blk + 3 * g: 84 * blk + 3 * g + 3]
                w[:len(cols)] = cols
            index = next(i for i, p in enumerate(nm.PATTERNS) if tuple(p) == tuple(w))
            value |= index << (140 * v + 5 * g)
    return value


def test_beats_follow_the_published_layout(written):
    packed, out = written
    words = [np.fromfile(out / f"weights_{p}.bin", np.uint8).reshape(2, 13, 19, 308, 32) for p in image.PORTS]
    for layer, region, block, beat in [(0, "q", 0, 0), (1, "k", 18, 307), (0, "up2", 3, 100), (1, "down2", 10, 5),
                                       (0, "down2", 11, 0), (1, "gate1", 7, 200)]:
        r = image.REGIONS.index(region)
        got = sum(int.from_bytes(words[p][layer, r, block, beat].tobytes(), "little") << (256 * p) for p in range(3))
        want = _beat_by_definition(packed, layer, region, block, beat)
        assert got & ((1 << 700) - 1) == want, (layer, region, block, beat)
        assert got >> 716 == 0
    # norms: beat i of a linear's load carries element i; o carries the attention sub-norm
    r = image.REGIONS.index("o")
    i = 400  # block 1, beat 92 of [19][308]
    half = int.from_bytes(words[2][0, r, 1, 92].tobytes(), "little") >> (700 - 512) & 0xFFFF
    assert np.uint16(half).view(np.float16) == np.float16(packed.norm(0, "attn_sub_norm")[i])


def test_host_tables(written):
    packed, out = written
    m = json.loads((out / "manifest.json").read_text())
    assert m["words_per_port"] == [2, 13, 19, 308]
    assert np.load(out / m["host"]["embedding"]).dtype == np.float16
    head = np.load(out / m["host"]["lm_head"])
    assert head.dtype == np.int8 and np.array_equal(head, packed.rows("lm_head").q)
    assert np.load(out / m["host"]["rope_cos"]).shape == (3000, 48)


def test_corrupt_images_are_refused(written, tmp_path):
    _, out = written
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    raw = bytearray((bad / "weights_hp3.bin").read_bytes())
    raw[31] |= 0x80  # bit 767: unused
    (bad / "weights_hp3.bin").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="unused"):
        image.read(bad)
    (bad / "weights_hp1.bin").write_bytes(b"\0" * 10)
    with pytest.raises(FormatError, match="expected"):
        image.read(bad)


def test_a_model_that_does_not_fit(tmp_path, capsys):
    assert main(["convert", "default", str(tmp_path / "img"), "--type", "tellme-v2"]) == 1
    err = capsys.readouterr().err
    assert "cannot hold this model" in err and "hidden 256" in err and "accel explore" in err
    assert not (tmp_path / "img").exists() and not (tmp_path / "img.partial").exists()
