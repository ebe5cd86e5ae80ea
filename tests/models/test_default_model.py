"""The small model shipped with tellme, and `tellme train` that made it."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tellme
from tellme.train import TrainConfig, train

HELD_OUT = Path(__file__).parent.parent / "data" / "shakespeare_heldout.txt"  # from the held-out 10%


@pytest.fixture(scope="module")
def model():
    return tellme.load()


def test_shipped_and_small(model):
    path = tellme.default_model_path()
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= files
    assert sum(p.stat().st_size for p in path.iterdir()) <= 8 * 2**20
    from tellme.formats.hf import read_config
    assert model.config.architecture == "bitnet-2b4t" and read_config(path)[1] == "autobitlinear"


def test_perplexity_agrees_with_the_pytorch_model(model):
    """Held-out perplexity by tellme vs the saved model run by transformers (the training model's
    forward: the same ternary weights, scales and int8 activations), windows of 256 tokens."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(str(tellme.default_model_path()), dtype=torch.float32).eval()
    ids = model.encode(HELD_OUT.read_text(encoding="utf-8"))
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids) - 1, 256):
            x = torch.tensor([ids[i:i + 256]])
            logits = ref(x).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += x.shape[1] - 1
    ours = model.perplexity(ids, window=256, stride=256)
    assert ours["tokens"] == count
    assert abs(ours["perplexity"] / math.exp(nll / count) - 1) < 0.01


def test_int6_head_costs_under_half_a_percent(model):
    """The 6-bit head's price on the held-out text: perplexity within 0.5% of the int8 head's
    (docs/benchmarks.md: the bar a cheaper head must pass)."""
    six = tellme.load(head="int6")
    ids = model.encode(HELD_OUT.read_text(encoding="utf-8"))
    p8 = model.perplexity(ids, window=256, stride=256)["perplexity"]
    p6 = six.perplexity(ids, window=256, stride=256)["perplexity"]
    assert abs(p6 / p8 - 1) < 0.005, (p6, p8)


def test_greedy_generation_is_deterministic(model):
    saved = tellme.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 1):
            tellme.set_num_threads(threads)
            outs.append(model.generate("ROMEO:", 40, temperature=0))
    finally:
        tellme.set_num_threads(saved)
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) > 20


def test_cli_uses_the_default_model(model):
    out = subprocess.run([sys.executable, "-m", "tellme", "generate", "ROMEO:", "-n", "16", "--temperature", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == "ROMEO:" + model.generate("ROMEO:", 16, temperature=0)


def test_chat_stops_at_the_end_of_a_speech(model):
    reply = model.chat([{"role": "user", "content": "What light through yonder window breaks?"}], 64, temperature=0)
    assert "\n\n" not in reply


def test_training_smoke(tmp_path):
    """Five QAT steps on a tiny configuration; the result loads and runs in tellme."""
    c = TrainConfig(vocab=300, hidden=64, layers=2, heads=2, kv_heads=1, intermediate=96, context=64, seq=32,
                    batch=4, steps=5, warmup=2, eval_every=5)
    meta = train(str(HELD_OUT), str(tmp_path / "m"), c, plot=str(tmp_path / "loss.png"), log=lambda *_: None)
    assert meta["steps"] == 5 and np.isfinite(meta["val_perplexity"])
    assert (tmp_path / "loss.png").stat().st_size > 0
    m = tellme.load(tmp_path / "m")
    assert m.config.hidden == 64 and len(m.generate("ROMEO:", 5, temperature=0, seed=0)) >= 0
    first = m.logits(m.encode("ROMEO:"))
    assert np.isfinite(first).all()
