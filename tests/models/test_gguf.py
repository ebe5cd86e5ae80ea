"""GGUF: files written with the `gguf` library from random-init checkpoints load to exactly the model
the safetensors checkpoint gives; tellme -> GGUF -> tellme is lossless; bad files fail clearly.

`write_gguf_like_llama_cpp` below writes files independently of tellme's writer, the way llama.cpp
and bitnet.cpp lay them out (TQ blocks from gguf.quants, I2_S packed by a plain loop here).
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFWriter, quants

import tellme
from tellme.cli import main as cli
from tellme.formats.gguf_file import GGUFFile
from tellme.formats.gguf_model import GGUFCheckpoint
from tellme.formats.gguf_tokenizer import write_tokenizer
from tellme.formats.hf import HFCheckpoint
from tellme.config import LINEAR_NAMES
from tellme.packed import PackedModel
from tellme.rope import rope_pair_order
from tellme.tokenizer import Tokenizer
from tests.models.checkpoints import TEXT, make_checkpoint
from tests.helpers import i2s_by_loop

SHAPE = dict(hidden=256, heads=4, kv_heads=2, intermediate=512)  # rows in whole 256-weight blocks
LINEAR_TENSORS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
                  "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
# GGUF architecture -> the checkpoint format holding that architecture
ARCH_FORMATS = {"bitnet-b1.58": "bitnet-packed", "bitnet-25": "bitnet-packed", "bitnet": "1bitllm",
                "llama": "llama-bitnet"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-src")
    out = {}
    for fmt in sorted(set(ARCH_FORMATS.values())):
        make_checkpoint(root / fmt, fmt, **SHAPE)
        out[fmt] = root / fmt
    return out


def write_gguf_like_llama_cpp(src, path, arch, wtype, embd=Q.F32, scale_in_blocks=False, strings=None):
    """A GGUF of checkpoint `src` in llama.cpp's layout. TQ scales go in a `.scale` tensor (exact) or,
    with scale_in_blocks, into the fp16 block scales as llama.cpp's converter puts them."""
    ck = HFCheckpoint(src)
    c = ck.config
    w = GGUFWriter(path, arch)
    w.add_file_type(40 if wtype == "I2_S" else 37)
    for key, value in [("context_length", c.context), ("embedding_length", c.hidden), ("block_count", c.layers),
                       ("feed_forward_length", c.intermediate), ("attention.head_count", c.heads),
                       ("attention.head_count_kv", c.kv_heads), ("rope.freq_base", c.rope_theta),
                       ("attention.layer_norm_rms_epsilon", c.eps), ("rope.dimension_count", c.head_dim)]:
        (w.add_float32 if isinstance(value, float) else w.add_uint32)(f"{arch}.{key}", value)
    for key, value in (strings or {}).items():
        w.add_string(key, value)
    write_tokenizer(w, Tokenizer.from_dir(src), c.vocab, c.bos_token_id, c.eos_token_ids)

    def dense(name, a):
        if embd == Q.Q6_K:  # gguf.quants cannot write Q6_K; any bytes with finite scales are valid Q6_K
            blocks = np.random.default_rng(0).integers(0, 256, size=(a.size // 256, 210), dtype=np.uint8)
            blocks[:, 208:] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
            w.add_tensor(name, blocks.reshape(a.shape[0], -1), raw_dtype=embd)
        else:
            w.add_tensor(name, quants.quantize(a.astype(np.float32), embd), raw_dtype=embd)

    dense("token_embd.weight", ck.embedding())
    if ck.lm_head() is not None:
        dense("output.weight", ck.lm_head())
    w.add_tensor("output_norm.weight", ck.final_norm())
    for i in range(c.layers):
        for name in ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm"):
            if ck.norm(i, name) is not None:
                w.add_tensor(f"blk.{i}.{name}.weight", ck.norm(i, name))
        for name in LINEAR_NAMES:
            t, s = ck.linear(i, name)
            if arch == "llama" and name in ("q", "k"):  # llama.cpp's q/k row permutation
                n = c.heads if name == "q" else c.kv_heads
                t = t.reshape(n, 2, c.head_dim // 2, -1).swapaxes(1, 2).reshape(t.shape)
            base = f"blk.{i}.{LINEAR_TENSORS[name]}"
            if wtype == "I2_S":
                w.add_tensor(base + ".weight", i2s_by_loop(t, s).view(np.int8), raw_shape=t.shape, raw_dtype=36)
                continue
            if wtype == "Q2_0":  # every block's d is 1 (0 for blocks of zeros), the scale in .scale
                w.add_tensor(base + ".weight", grouped_bytes(t.astype(np.float32), "Q2_0", 128).view(np.int8),
                             raw_shape=t.shape, raw_dtype=42)
                w.add_tensor(base + ".scale", np.array([s], dtype=np.float32))
                continue
            qtype = Q[wtype]
            w.add_tensor(base + ".weight", quants.quantize(t * np.float32(s if scale_in_blocks else 1.0), qtype),
                         raw_dtype=qtype)
            if not scale_in_blocks:
                w.add_tensor(base + ".scale", np.array([s], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def assert_same_tensors(a: PackedModel, b: PackedModel):
    a, b = a.arrays(), b.arrays()
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("wtype", ["TQ1_0", "TQ2_0", "I2_S", "Q2_0"])
@pytest.mark.parametrize("arch", list(ARCH_FORMATS))
def test_gguf_gives_the_safetensors_model(checkpoints, tmp_path, arch, wtype):
    src = checkpoints[ARCH_FORMATS[arch]]
    path = tmp_path / "m.gguf"
    write_gguf_like_llama_cpp(src, path, arch, wtype)
    g = GGUFCheckpoint(path)
    assert g.config.architecture == HFCheckpoint(src).config.architecture
    # every packed tensor identical, so the logits are too (Q2_0 blocks of one scale: no group scales)
    assert_same_tensors(PackedModel.pack(g, "fp32"), PackedModel.pack(HFCheckpoint(src), "fp32"))
    a, b = tellme.load(src, head="fp32"), tellme.load(path, head="fp32")
    ids = a.encode(TEXT)[:64]
    assert b.encode(TEXT)[:64] == ids
    assert np.array_equal(a.logits(ids), b.logits(ids))


def grouped_bytes(w: np.ndarray, qtype: str, block: int) -> np.ndarray:
    """llama.cpp's Q2_0 / Q1_0 blocks of w (scale times ternary per block), written by a plain loop:
    an fp16 d, then Q2_0's 2-bit codes (code = t + 1, weight j at bits 2(j % 4) of byte j / 4) or
    Q1_0's bits (bit j % 8 of byte j / 8 set for +d)."""
    out = bytearray()
    for row in w.astype(np.float32):
        for b in range(0, row.size, block):
            v = row[b:b + block]
            d = np.float32(np.abs(v).max())
            out += np.float16(d).tobytes()
            t = np.zeros(block, np.int64) if d == 0 else (v / d).astype(np.int64)
            if qtype == "Q2_0":
                for j in range(0, block, 4):
                    out.append(sum(int(t[j + i] + 1) << (2 * i) for i in range(4)))
            else:
                for j in range(0, block, 8):
                    out.append(sum(int(t[j + i] > 0) << i for i in range(8)))
    return np.frombuffer(bytes(out), np.uint8)


def write_bonsai_gguf(src, path, wtype: str, block: int):
    """A Ternary Bonsai GGUF as PrismML's llama.cpp writes it: architecture qwen3, q/k norms, the
    linears, embedding and head as Q2_0 (blocks of `block`), Q1_0 or F16 values."""
    ck = HFCheckpoint(src)
    c = ck.config
    w = GGUFWriter(path, "qwen3")
    for key, value in [("context_length", c.context), ("embedding_length", c.hidden), ("block_count", c.layers),
                       ("feed_forward_length", c.intermediate), ("attention.head_count", c.heads),
                       ("attention.head_count_kv", c.kv_heads), ("rope.freq_base", c.rope_theta),
                       ("attention.layer_norm_rms_epsilon", c.eps), ("attention.key_length", c.head_dim),
                       ("attention.value_length", c.head_dim)]:
        (w.add_float32 if isinstance(value, float) else w.add_uint32)(f"qwen3.{key}", value)
    write_tokenizer(w, Tokenizer.from_dir(src), c.vocab, c.bos_token_id, c.eos_token_ids)

    def add(name, values):
        if wtype == "F16":
            w.add_tensor(name, values.astype(np.float16))
        else:
            w.add_tensor(name, grouped_bytes(values, wtype, block).view(np.int8), raw_shape=values.shape,
                         raw_dtype=42 if wtype == "Q2_0" else 41)

    add("token_embd.weight", ck.embedding())
    if ck.lm_head() is not None:
        add("output.weight", ck.lm_head())
    w.add_tensor("output_norm.weight", ck.final_norm())
    for i in range(c.layers):
        for name, gguf_name in (("attn_norm", "attn_norm"), ("ffn_norm", "ffn_norm"), ("q_norm", "attn_q_norm"),
                                ("k_norm", "attn_k_norm")):
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", ck.norm(i, name))
        for name in LINEAR_NAMES:
            t, s = ck.linear(i, name)
            add(f"blk.{i}.{LINEAR_TENSORS[name]}.weight", t.astype(np.float32) * np.repeat(s, t.shape[1] // s.shape[1], axis=1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("wtype, block", [("Q2_0", 128), ("Q2_0", 64), ("Q1_0", 128), ("F16", 64)])
def test_bonsai_gguf_gives_the_safetensors_model(tmp_path, wtype, block):
    """Q2_0 (PrismML's 128-weight blocks and mainline's 64), Q1_0 (1-bit Bonsai) and F16 values: the
    same packed model, group scales included, as the Hugging Face checkpoint."""
    src = tmp_path / "hf"
    make_checkpoint(src, "qwen3-ternary", hidden=256, heads=4, kv_heads=2, head_dim=96, intermediate=384,
                    group=block, binary=wtype == "Q1_0", tied=block == 64)
    write_bonsai_gguf(src, tmp_path / "m.gguf", wtype, block)
    g = GGUFCheckpoint(tmp_path / "m.gguf")
    assert (g.config.architecture, g.config.qk_norm, g.config.head_dim) == ("qwen3", True, 96)
    ours, theirs = PackedModel.pack(g), PackedModel.pack(HFCheckpoint(src))
    assert ours.linear(0, "q").group == block
    assert_same_tensors(ours, theirs)
    a, b = tellme.load(src), tellme.load(tmp_path / "m.gguf")
    ids = a.encode(TEXT)[:32]
    assert np.array_equal(a.logits(ids), b.logits(ids))


@pytest.mark.parametrize("qtype", ["TQ1_0", "TQ2_0"])
@pytest.mark.parametrize("scale", [0.25, -0.5])
def test_ternary_blocks_decode_as_gguf_does(qtype, scale):
    """The native TQ1_0/TQ2_0 decoders (loading's path) against gguf-py's dequantize: random
    ternary rows with one block of zeros whose d differs (it carries no weight), either sign of d."""
    from tellme.formats.gguf_quants import tq1_0_to_i2, tq2_0_to_i2
    from tellme.kernels.layout import pack_i2

    rng = np.random.default_rng(5)
    t = rng.integers(-1, 2, (4, 512)).astype(np.float32)
    t[1, :256] = 0
    raw = quants.quantize(t * np.float32(abs(scale)), Q[qtype])
    blocks = raw.reshape(8, -1).copy()
    blocks[:, -2:] = np.array([scale], np.float16).view(np.uint8)  # d < 0 too: the codes then flip
    blocks[2, -2:] = np.array([3.0], np.float16).view(np.uint8)  # the zero block's d
    values = quants.dequantize(blocks.reshape(raw.shape), Q[qtype]).reshape(4, 512)
    codes, s = (tq1_0_to_i2 if qtype == "TQ1_0" else tq2_0_to_i2)(blocks, (4, 512))
    assert s == abs(scale)
    np.testing.assert_array_equal(codes, pack_i2(np.round(values / abs(scale)).astype(np.int8))[:4])  # unpadded rows
    blocks[5, -2:] = np.array([0.125], np.float16).view(np.uint8)  # a live block with another d
    with pytest.raises(ValueError, match="one scale per tensor"):
        (tq1_0_to_i2 if qtype == "TQ1_0" else tq2_0_to_i2)(blocks, (4, 512))


def test_q2_0_refuses_code_3_and_odd_sizes(tmp_path):
    from tellme.formats.gguf_quants import Q2_0, unpack_grouped

    raw = grouped_bytes(np.ones((2, 128), np.float32), "Q2_0", 128).copy()
    t, d = unpack_grouped(raw, Q2_0, (2, 128))
    assert (t == 1).all() and (d == 1).all()
    raw[2] = 0xFF  # code 3: +2 times the scale
    with pytest.raises(ValueError, match="code 3"):
        unpack_grouped(raw, Q2_0, (2, 128))
    with pytest.raises(ValueError, match="not 2x128 weights in whole blocks"):
        unpack_grouped(raw[:-1], Q2_0, (2, 128))


def test_hidden_activation_overrides_the_architecture(checkpoints, tmp_path):
    """A 2B-4T model (ReLU^2) in a file labelled llama.cpp's `bitnet` (SiLU) runs ReLU^2 when the
    file says so in {arch}.hidden_activation; an activation tellme lacks is refused by name."""
    src = checkpoints["bitnet-packed"]
    write_gguf_like_llama_cpp(src, tmp_path / "a.gguf", "bitnet", "TQ2_0", strings={"bitnet.hidden_activation": "relu2"})
    write_gguf_like_llama_cpp(src, tmp_path / "b.gguf", "bitnet", "TQ2_0")
    assert GGUFCheckpoint(tmp_path / "a.gguf").config.activation == "relu2"
    assert GGUFCheckpoint(tmp_path / "b.gguf").config.activation == "silu"  # what the name alone says
    ref, ours = tellme.load(src), tellme.load(tmp_path / "a.gguf")
    ids = ref.encode(TEXT)[:24]
    assert np.array_equal(ref.logits(ids), ours.logits(ids))
    write_gguf_like_llama_cpp(src, tmp_path / "c.gguf", "bitnet", "TQ2_0", strings={"bitnet.hidden_activation": "gelu"})
    with pytest.raises(ValueError, match="bitnet.hidden_activation = 'gelu' is not supported"):
        tellme.load(tmp_path / "c.gguf")


@pytest.mark.parametrize("wtype", ["TQ1_0", "TQ2_0"])
def test_fp16_block_scales_as_llama_cpp_writes_them(checkpoints, tmp_path, wtype):
    src = checkpoints["bitnet-packed"]
    path = tmp_path / "m.gguf"
    write_gguf_like_llama_cpp(src, path, "bitnet-b1.58", wtype, scale_in_blocks=True)
    g, h = GGUFCheckpoint(path), HFCheckpoint(src)
    for i in range(h.config.layers):
        for name in LINEAR_NAMES:
            (t1, s1), (t2, s2) = g.linear(i, name), h.linear(i, name)
            assert np.array_equal(t1, t2) and s1 == float(np.float16(s2))

    class Fp16Scales:  # the checkpoint with its scales rounded as the file stores them
        config = h.config

        def __getattr__(self, name):
            return getattr(h, name)

        def linear(self, i, name):
            t, s = h.linear(i, name)
            return t, float(np.float16(s))

    assert_same_tensors(PackedModel.pack(g, "fp32"), PackedModel.pack(Fp16Scales(), "fp32"))


@pytest.mark.parametrize("embd", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q6_K, Q.Q4_0])
def test_embedding_and_output_types(checkpoints, tmp_path, embd):
    src = checkpoints["llama-bitnet"]  # untied: token_embd and output
    path = tmp_path / "m.gguf"
    write_gguf_like_llama_cpp(src, path, "llama", "TQ2_0", embd=embd)
    g, h, r = GGUFCheckpoint(path), HFCheckpoint(src), GGUFReader(path)
    for name, ours, orig in (("token_embd.weight", g.embedding(), h.embedding()), ("output.weight", g.lm_head(), h.lm_head())):
        t = next(t for t in r.tensors if t.name == name)
        assert np.array_equal(ours, quants.dequantize(t.data, embd).reshape(ours.shape))
        if embd != Q.Q6_K:
            assert np.abs(ours - orig).max() <= (0 if embd == Q.F32 else 0.2 * np.abs(orig).max())
    streamed = g.table_rows("embedding", 3, 9)  # what loading reads: fp16 as its bits, others widened natively
    want = g.embedding()[3:9]
    np.testing.assert_array_equal(streamed.view(np.float16).astype(np.float32) if embd == Q.F16 else streamed, want)
    m = tellme.load(path)
    assert m.generate("Shall I", max_tokens=4, temperature=0) is not None


# ---- tellme convert: GGUF out ----

@pytest.mark.parametrize("wtype", ["tq2_0", "tq1_0", "i2_s", "q2_0"])
@pytest.mark.parametrize("fmt", ["bitnet-packed", "1bitllm", "llama-bitnet"])
def test_round_trip_is_lossless(checkpoints, tmp_path, fmt, wtype):
    src, path = checkpoints[fmt], tmp_path / "out.gguf"
    assert cli(["convert", str(src), str(path), "--type", wtype]) == 0
    for head in ("int8", "int6", "fp32"):
        assert_same_tensors(PackedModel.pack(GGUFCheckpoint(path), head), PackedModel.pack(HFCheckpoint(src), head))
    # and GGUF -> GGUF
    again = tmp_path / "again.gguf"
    assert cli(["convert", str(path), str(again), "--type", "tq2_0"]) == 0
    assert_same_tensors(PackedModel.pack(GGUFCheckpoint(again), "fp32"), PackedModel.pack(HFCheckpoint(src), "fp32"))


def test_head_dim_other_than_hidden_over_heads_round_trips(tmp_path):
    """Falcon3's layout: head_dim given in config.json (here 128 with hidden 256 and 4 heads)."""
    make_checkpoint(tmp_path / "c", "llama-bitnet", hidden=256, heads=4, kv_heads=2, head_dim=128, intermediate=512)
    assert cli(["convert", str(tmp_path / "c"), str(tmp_path / "m.gguf"), "--type", "i2_s"]) == 0
    g = GGUFCheckpoint(tmp_path / "m.gguf")
    assert (g.config.head_dim, g.config.heads, g.config.hidden) == (128, 4, 256)
    assert_same_tensors(PackedModel.pack(g), PackedModel.pack(HFCheckpoint(tmp_path / "c")))


@pytest.mark.parametrize("wtype", ["tq2_0", "tq1_0"])
@pytest.mark.parametrize("fmt", ["bitnet-packed", "1bitllm", "llama-bitnet"])
def test_written_file_reads_with_the_gguf_library(checkpoints, tmp_path, fmt, wtype):
    from gguf import MODEL_ARCH, MODEL_TENSOR, MODEL_TENSORS, TENSOR_NAMES

    src, path = checkpoints[fmt], tmp_path / "out.gguf"
    assert cli(["convert", str(src), str(path), "--type", wtype]) == 0
    h = HFCheckpoint(src)
    c = h.config
    r = GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    assert arch == {"bitnet-packed": "bitnet-b1.58", "1bitllm": "bitnet", "llama-bitnet": "llama"}[fmt]
    for key in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                "attention.head_count_kv", "context_length", "attention.layer_norm_rms_epsilon"):
        assert f"{arch}.{key}" in r.fields
    assert r.fields[f"{arch}.block_count"].contents() == c.layers
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2"
    # names are those of llama.cpp's bitnet (or llama) architecture, plus optional .scale tensors
    # and, for an untied head, `output` (which llama.cpp's bitnet list lacks: it ties the head)
    kinds = MODEL_TENSORS[MODEL_ARCH.BITNET if arch.startswith("bitnet") else MODEL_ARCH.LLAMA] + [MODEL_TENSOR.OUTPUT]
    assert (MODEL_TENSOR.OUTPUT in kinds[:-1]) or ("output.weight" in {t.name for t in r.tensors}) == (not c.tied_embeddings)
    allowed = {TENSOR_NAMES[k].format(bid=i) + suffix for k in kinds for i in range(c.layers)
               for suffix in (".weight", ".scale")}
    assert {t.name for t in r.tensors} <= allowed
    for t in r.tensors:
        if t.name.endswith(".weight") and t.name.startswith("blk.") and "norm" not in t.name:
            assert t.tensor_type == Q[wtype.upper()]
    # the library's dequantization (times a .scale tensor) is the checkpoint's W = scale * T
    scale = {t.name: float(t.data[0]) for t in r.tensors if t.name.endswith(".scale")}
    q = next(t for t in r.tensors if t.name == "blk.1.attn_v.weight")
    w = quants.dequantize(q.data, q.tensor_type).reshape(c.linear_shape("v")) * scale.get("blk.1.attn_v.scale", 1.0)
    t, s = h.linear(1, "v")
    assert np.array_equal(w, t.astype(np.float32) * np.float32(s))


def test_llama_q_rows_are_in_llama_cpp_order(checkpoints, tmp_path):
    src, path = checkpoints["llama-bitnet"], tmp_path / "out.gguf"
    assert cli(["convert", str(src), str(path), "--type", "tq2_0"]) == 0
    r = GGUFReader(path)
    q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
    c = HFCheckpoint(src).config
    t, _ = HFCheckpoint(src).linear(0, "q")
    stored = np.sign(quants.dequantize(q.data, q.tensor_type)).reshape(t.shape)
    assert np.array_equal(stored, t[rope_pair_order(c.heads, c.head_dim)])


def test_convert_refuses_rows_that_are_not_whole_blocks(tmp_path):
    make_checkpoint(tmp_path / "c", "llama-bitnet", hidden=192, heads=6, kv_heads=2, intermediate=256, layers=1)
    with pytest.raises(ValueError, match="blocks of 256.*q projection's rows have 192"):
        from tellme.formats.gguf_export import write_gguf
        write_gguf(HFCheckpoint(tmp_path / "c"), None, tmp_path / "d.gguf", "tq2_0")
    assert not (tmp_path / "d.gguf").exists()
    assert cli(["convert", "default-model-dir-that-is-missing", str(tmp_path / "x.gguf")]) == 1


@pytest.mark.parametrize("wtype", ["tq2_0", "i2_s"])
def test_ffn_is_zero_padded_to_whole_blocks(tmp_path, wtype, capsys):
    """The shipped model (FFN 704, an FFN sub-norm) is written with its FFN padded when asked; the
    file reads with the gguf library and runs nearly the same model (the sub-norm's eps moves)."""
    from tellme import default_model_path

    path = tmp_path / "d.gguf"
    with pytest.raises(ValueError, match="FFN is 704 wide.*exact only without an FFN sub-norm.*--pad-ffn"):
        from tellme.formats.gguf_export import write_gguf
        write_gguf(HFCheckpoint(default_model_path()), None, path, wtype)
    assert cli(["convert", "default", str(path), "--type", wtype, "--pad-ffn"]) == 0
    if wtype == "tq2_0":  # the library does not know bitnet.cpp's I2_S
        r = GGUFReader(path)
        meta = {k: r.fields[k].contents() for k in r.fields if not k.startswith("tokenizer.")}
        down = next(t for t in r.tensors if t.name == "blk.0.ffn_down.weight")
        assert list(down.shape) == [768, 256]  # gguf lists ne0 (the row width) first
    else:
        meta = GGUFFile(path).metadata
    assert meta["bitnet-b1.58.feed_forward_length"] == 768
    assert meta["tellme.feed_forward_length_unpadded"] == 704
    assert meta["bitnet-b1.58.hidden_activation"] == "relu2"
    a, b = tellme.load("default"), tellme.load(path)
    assert b.config.intermediate == 768 and b.config.ffn_padded_from == 704
    ids = a.encode(TEXT)[:48]
    la, lb = a.logits(ids), b.logits(ids)
    assert not np.array_equal(la, lb) and np.abs(la - lb).max() <= 0.1 * np.abs(la).max()
    assert (la.argmax(1) == lb.argmax(1)).mean() > 0.8
    capsys.readouterr()
    assert cli(["info", str(path)]) == 0
    assert '"ffn_padded_from": 704' in capsys.readouterr().out
    # padded once: converting the padded file again keeps the width and the note
    again = tmp_path / "again.gguf"
    assert cli(["convert", str(path), str(again), "--type", "tq2_0"]) == 0
    assert tellme.load(again).config.ffn_padded_from == 704


def test_ffn_padding_without_sub_norm_is_exact(tmp_path):
    make_checkpoint(tmp_path / "c", "llama-bitnet", hidden=256, heads=4, kv_heads=2, intermediate=320, layers=2)
    assert cli(["convert", str(tmp_path / "c"), str(tmp_path / "p.gguf"), "--type", "tq1_0"]) == 0
    a, b = tellme.load(tmp_path / "c"), tellme.load(tmp_path / "p.gguf")
    assert (b.config.intermediate, b.config.ffn_padded_from) == (512, 320)
    ids = a.encode(TEXT)[:40]
    assert np.array_equal(a.logits(ids), b.logits(ids))


def test_gguf_to_tellme_file(checkpoints, tmp_path):
    src = checkpoints["bitnet-packed"]
    assert cli(["convert", str(src), str(tmp_path / "m.gguf"), "--type", "i2_s"]) == 0
    assert cli(["convert", str(tmp_path / "m.gguf"), str(tmp_path / "m.safetensors")]) == 0
    a, b = tellme.load(src), tellme.load(tmp_path / "m.safetensors")
    ids = a.encode(TEXT)[:32]
    assert b.encode(TEXT)[:32] == ids and np.array_equal(a.logits(ids), b.logits(ids))
    assert cli(["convert", str(src), str(tmp_path / "m.safetensors"), "--type", "tq2_0"]) == 1  # --type is for .gguf


@pytest.mark.parametrize("group", [128, 64])
def test_bonsai_round_trip_as_q2_0(tmp_path, group):
    """tellme convert writes a grouped model as Q2_0 (the blocks carry the group scales) and reads it
    back to the same packed model; the types with one scale per tensor refuse it by name."""
    src = tmp_path / "hf"
    make_checkpoint(src, "qwen3-ternary", hidden=256, heads=4, kv_heads=2, head_dim=96, intermediate=384, group=group)
    assert cli(["convert", str(src), str(tmp_path / "m.gguf"), "--type", "q2_0"]) == 0
    g = GGUFCheckpoint(tmp_path / "m.gguf")
    assert g.file.get("general.architecture") == "qwen3"
    assert g.file.tensors["blk.0.attn_q.weight"].nbytes == 384 * 256 // group * (2 + group // 4)
    assert_same_tensors(PackedModel.pack(g), PackedModel.pack(HFCheckpoint(src)))
    # and tellme's own converted file keeps the group scales
    assert cli(["convert", str(src), str(tmp_path / "m.safetensors")]) == 0
    a, b = tellme.load(src), tellme.load(tmp_path / "m.safetensors")
    assert b.packed.linear(0, "down").group == group
    ids = a.encode(TEXT)[:24]
    assert np.array_equal(a.logits(ids), b.logits(ids))
    with pytest.raises(ValueError, match=f"scale per group of {group} weights, which I2_S cannot hold.*--type q2_0"):
        from tellme.formats.gguf_export import write_gguf
        write_gguf(HFCheckpoint(src), None, tmp_path / "t.gguf", "i2_s")


def test_yarn_round_trips_through_gguf(tmp_path):
    """YaRN (Bonsai 4B/8B's long context) written as llama.cpp's rope.scaling keys and read back."""
    import json

    from tellme.rope import rope_tables

    src = tmp_path / "hf"
    make_checkpoint(src, "qwen3-ternary", hidden=256, heads=4, kv_heads=2, head_dim=64, intermediate=256, layers=1)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                              "original_max_position_embeddings": 64, "beta_fast": 16.0}
    (src / "config.json").write_text(json.dumps(cfg))
    assert cli(["convert", str(src), str(tmp_path / "m.gguf"), "--type", "q2_0"]) == 0
    ours, theirs = GGUFCheckpoint(tmp_path / "m.gguf").config, HFCheckpoint(src).config
    assert ours.rope_scaling["rope_type"] == "yarn" and ours.rope_scaling["beta_fast"] == 16.0
    for a, b in zip(rope_tables(ours, 200), rope_tables(theirs, 200)):
        np.testing.assert_array_equal(a, b)
