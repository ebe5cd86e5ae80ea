"""Bad GGUF files: each gives a FormatError naming the file and what is wrong, never a crash or a hang."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from gguf import GGUFWriter

import tellme
from tellme.cli import main as cli
from tellme.formats.gguf_file import GGUFFile
from tellme.errors import FormatError
from tests.models.checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-bad")
    make_checkpoint(root / "ckpt", "bitnet-packed", hidden=256, heads=4, kv_heads=2, intermediate=256, layers=1)
    out = {}
    for t in ("tq2_0", "i2_s"):
        out[t] = root / f"m-{t}.gguf"
        assert cli(["convert", str(root / "ckpt"), str(out[t]), "--type", t]) == 0
    return out


def tensor_entry(data: bytes, name: str) -> int:
    """Byte offset of the type field of tensor `name`'s header entry."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.index(key) + len(key)
    (n_dims,) = struct.unpack_from("<I", data, at)
    return at + 4 + 8 * n_dims


def load_bytes(tmp_path, data: bytes, name="bad.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return tellme.load(path, progress=False)


def test_truncated(files, tmp_path):
    data = files["tq2_0"].read_bytes()
    tensors = GGUFFile(files["tq2_0"]).tensors.values()
    header_end = min(t.offset for t in tensors)
    data_end = max(t.offset + t.nbytes for t in tensors)  # what follows is alignment padding
    for cut in (0, 3, 10, 30, 200, header_end // 2, header_end - 3, header_end + 100, data_end - 1):
        with pytest.raises(FormatError, match="bad.gguf") as e:
            load_bytes(tmp_path, data[:cut])
        assert any(w in str(e.value) for w in ("GGUF", "past the end", "too short")), (cut, str(e.value))


def test_unknown_type_id(files, tmp_path):
    data = bytearray(files["tq2_0"].read_bytes())
    struct.pack_into("<I", data, tensor_entry(data, "blk.0.attn_k.weight"), 99)
    with pytest.raises(FormatError, match=r"'blk.0.attn_k.weight' has unknown type id 99"):
        load_bytes(tmp_path, bytes(data))


def test_type_36_is_told_apart(files, tmp_path):
    # I2_S is found by size even when the file type does not say I2_S
    data = bytearray(files["i2_s"].read_bytes())
    at = data.index(b"general.file_type") + len(b"general.file_type") + 4
    struct.pack_into("<I", data, at, 1)
    assert load_bytes(tmp_path, bytes(data), "a.gguf").config.layers == 1
    # a TQ2_0 tensor relabelled 36 matches neither I2_S's size nor IQ4_NL_4_4's
    data = bytearray(files["tq2_0"].read_bytes())
    struct.pack_into("<I", data, tensor_entry(data, "blk.0.ffn_up.weight"), 36)
    with pytest.raises(FormatError, match="type id 36.*matches neither"):
        load_bytes(tmp_path, bytes(data))


def test_upstream_type_36(tmp_path):
    """A tensor sized as upstream ggml's IQ4_NL_4_4 (type 36 there) is named as such."""
    w = GGUFWriter(tmp_path / "iq4.gguf", "llama")
    w.add_tensor("blk.0.attn_q.weight", np.zeros(256 * 256 // 32 * 18, dtype=np.int8), raw_shape=(256, 256), raw_dtype=36)
    w.add_tensor("token_embd.weight", np.zeros((64, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(FormatError, match="IQ4_NL_4_4"):
        GGUFFile(tmp_path / "iq4.gguf")


def _one_tensor_file(path, qtype: int, nbytes: int, shape=(256, 512)):
    w = GGUFWriter(path, "bitnet-b1.58")
    w.add_tensor("blk.0.attn_q.weight", np.zeros(nbytes, dtype=np.int8), raw_shape=shape, raw_dtype=qtype)
    w.add_tensor("token_embd.weight", np.zeros((64, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bitnet_cpp_tl_types_are_named(tmp_path):
    """bitnet.cpp's TL1 (38) and TL2 (39) are refused by name, with what to convert to; a type-39
    tensor of upstream's MXFP4 size is MXFP4."""
    rows, cols = 256, 512
    tl2 = (cols - 256) * rows // 3 * 5 // 8 + 256 * rows // 2 * 4 // 8
    tl2 = -(-tl2 // 32) * 32 + 32
    for qtype, nbytes, kind in ((39, tl2, "TL2"), (38, rows * cols // 4 + 32, "TL1")):
        path = _one_tensor_file(tmp_path / f"{kind}.gguf", qtype, nbytes)
        with pytest.raises(FormatError, match=f"'blk.0.attn_q.weight' is bitnet.cpp's {kind} \\(type id {qtype}\\).*I2_S"):
            GGUFFile(path)
    mxfp4 = GGUFFile(_one_tensor_file(tmp_path / "mxfp4.gguf", 39, rows * cols // 32 * 17))
    assert mxfp4.tensors["blk.0.attn_q.weight"].type_name == "MXFP4"
    with pytest.raises(FormatError, match="unknown type id 38"):  # not TL1's size
        GGUFFile(_one_tensor_file(tmp_path / "odd.gguf", 38, rows * cols // 2))


def test_wrong_tensor_size(files, tmp_path):
    data = bytearray(files["tq2_0"].read_bytes())
    at = tensor_entry(data, "blk.0.attn_v.weight") - 8  # ne1 (rows), the last dimension
    struct.pack_into("<Q", data, at, 64)
    # half the rows: the tensor no longer fills its place in the file
    with pytest.raises(FormatError, match=r"'blk.0.attn_v.weight' \(TQ2_0 \[64, 256\].* does not fit the 8448 bytes"):
        load_bytes(tmp_path, bytes(data))
    struct.pack_into("<Q", data, at, 1 << 40)  # a size past the end of the file
    with pytest.raises(FormatError, match="attn_v.weight"):
        load_bytes(tmp_path, bytes(data))


@pytest.mark.parametrize("old,new,message", [
    (b"bitnet-b1.58.block_count", b"bitnet-b1.58.block_counX", "bitnet-b1.58.block_count is missing"),
    (b"bitnet-b1.58.attention.head_count\x04", b"bitnet-b1.58.attention.head_counX\x04", "head_count is missing"),
    (b"blk.0.ffn_up.weight", b"blk.0.ffn_up.weighX", "'blk.0.ffn_up.weight' is missing"),
    (b"bitnet-b1.58", b"bitnet-b9.99", "unsupported architecture 'bitnet-b9.99'"),
    (b"tokenizer.ggml.tokens", b"tokenizer.ggml.tokenX", "tokenizer.ggml.tokens is missing"),
])
def test_missing_metadata_and_tensors(files, tmp_path, old, new, message):
    data = files["tq2_0"].read_bytes()
    assert old in data
    with pytest.raises(FormatError, match=message):
        load_bytes(tmp_path, data.replace(old, new))


def test_not_ternary(files, tmp_path):
    data = bytearray(files["tq2_0"].read_bytes())
    t = GGUFFile(files["tq2_0"]).tensors["blk.0.attn_q.weight"]
    data[t.offset] = 0xFF  # code 3: the value 2
    with pytest.raises(FormatError, match="attn_q.weight.*code 3"):
        load_bytes(tmp_path, bytes(data))
    data = bytearray(files["tq2_0"].read_bytes())
    d = np.frombuffer(bytes(data[t.offset + 64: t.offset + 66]), np.float16)[0]
    data[t.offset + 66 + 64: t.offset + 66 + 66] = np.float16(d * 2).tobytes()  # block 2 scaled apart
    with pytest.raises(FormatError, match="attn_q.weight.*not ternary with one scale"):
        load_bytes(tmp_path, bytes(data))
    data = bytearray(files["i2_s"].read_bytes())
    t = GGUFFile(files["i2_s"]).tensors["blk.0.attn_q.weight"]
    data[t.offset] = 0xFF
    with pytest.raises(FormatError, match="attn_q.weight.*code 3"):
        load_bytes(tmp_path, bytes(data))


def test_fuzzed_headers(files, tmp_path):
    """Random byte changes in the header: every load succeeds or raises FormatError."""
    rng = np.random.default_rng(1234)
    for name in ("tq2_0", "i2_s"):
        data = files[name].read_bytes()
        header_end = GGUFFile(files[name]).tensors["token_embd.weight"].offset
        outcomes = {"ok": 0, "error": 0}
        for _ in range(150):
            mutated = bytearray(data)
            for _ in range(int(rng.integers(1, 5))):
                at = int(rng.integers(0, header_end))
                mutated[at] = int(rng.integers(0, 256)) if rng.random() < 0.7 else mutated[at] ^ 0x80
            try:
                load_bytes(tmp_path, bytes(mutated)).logits([1, 2])
                outcomes["ok"] += 1
            except FormatError:
                outcomes["error"] += 1
        assert outcomes["error"] > 20, outcomes  # the mutations do hit what matters
