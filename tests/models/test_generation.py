"""The user-facing API and CLI on a small checkpoint: generate, stream, chat, perplexity, sampling."""

import json
import subprocess
import sys

import numpy as np
import pytest

import tellme
from tests.models.checkpoints import TEXT, make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "bitnet"
    make_checkpoint(path, "bitnet-packed")
    return path


@pytest.fixture(scope="module")
def model(ckpt):
    return tellme.load(ckpt)


def test_stream_joins_to_generate_and_seed_is_deterministic(model):
    kw = dict(temperature=0.9, top_k=20, top_p=0.9, seed=7)
    text = model.generate("Shall I compare", 24, **kw)
    assert "".join(model.stream("Shall I compare", 24, **kw)) == text
    assert model.generate("Shall I compare", 24, **kw) == text
    ids = list(model.stream_tokens(model.encode("Shall I compare"), 24, **kw))
    assert model.tokenizer.decode(ids).startswith(text) and len(text) > 0


def test_greedy_is_argmax_of_logits(model):
    prompt = model.encode("thee to a")
    tokens = list(model.stream_tokens(prompt, 6, temperature=0))
    for i, t in enumerate(tokens):
        assert t == int(model.logits(prompt + tokens[:i])[-1].argmax())


def test_stop_strings_end_generation(model):
    full = model.generate("From fairest", 40, temperature=0)
    stop = full[5:8]
    cut = model.generate("From fairest", 40, temperature=0, stop=[stop])
    assert cut == full[:full.index(stop)]


def test_max_tokens_and_context_limit(ckpt):
    m = tellme.load(ckpt, context=40)
    ids = m.encode(TEXT)[:30]
    assert len(list(m.stream_tokens(ids, 100, temperature=0))) == 10  # stops at the context
    with pytest.raises(ValueError, match="context of 40 tokens"):
        list(m.stream_tokens(m.encode(TEXT)[:40], 5))
    with pytest.raises(ValueError, match="context of 40"):
        m.logits(m.encode(TEXT)[:41])
    assert list(m.stream_tokens(ids, 0)) == []


def test_chat_applies_the_template(model):
    msgs = [{"role": "user", "content": "Hello"}]
    assert model.tokenizer.apply_chat_template(msgs) == "<|user|>Hello\n<|assistant|>"
    reply = model.chat(msgs, 16, temperature=0)
    ids = model.tokenizer.encode("<|user|>Hello\n<|assistant|>", add_special_tokens=False)
    assert reply == model.tokenizer.decode(list(model.stream_tokens(ids, 16, temperature=0)))
    assert "".join(model.chat(msgs, 16, stream=True, temperature=0)) == reply
    with pytest.raises(ValueError, match="role"):
        model.chat([{"content": "x"}])


def test_perplexity_matches_logits(model):
    ids = model.encode(TEXT)[:60]
    logits = model.logits(ids).astype(np.float64)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    nll = (lse[:-1] - logits[np.arange(59), ids[1:]]).mean()
    r = model.perplexity(ids)
    assert r["tokens"] == 59
    assert r["perplexity"] == pytest.approx(np.exp(nll), rel=1e-9)
    windowed = model.perplexity(ids, window=32, stride=16)  # every token scored once
    assert windowed["tokens"] == 59 and windowed["perplexity"] > 1


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tellme", *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300)


def test_cli_generate_perplexity_info_chat(ckpt, model, tmp_path):
    out = run_cli("generate", "-m", ckpt, "From fairest", "-n", "12", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == "From fairest" + model.generate("From fairest", 12, temperature=0)
    out = run_cli("generate", "-m", ckpt, "From fairest", "-n", "12", "--temperature", "0", "--no-echo")
    assert out.stdout.rstrip("\n") == model.generate("From fairest", 12, temperature=0)

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = run_cli("perplexity", "-m", ckpt, text, "--window", "64")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["perplexity"] > 1 and r["tokens_per_s"] > 0

    out = run_cli("info", ckpt)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["model"]["config"]["architecture"] == "bitnet-2b4t" and info["model"]["chat_template"]

    out = run_cli("chat", "-m", ckpt, "-n", "8", "--temperature", "0", stdin="Hello\n\nAgain\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("> ") == 4  # two turns, an empty line (asked again), end of input


def test_cli_reports_bad_input(tmp_path):
    out = run_cli("generate", "-m", tmp_path / "nope", "hi")
    assert out.returncode == 1 and "model not found" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("generate", "-m", tmp_path, "hi")
    assert out.returncode == 1 and "no config.json" in out.stderr


def test_bench_e2e_writes_records(tmp_path):
    path = tmp_path / "e2e.json"
    out = run_cli("bench", "e2e", "--shape", "0.73B", "--layers", "1", "--threads", "1",
                  "--decode-tokens", "4", "--json", path)
    assert out.returncode == 0, out.stderr
    rec = [r for r in json.loads(path.read_text()) if r.get("kind") != "machine"]
    assert len(rec) == 1
    for key in ("model", "threads", "prefill_128_tokens_per_s", "prefill_512_tokens_per_s", "decode_tokens_per_s",
                "ttft_128_s", "peak_rss_mb", "load_s", "decode_pct_of_read_bw"):
        assert rec[0][key] > 0 if key not in ("model",) else rec[0][key] == "0.73B"


def test_cli_chat_ctrl_c_ends_cleanly(ckpt):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tellme", "chat", "-m", str(ckpt)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while proc.stdout.read(2) != "> ":  # the prompt: the model is loaded and input is awaited
        assert time.time() < deadline and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err


def test_bench_e2e_on_a_checkpoint(ckpt, tmp_path):
    path = tmp_path / "e2e.json"
    out = run_cli("bench", "e2e", "--model", ckpt, "--threads", "1", "--decode-tokens", "4", "--json", path)
    assert out.returncode == 0, out.stderr
    rec = [r for r in json.loads(path.read_text()) if r.get("kind") != "machine"]
    assert rec[0]["model"] == str(ckpt) and rec[0]["decode_tokens_per_s"] > 0
