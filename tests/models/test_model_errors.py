"""Bad model input gets an error naming the file, tensor or limit; never a crash."""

import json
import shutil

import numpy as np
import pytest

import tellme
from tellme.errors import FormatError
from tests.models.checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "llama"
    make_checkpoint(path, "llama-bitnet", layers=1)
    return path


@pytest.fixture
def copy(good, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(good, dst)
    return dst


def edit_config(path, **changes):
    c = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    (path / "config.json").write_text(json.dumps(c))


def test_missing_model_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        tellme.load(tmp_path / "absent")
    with pytest.raises(FormatError, match="no config.json"):
        tellme.load(tmp_path)
    (tmp_path / "x.bin").write_bytes(b"\0" * 100)
    with pytest.raises(FormatError, match="neither a GGUF file nor a tellme model file"):
        tellme.load(tmp_path / "x.bin")


def test_unknown_architecture(copy):
    edit_config(copy, model_type="gpt2", architectures=["GPT2LMHeadModel"], quantization_config=None)
    with pytest.raises(FormatError, match="unsupported architecture.*gpt2"):
        tellme.load(copy)


@pytest.mark.parametrize("changes,match", [
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(hidden_size=None), "missing 'hidden_size'"),
    (dict(attention_bias=True), "biases"),
    (dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}), "RoPE type 'longrope'"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), "yarn.*needs numbers for factor"),
    (dict(model_type="qwen3", use_sliding_window=True), "sliding-window"),
])
def test_unsupported_config(copy, changes, match):
    edit_config(copy, **changes)
    with pytest.raises(FormatError, match=match):
        tellme.load(copy)


def test_truncated_weights(copy):
    f = copy / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(FormatError, match="model.safetensors.*outside the file"):
        tellme.load(copy)
    f.write_bytes(data[:5])
    with pytest.raises(FormatError, match="too short"):
        tellme.load(copy)
    f.write_bytes(b"\xff" * 64)
    with pytest.raises(FormatError, match="header length"):
        tellme.load(copy)


def test_mismatched_and_missing_tensors(copy):
    from safetensors.numpy import load_file, save_file

    f = copy / "model.safetensors"
    t = load_file(str(f))
    name = "model.layers.0.self_attn.q_proj.weight"
    t[name] = t[name][:, :-1].copy()
    save_file(t, str(f))
    with pytest.raises(FormatError, match="q_proj.weight.*shape"):
        tellme.load(copy)
    del t[name]
    save_file(t, str(f))
    with pytest.raises(FormatError, match="q_proj.weight' not found"):
        tellme.load(copy)


def test_config_disagreeing_with_weights(copy):
    edit_config(copy, intermediate_size=64)
    with pytest.raises(FormatError, match="shape"):
        tellme.load(copy)


def test_engine_rejects_bad_tokens(good):
    m = tellme.load(good)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.logits([0, 10**6])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.logits([-1])
    with pytest.raises(ValueError, match="no tokens"):
        m.logits([])
    with pytest.raises(ValueError, match="exceed the context"):
        m.engine.forward(m.sequences.acquire().cache, np.zeros(4, np.int32), m.context - 2, False)


def test_tokenizer_missing_gives_clear_error(copy):
    (copy / "tokenizer.json").unlink()
    m = tellme.load(copy)
    assert m.logits([0, 1]).shape == (2, m.config.vocab)
    with pytest.raises(ValueError, match="no tokenizer.json"):
        m.generate("hi")


def test_converted_file_with_missing_or_extra_norms(good, tmp_path):
    """The engine decides which norms an architecture needs: sub-norms exactly when it has them."""
    import dataclasses

    from tellme.loading import read_packed
    from tellme.packed import PackedModel

    packed, tokenizer = read_packed(good)  # llama: no sub-norms
    arrays = dict(packed.arrays())
    del arrays["layers.0.ffn_norm"]
    PackedModel(packed.config, arrays).save(tmp_path / "a.safetensors", tokenizer)
    with pytest.raises(FormatError, match="layer 0 ffn_norm is missing"):
        tellme.load(tmp_path / "a.safetensors")
    with_sub = dataclasses.replace(packed.config, sub_norms=True)
    PackedModel(with_sub, packed.arrays()).save(tmp_path / "b.safetensors", tokenizer)
    with pytest.raises(FormatError, match="layer 0 attn_sub_norm is missing"):
        tellme.load(tmp_path / "b.safetensors")
    arrays = dict(packed.arrays(), **{"layers.0.attn_sub_norm": np.ones(packed.config.hidden, np.float32)})
    PackedModel(packed.config, arrays).save(tmp_path / "c.safetensors", tokenizer)
    with pytest.raises(ValueError, match="no sub-norms"):
        tellme.load(tmp_path / "c.safetensors")


def test_ordinary_qwen3_is_refused(tmp_path):
    """A Qwen3 directory is read as Ternary Bonsai: weights that are not ternary per group are refused."""
    import torch
    from safetensors.torch import load_file, save_file

    make_checkpoint(tmp_path / "q", "qwen3-ternary", hidden=256, heads=4, head_dim=64, intermediate=256, layers=1)
    tensors = load_file(tmp_path / "q" / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    tensors[name] = torch.randn(tensors[name].shape).bfloat16()
    save_file(tensors, tmp_path / "q" / "model.safetensors")
    with pytest.raises(FormatError, match="up_proj.weight.*not ternary.*Ternary Bonsai"):
        tellme.load(tmp_path / "q")


def test_converted_file_with_a_bad_6bit_head(good, tmp_path):
    """A 6-bit head whose rows are not the hidden size's bytes, or that comes with int8 rows too."""
    from tellme.loading import read_packed
    from tellme.packed import PackedModel

    packed, tokenizer = read_packed(good, head="int6")
    arrays = dict(packed.arrays())
    arrays["embedding.q6"] = arrays["embedding.q6"][:, :-1].copy()
    PackedModel(packed.config, arrays).save(tmp_path / "a.safetensors", tokenizer)
    with pytest.raises(FormatError, match=r"'embedding.q6' is uint8 \[\d+, \d+\], expected uint8"):
        tellme.load(tmp_path / "a.safetensors")
    arrays = dict(packed.arrays(), **{"embedding.q": np.zeros((packed.config.vocab, packed.config.hidden), np.int8)})
    PackedModel(packed.config, arrays).save(tmp_path / "b.safetensors", tokenizer)
    with pytest.raises(FormatError, match="unexpected tensor 'embedding.q'"):
        tellme.load(tmp_path / "b.safetensors")
