"""A whole model through the TeLLMe v2 datapath (tellme.accel.forward) against tellme's exact
engine: on the shipped model and on a 0.73B-shaped checkpoint (2 of its 24 layers)."""

from dataclasses import replace

import numpy as np
import pytest

import tellme
from tellme.accel import numerics as nm
from tellme.accel.forward import AccelEngine
from tellme.config import ModelConfig
from tellme.errors import TellmeError
from tellme.model import Model
from tellme.packed import PackedModel

from .helpers import SyntheticReader

# IDEAL with tellme's fp16 KV cache: the native engine's arithmetic up to float32 summation order
NATIVE_LIKE = replace(nm.IDEAL, kv_fp16=True)


@pytest.fixture(scope="module")
def shipped():
    return tellme.load("default", head="int8")


@pytest.fixture(scope="module")
def shape_073b():
    c = ModelConfig(architecture="bitnet-1bitllm", hidden=1536, intermediate=4096, layers=2, heads=16, kv_heads=16,
                    head_dim=96, vocab=512, context=64, eps=1e-5, activation="silu", sub_norms=True,
                    tied_embeddings=False, rope_theta=10000.0)
    reader = SyntheticReader(c, seed=3)
    reader.lm_head = lambda: np.random.default_rng(9).standard_normal((c.vocab, c.hidden)).astype(np.float32)
    return Model(PackedModel.pack(reader, head="int8"), None)


def _ids(model, n, seed=0):
    return np.random.default_rng(seed).integers(0, model.config.vocab, n).tolist()


@pytest.mark.parametrize("which", ["shipped", "shape_073b"])
def test_without_approximations_it_is_the_native_engine(which, request):
    native = request.getfixturevalue(which)
    ids = native.encode("ROMEO:\nI will tell thee, my lord") if which == "shipped" else _ids(native, 12)
    accel = Model(native.packed, native.tokenizer, numerics=NATIVE_LIKE)
    want, got = native.logits(ids), accel.logits(ids)
    if which == "shipped":
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    else:  # random weights: a summation-order difference in attention can flip an int8 rounding,
        # which random weights amplify; the first position (no softmax) agrees as closely as above
        assert np.abs(got[0] - want[0]).max() <= 1e-4 * np.abs(want).max()
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("which", ["shipped", "shape_073b"])
def test_the_hardware_numerics_stay_close(which, request):
    native = request.getfixturevalue(which)
    ids = _ids(native, 16, seed=1)
    want = native.logits(ids)
    got = Model(native.packed, native.tokenizer, numerics="tellme-v2").logits(ids)
    corr = np.corrcoef(got.ravel(), want.ravel())[0, 1]
    assert corr > 0.99 and (got.argmax(1) == want.argmax(1)).mean() >= 0.75, corr


def test_the_integer_matmul_is_identical(shape_073b, monkeypatch):
    """Every linear's accumulators in a forward pass equal the native kernel's, bit for bit."""
    seen = []
    tlmm = nm.tlmm

    def spy(ternary, a, acc_bits=24, where=""):
        acc = tlmm(ternary, a, acc_bits, where)
        seen.append((where, a, acc))
        return acc

    monkeypatch.setattr(nm, "tlmm", spy)
    Model(shape_073b.packed, None, numerics="tellme-v2").logits(_ids(shape_073b, 9))
    assert len(seen) == 2 * 7
    for where, a, acc in seen:
        _, layer, name = where.split()
        native = shape_073b.packed.linear(int(layer), name).matmul_int(a)
        assert np.array_equal(native, acc), where
        idx = nm.encode_indices(shape_073b.packed.linear(int(layer), name).ternary())
        if name == "q":
            assert np.array_equal(nm.tlmm_lookup(idx, a[:2]), acc[:2]), where


def test_decode_runs_decode_attention(shipped):
    """A prompt and then tokens one at a time (DA) give the logits of one longer prompt (RPA)
    up to fp16 rounding; and the engine's decode is what generation uses."""
    accel = Model(shipped.packed, shipped.tokenizer, numerics="tellme-v2")
    ids = shipped.encode("JULIET:\nO Romeo, Romeo")
    eng = accel.engine
    cache = eng.new_cache(64)
    prefill = eng.forward(cache, ids[:-3], 0, True)
    decoded = eng.forward(cache, ids[-3:], len(ids) - 3, True)
    whole = eng.forward(eng.new_cache(64), ids, 0, True)
    assert np.array_equal(prefill, whole[:-3])  # the same RPA rows: causal
    assert np.abs(decoded - whole[-3:]).max() < 0.05 * np.abs(whole).max()
    text = accel.generate("ROMEO:", max_tokens=8, temperature=0)
    assert text and text == accel.generate("ROMEO:", max_tokens=8, temperature=0)


def test_decode_context_limit(shipped):
    eng = AccelEngine(shipped.packed, 1100)
    cache = eng.new_cache(1100)
    eng.forward(cache, [1], 1023, False)  # attends 1024 positions: the FIFO's depth
    with pytest.raises(TellmeError, match="score FIFO holds 1024"):
        eng.forward(cache, [1], 1024, False)


def test_overflow_names_the_linear(shape_073b):
    m = Model(shape_073b.packed, None, numerics=replace(nm.HARDWARE, acc_bits=12))
    with pytest.raises(nm.AccumulatorOverflow, match="layer 0 q: a 12-bit"):
        m.logits(_ids(shape_073b, 4))


def test_bad_numerics_name(shipped):
    for bad in ("fpga", ["tellme-v2"], None):
        with pytest.raises(tellme.errors.UsageError, match="numerics must be"):
            Model(shipped.packed, shipped.tokenizer, numerics=bad)


def test_cli_numerics(tmp_path, capsys):
    from tellme.cli import main
    assert main(["generate", "--numerics", "tellme-v2", "ROMEO:", "-n", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    text = tmp_path / "t.txt"
    text.write_text("JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n")
    ppl = {}
    for numerics in ("native", "tellme-v2"):
        assert main(["perplexity", "--numerics", numerics, str(text)]) == 0
        import json
        ppl[numerics] = json.loads(capsys.readouterr().out)["perplexity"]
    assert ppl["tellme-v2"] == pytest.approx(ppl["native"], rel=0.05) and ppl["tellme-v2"] != ppl["native"]


@pytest.mark.parametrize("kw", [dict(qwen3=True, act="silu", tied=False), dict(act="silu", kv_heads=4),
                                dict(kernel="tlmm", sub_norms=False)],
                         ids=["qwen3-qknorm-group-scales", "mha-silu", "llama-no-subnorms"])
def test_other_architectures_through_the_datapath(kw):
    """Beyond the paper's model: q/k norms, group scales, GQA or not, no sub-norms."""
    from .test_engine import random_model
    native = random_model(**kw)
    ids = np.random.default_rng(1).integers(0, 101, 40)
    want = native.logits(ids)
    got = Model(native.packed, None, numerics=NATIVE_LIKE).logits(ids)
    per_position = np.abs(got - want).max(axis=1)
    assert np.median(per_position) < 1e-3 and per_position.max() < 0.25 * want.std()
    hw = Model(native.packed, None, numerics="tellme-v2").logits(ids)
    assert np.corrcoef(hw.ravel(), want.ravel())[0, 1] > 0.98


def test_shared_between_threads(shipped):
    """One accelerator-numerics Model used by several threads at once gives each caller what it
    gets alone (the engine runs one step at a time; its caches of weights fill once)."""
    from concurrent.futures import ThreadPoolExecutor
    accel = Model(shipped.packed, shipped.tokenizer, numerics="tellme-v2", max_sequences=4)
    prompts = [_ids(shipped, 6, seed=s) for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(accel.logits, prompts))
    alone = Model(shipped.packed, shipped.tokenizer, numerics="tellme-v2")
    for ids, got in zip(prompts, together):
        assert np.array_equal(got, alone.logits(ids))
