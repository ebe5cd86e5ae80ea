"""Loading in bounded memory: GGUF I2_S linears used in place from the memory map, TQ2_0 repacked
by bit order alone, TQ1_0 unpacked a block of rows at a time, embedding tables streamed; each
path bit-identical to packing the same weights the generic way; peak memory of a load as a
ratio to the file's size; the converted file against the safetensors library."""

import json
import subprocess
import sys

import numpy as np
import pytest

import tellme
from tellme.config import LINEAR_NAMES, ModelConfig
from tellme.formats.gguf_export import write_gguf
from tellme.errors import FormatError
from tellme.packed import DEFAULT_HEAD, PackedModel

from tests.helpers import SyntheticReader


def config(arch="bitnet-2b4t", hidden=256, intermediate=512, layers=2, vocab=300, **kw):
    return ModelConfig(architecture=arch, hidden=hidden, intermediate=intermediate, layers=layers, heads=4, kv_heads=2,
                       head_dim=hidden // 4, vocab=vocab, context=64, eps=1e-5,
                       activation="relu2" if arch == "bitnet-2b4t" else "silu", sub_norms=arch != "llama-bitnet",
                       tied_embeddings=True, rope_theta=10000.0, **kw)


@pytest.mark.parametrize("arch", ["bitnet-2b4t", "llama-bitnet"])
@pytest.mark.parametrize("qtype", ["i2_s", "tq2_0", "tq1_0"])
def test_direct_paths_equal_packing(tmp_path, arch, qtype):
    c = config(arch)
    reader = SyntheticReader(c)
    path = tmp_path / f"m-{qtype}.gguf"
    write_gguf(reader, None, path, qtype)
    model = tellme.load(path, progress=False)
    how = model.packed.load_paths
    # q and k of a bitnet file are in Hugging Face row order: reordered, the other five as they lie
    want = {"i2_s": "in place (I2_S, memory-mapped)", "tq2_0": "repacked (TQ2_0 bit order)",
            "tq1_0": "decoded (TQ1_0 trits to codes)"}[qtype]
    reordered = "copied, rows reordered (I2_S)" if qtype == "i2_s" else want + ", rows reordered"
    if arch == "llama-bitnet":
        assert how["linear"] == {want: 7 * c.layers}
    else:
        assert how["linear"] == {want: 5 * c.layers, reordered: 2 * c.layers}
    assert list(how["embedding"]) == [f"{DEFAULT_HEAD}, streamed in blocks of {(4 << 20) // (4 * c.hidden)} rows"]

    generic = PackedModel.pack(reader)
    for name, a in generic.arrays().items():
        np.testing.assert_array_equal(model.packed.arrays()[name], a, err_msg=name)
    ids = np.random.default_rng(1).integers(0, c.vocab, 40)
    np.testing.assert_array_equal(model.logits(ids), tellme.model.Model(generic, None).logits(ids))

    for i in range(c.layers):  # where the engine reads each linear: inside the file's mapping or not
        for n in LINEAR_NAMES:
            codes = model.packed.linear(i, n).data
            base, a = None, codes  # the file's whole mapping: the last memmap down the chain of views
            while isinstance(a, np.ndarray):
                base = a if isinstance(a, np.memmap) else base
                a = a.base
            address = model.engine.weight_address(i, n)
            assert address == codes.__array_interface__["data"][0]
            in_place = qtype == "i2_s" and (arch == "llama-bitnet" or n not in ("q", "k"))
            assert (base is not None) == in_place, (i, n)
            if in_place:
                lo = base.__array_interface__["data"][0]
                assert lo <= address < lo + base.nbytes and str(base.filename) == str(path.resolve())
                assert base.nbytes == path.stat().st_size


@pytest.mark.parametrize("head", ["int8", "int6"])
def test_streamed_table_blocks_equal_whole(tmp_path, monkeypatch, head):
    """A vocabulary over several streaming blocks: the same integer rows and scales as one block,
    and as quantizing the whole float table at once."""
    c = config(vocab=2500)
    path = tmp_path / "m.gguf"
    write_gguf(SyntheticReader(c), None, path, "i2_s")
    whole = tellme.load(path, progress=False, head=head).packed.rows("embedding")
    monkeypatch.setattr("tellme.packed.TABLE_BLOCK_BYTES", 384 * 4 * c.hidden)
    blocks = tellme.load(path, progress=False, head=head).packed.rows("embedding")
    np.testing.assert_array_equal(blocks.integers(), whole.integers())
    np.testing.assert_array_equal(blocks.row_scale, whole.row_scale)
    assert (blocks.q if head == "int8" else blocks.q6) is not None
    table = tellme.load(path, progress=False, head="fp32").packed.rows("embedding").f32
    at_once = PackedModel(c)
    at_once.set_rows("embedding", table, head)
    np.testing.assert_array_equal(at_once.rows("embedding").integers(), whole.integers())


@pytest.mark.parametrize("head", ["int8", "int6", "fp32"])
def test_a_nan_in_a_streamed_table_is_named(tmp_path, head):
    c = config(vocab=2500)
    path = tmp_path / "m.gguf"
    write_gguf(SyntheticReader(c), None, path, "i2_s")
    data = bytearray(path.read_bytes())
    from tellme.formats.gguf_file import GGUFFile
    t = GGUFFile(path).tensors["token_embd.weight"]
    at = t.offset + 2 * (2100 * c.hidden + 5)  # row 2100, an F16 NaN
    data[at: at + 2] = np.float16(np.nan).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"embedding rows \d+-\d+ holds? NaN or infinite"):
        tellme.load(path, progress=False, head=head)


PEAK = """
import json, sys, numpy as np, tellme, tellme.loading, tellme.formats.gguf_model
if sys.argv[2] == "generic":  # the format's generic path: whole tensors unpacked, whole float32 tables
    del tellme.formats.gguf_model.GGUFCheckpoint.packed_linear, tellme.formats.gguf_model.GGUFCheckpoint.table_rows
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = rss("VmRSS:")
m = tellme.load(sys.argv[1], progress=False, max_sequences=1, context=64)
m.logits([1, 2, 3])
print(json.dumps({"before": before, "peak": rss("VmHWM:")}))
"""


def test_peak_memory_of_an_i2s_load(tmp_path):
    """A model of tens of MB: loading and the first forward pass add at most 1.2x the file's size
    to the process (measured 0.97x); the generic path, through whole float32 tables and unpacked
    int8 matrices, adds more than twice it (measured 3.2x), so the bound tells the two apart."""
    c = config(hidden=1024, intermediate=2816, layers=6, vocab=16384)
    path = tmp_path / "m.gguf"
    write_gguf(SyntheticReader(c), None, path, "i2_s")
    size = path.stat().st_size
    grown = {}
    for how in ("direct", "generic"):
        out = subprocess.run([sys.executable, "-c", PEAK, str(path), how], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        grown[how] = (r["peak"] - r["before"]) / size
    assert grown["direct"] <= 1.2 and grown["generic"] > 2, grown


def test_converted_file_is_read_by_the_safetensors_library(tmp_path):
    """tellme's streaming writer against the format's own reader, and back through tellme."""
    from safetensors.numpy import load_file

    c = config()
    path = tmp_path / "m.gguf"
    write_gguf(SyntheticReader(c), None, path, "i2_s")
    packed = tellme.load(path, progress=False).packed
    packed.save(tmp_path / "m.safetensors")
    theirs = load_file(str(tmp_path / "m.safetensors"))
    assert set(theirs) == set(packed.arrays())
    for name, a in packed.arrays().items():
        np.testing.assert_array_equal(theirs[name], a, err_msg=name)
    again = tellme.load(tmp_path / "m.safetensors", progress=False)
    assert again.packed.load_paths["linear"] == {"mapped (converted file)": 7 * c.layers}
    ids = [1, 2, 3, 4]
    np.testing.assert_array_equal(again.logits(ids), tellme.load(path, progress=False).logits(ids))


def test_info_reports_load_paths(tmp_path):
    c = config()
    path = tmp_path / "m.gguf"
    write_gguf(SyntheticReader(c), None, path, "tq2_0")
    out = subprocess.run([sys.executable, "-m", "tellme", "info", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)["model"]["load_paths"]
    assert paths["linear"] == {"repacked (TQ2_0 bit order)": 5 * c.layers,
                               "repacked (TQ2_0 bit order), rows reordered": 2 * c.layers}
