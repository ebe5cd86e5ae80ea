"""Bad input, case by case, on the shipped model: an error of tellme's hierarchy naming what is
wrong from the API, and `tellme: error: ...` with exit status 1 (2 for argparse's own usage errors,
130 on Ctrl-C) and no traceback from the CLI. The fuzz suite (test_fuzz.py) covers files at random."""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import tellme
from tellme.errors import ConfigError, FormatError, TellmeError, UsageError


def run(*args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "tellme", *map(str, args)], capture_output=True,
                          input=stdin, timeout=300, cwd=cwd)


def refused(out, status=1, words=()):
    err = out.stderr.decode() if isinstance(out.stderr, bytes) else out.stderr
    assert out.returncode == status and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


@pytest.fixture(scope="module")
def model():
    return tellme.load()


@pytest.fixture
def copy(tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(tellme.default_model_path(), dst)
    return dst


def edit_json(path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_hierarchy():
    assert issubclass(FormatError, TellmeError) and issubclass(ConfigError, FormatError)
    assert issubclass(UsageError, TellmeError) and issubclass(TellmeError, ValueError)


@pytest.mark.parametrize("changes, words", [
    (dict(num_attention_heads=0), "num_attention_heads"),
    (dict(hidden_size=None), "hidden_size"),
    (dict(max_position_embeddings=10**8), "context"),
    (dict(vocab_size=2**64), "vocab"),
    (dict(rms_norm_eps=-1), "eps"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(quantization_config={"quant_method": "bitnet", "modules_to_not_convert": "lm_head"}),
     "modules_to_not_convert"),
])
def test_bad_config_values(copy, changes, words):
    edit_json(copy / "config.json", **changes)
    with pytest.raises(ConfigError, match=words):
        tellme.load(copy)
    refused(run("generate", "-m", copy, "hi"), words=[words])


def test_a_missing_hidden_act_is_transformers_default(copy):
    c = json.loads((copy / "config.json").read_text())
    del c["hidden_act"]
    (copy / "config.json").write_text(json.dumps(c))
    assert tellme.load(copy).config.activation == "relu2"  # BitNetConfig's default


def rewrite_header(path, edit):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    text = json.dumps(edit(header)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def test_bad_safetensors_headers(copy):
    f = copy / "model.safetensors"
    original = f.read_bytes()

    def huge(h):
        name = next(k for k in h if k != "__metadata__")
        h[name]["shape"] = [2**64, 1]
        return h

    for edit, words in ((huge, "corrupt header entry"),
                        (lambda h: {"a": []}, "corrupt header entry"),
                        (lambda h: dict(h, __metadata__={"a": 1}), "__metadata__")):
        f.write_bytes(original)
        rewrite_header(f, edit)
        with pytest.raises(FormatError, match=words):
            tellme.load(copy)
        refused(run("info", copy), words=[words])
    nested = b"[" * 100000 + b"]" * 100000
    f.write_bytes(struct.pack("<Q", len(nested)) + nested)
    with pytest.raises(FormatError, match="corrupt safetensors header"):
        tellme.load(copy)


def test_chat_template_errors_and_globals(copy, model):
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}" \
                              "{{ strftime_now('%Y') }}{{ messages[-1].content }}"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    m = tellme.load(copy)
    with pytest.raises(UsageError, match="chat template failed: no system role"):
        m.chat([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}])
    assert m.encode_chat([{"role": "user", "content": "hi"}]) == m.encode(time.strftime("%Y") + "hi", False)
    for bad in ([], "hi", [{"role": "user"}], [{"role": "user", "content": 3}]):
        with pytest.raises(UsageError, match="message"):
            model.chat(bad)


def test_api_arguments_in_the_apis_terms(model):
    cases = [
        (lambda: model.perplexity(b"ROMEO: hello there"), "integer token ids"),
        (lambda: model.logits([1.7, 2]), "integer token ids"),
        (lambda: model.logits([]), "no tokens"),
        (lambda: tellme.load(context=1.5), "context must be an integer"),
        (lambda: tellme.load(context=0), "context must be an integer"),
        (lambda: tellme.load(context=10**7), "context must be an integer from 1 to"),
        (lambda: tellme.load(head="fp16"), "head must be one of"),
        (lambda: tellme.load(kernel="fast"), "kernel must be"),
        (lambda: tellme.load(threads=0), "threads"),
        (lambda: model.perplexity("ROMEO: hello there, good sir", window=0), "window"),
        (lambda: model.perplexity("ROMEO: hello there, good sir", stride=0), "stride"),
        (lambda: model.generate("hi", stop=""), "stop"),
        (lambda: model.generate("hi", stop=["a", ""]), "stop"),
        (lambda: model.generate("hi", max_tokens=1.5), "max_tokens"),
        (lambda: model.generate("hi", top_k=2.5), "top_k"),
        (lambda: model.generate("hi", temperature="hot"), "temperature"),
        (lambda: model.generate(b"hi"), "str"),
        (lambda: model.decode([0.5]), "integer token ids"),
    ]
    for call, words in cases:
        with pytest.raises(UsageError, match=words):
            call()


def test_context_beyond_memory_is_refused_before_allocating(monkeypatch):
    import tellme.model
    # 6 layers x 2 KV heads x 64 x 2 (K, V) x 2 bytes = 3 KiB per position: 2^20 positions is 3 GiB,
    # and RoPE tables of 256 bytes per position
    monkeypatch.setattr(tellme.model, "physical_memory_bytes", lambda: 2 << 30)
    with pytest.raises(UsageError, match="needs 3.2 GiB for the KV cache and RoPE tables; this machine has 2.0 GiB"):
        tellme.load(context=2**20)
    assert tellme.load(context=2**19).context == 2**19


def test_cli_usage_errors():
    refused(run("generate", "hi", "--context", "0"), 2, ["--context"])
    refused(run("perplexity", __file__, "--window", "0"), 2, ["--window"])
    refused(run("perplexity", __file__, "--stride", "0"), 2, ["--stride"])
    refused(run("generate", "-", stdin=b"ROMEO: \xff\xfe\n"), 1, ["not UTF-8"])


def test_ctrl_c_in_generate_exits_130():
    proc = subprocess.Popen([sys.executable, "-m", "tellme", "generate", "ROMEO:", "-n", "100000", "--context", "8192",
                             "--stop", "@@@", "--seed", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(20)  # generation has begun
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert b"Traceback" not in proc.stderr.read()


def test_convert_never_clobbers_or_leaves_partial_files(tmp_path, monkeypatch):
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"precious")
    refused(run("convert", "default", dst), words=["exists", "--force"])
    assert dst.read_bytes() == b"precious"
    assert run("convert", "default", dst, "--force").returncode == 0 and tellme.load(dst) is not None
    refused(run("convert", "default", tmp_path / "nowhere" / "x.safetensors"), words=["does not exist"])
    refused(run("convert", "default", tmp_path), words=["is a directory"])

    from tellme.loading import read_packed
    packed, tokenizer = read_packed(tellme.default_model_path())

    def failing(path, *a, **k):
        open(path, "wb").write(b"half")  # a partial file, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tellme.packed.write_safetensors", failing)
    with pytest.raises(OSError, match="No space left"):
        packed.save(tmp_path / "new.safetensors", tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_train_checks_its_output_before_starting(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be.\n")
    (tmp_path / "file").write_text("x")
    refused(run("train", text, "--out", tmp_path / "file"), words=["is a file"])
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    refused(run("train", text, "--out", full), words=["holds files", "--force"])
    refused(run("train", tmp_path / "absent.txt", "--out", tmp_path / "new"), words=["no such text file"])


def test_train_on_too_little_text(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be.\n" * 3)
    err = refused(run("train", text, "--out", tmp_path / "out", "--steps", "1"), words=["needs more than one sequence"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), err


def test_overflowing_weights_are_an_error_not_nan(tmp_path):
    from tellme.loading import read_packed
    from tellme.packed import PackedModel

    packed, tokenizer = read_packed(tellme.default_model_path())
    arrays = dict(packed.arrays())
    arrays["layers.0.ffn_norm"] = np.full(packed.config.hidden, 3e38, np.float32)  # finite; the FFN overflows
    PackedModel(packed.config, arrays).save(tmp_path / "big.safetensors", tokenizer)
    m = tellme.load(tmp_path / "big.safetensors")
    with pytest.raises(FormatError, match="non-finite activations"):
        m.logits([1, 2, 3])


def test_deeply_nested_gguf_metadata(tmp_path):
    import struct as st
    key = b"general.nested"
    body = st.pack("<I", 9) + (st.pack("<IQ", 9, 1)) * 5000 + st.pack("<IQ", 0, 0)  # arrays of arrays of ...
    data = b"GGUF" + st.pack("<IQQ", 3, 0, 1) + st.pack("<Q", len(key)) + key + body
    (tmp_path / "n.gguf").write_bytes(data + b"\0" * 64)
    with pytest.raises(FormatError, match="not a valid GGUF file|nest"):
        tellme.load(tmp_path / "n.gguf")


def test_gguf_embedding_smaller_than_its_tokenizer(tmp_path):
    from tellme.tokenizer import Tokenizer
    from tests.helpers import write_small_gguf

    tokenizer = Tokenizer.from_dir(tellme.default_model_path())
    write_small_gguf(tmp_path / "m.gguf", tokenizer, vocab=1024)
    with pytest.raises(FormatError, match="the tokenizer has 2048 tokens, the embedding only 1024 rows"):
        tellme.load(tmp_path / "m.gguf")
