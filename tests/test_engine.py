"""The native forward pass against the NumPy reference (tellme.reference), without torch:
these run under the sanitizer build too. Tolerance as in test_against_transformers.py: float order differs
(online vs plain softmax), which can flip an int8 rounding at some positions."""

import numpy as np
import pytest

import tellme

from tellme import reference
from tellme.config import ModelConfig
from tellme.kernels import TernaryWeights
from tellme.model import Model
from tellme.packed import PackedModel
from tellme.runtime import available_isas

pytestmark = pytest.mark.kernels


def random_model(act="relu2", kv_heads=2, head="int8", kernel="auto", sub_norms=True, tied=True, seed=0,
                 qwen3=False, kv="f16"):
    """qwen3: q/k norms and a scale per 32 weights along each row (Ternary Bonsai's layout)."""
    c = ModelConfig(architecture="qwen3" if qwen3 else "bitnet-2b4t", hidden=96, intermediate=136 if not qwen3 else 128,
                    layers=2, heads=4, kv_heads=kv_heads, head_dim=24, vocab=101, context=160, eps=1e-5,
                    activation=act, sub_norms=sub_norms and not qwen3, tied_embeddings=tied, rope_theta=10000.0,
                    qk_norm=qwen3)
    rng = np.random.default_rng(seed)
    f = c.intermediate
    shapes = {"q": (96, 96), "k": (24 * kv_heads, 96), "v": (24 * kv_heads, 96), "o": (96, 96),
              "gate": (f, 96), "up": (f, 96), "down": (96, f)}
    m = PackedModel(c)
    for i in range(c.layers):
        for n, s in shapes.items():
            k = kernel if kernel != "auto" else ("tlmm" if n in "qkv" else "i2")
            scale = rng.uniform(0.02, 0.1, (s[0], s[1] // 32)).astype(np.float32) if qwen3 else rng.uniform(0.02, 0.1)
            m.set_linear(i, n, TernaryWeights.pack(rng.integers(-1, 2, s, dtype=np.int8), scale, "i2" if qwen3 else k))
        for n in c.norm_names():
            dim = {"ffn_sub_norm": f, "q_norm": 24, "k_norm": 24}.get(n, 96)
            m.set_norm(i, n, (1 + 0.2 * rng.standard_normal(dim)).astype(np.float32))
    m.set_rows("embedding", rng.standard_normal((101, 96)).astype(np.float32), head)
    if not tied:
        m.set_rows("lm_head", rng.standard_normal((101, 96)).astype(np.float32), head)
    m.set_final_norm(np.ones(96, np.float32))
    return Model(m, None, kv=kv)


@pytest.mark.parametrize("kw", [
    dict(), dict(act="silu", kv_heads=4), dict(head="fp32", tied=False), dict(sub_norms=False, kernel="tlmm"),
    dict(kernel="i2", act="silu"), dict(qwen3=True, act="silu", tied=False), dict(head="int6"),
    dict(head="int6", tied=False, act="silu"), dict(kv="q8"), dict(kv="q8", qwen3=True, act="silu", tied=False),
    dict(kv_heads=1), dict(kv_heads=1, kv="q8"),
], ids=["gqa-relu2-int8", "mha-silu", "fp32-untied", "llama-tlmm", "i2-silu", "qwen3-grouped", "int6-tied",
        "int6-untied", "q8-kv", "q8-kv-qwen3", "mqa-4-heads", "mqa-4-heads-q8"])
def test_forward_matches_numpy_reference(kw, isa):
    model = random_model(**kw)
    ids = np.random.default_rng(1).integers(0, 101, 150)   # crosses attention chunks and query tiles
    ours = model.logits(ids)
    ref = reference.forward(model.packed, ids, kw.get("kv", "f16"))
    per_position = np.abs(ours - ref).max(axis=1)
    assert np.median(per_position) < 1e-3
    assert per_position.max() < 0.25 * ref.std()


@pytest.mark.parametrize("kv", ["f16", "q8"])
def test_same_bits_at_every_isa_and_thread_count(kv):
    """The attention arithmetic is fixed in lanes and order (core.h), so every ISA and thread
    count computes the same logits, in each KV format."""
    model, ids = random_model(kv=kv), np.random.default_rng(4).integers(0, 101, 150)
    previous = tellme.get_isa(), tellme.get_num_threads()
    try:
        tellme.set_isa("scalar"), tellme.set_num_threads(1)
        want = model.logits(ids)
        for isa in available_isas():
            for threads in (1, 2, 3):
                tellme.set_isa(isa), tellme.set_num_threads(threads)
                np.testing.assert_array_equal(model.logits(ids), want, err_msg=f"{isa}, {threads} threads")
    finally:
        tellme.set_isa(previous[0]), tellme.set_num_threads(previous[1])


@pytest.mark.parametrize("kv", ["f16", "q8"])
@pytest.mark.parametrize("kv_heads", [2, 1], ids=["group-2", "group-4"])
def test_decode_steps_equal_prefill(isa, kv, kv_heads):
    """Decode reads a chunk once for the group's query heads, prefill head by head: the same bits."""
    model = random_model(kv=kv, kv_heads=kv_heads)
    ids = list(np.random.default_rng(2).integers(0, 101, 80))
    full = model.logits(ids)
    cache = model.sequences.acquire().cache
    steps = [model.engine.forward(cache, np.array([t], np.int32), i, False)[0] for i, t in enumerate(ids)]
    np.testing.assert_array_equal(np.array(steps), full)


def run_alone(model, prompt, decode):
    """Logits of the prompt's last token, then of each decode token, on a fresh sequence."""
    cache = model.sequences.acquire().cache
    out = [model.engine.forward(cache, np.asarray(prompt, np.int32), 0)[0]]
    for i, t in enumerate(decode):
        out.append(model.engine.forward(cache, np.array([t], np.int32), len(prompt) + i)[0])
    return out


@pytest.mark.parametrize("kv", ["f16", "q8"])
def test_batched_steps_are_bit_identical_to_running_alone(isa, threads, kv):
    """Continuous batching: sequences join while others decode, with prefill in chunks; every
    sequence's logits equal its logits alone, bit for bit."""
    model = random_model(kernel="auto", kv=kv)
    rng = np.random.default_rng(3)
    jobs = [(list(rng.integers(0, 101, n)), list(rng.integers(0, 101, 6))) for n in (5, 40, 1, 23)]
    alone = [run_alone(model, p, d) for p, d in jobs]
    caches = [model.sequences.acquire().cache for _ in jobs]
    got = [[] for _ in jobs]
    state = [dict(pos=0, decoded=0) for _ in jobs]
    for step in range(20):
        items, who = [], []
        for j, (prompt, decode) in enumerate(jobs):
            if step < j:  # job j joins at step j
                continue
            s = state[j]
            if s["pos"] < len(prompt):  # prefill in chunks of 16, interleaved with others' decode
                chunk = prompt[s["pos"]:s["pos"] + 16]
                items.append((caches[j], np.asarray(chunk, np.int32), s["pos"], s["pos"] + len(chunk) == len(prompt)))
                s["pos"] += len(chunk)
            elif s["decoded"] < len(decode):
                items.append((caches[j], np.array([decode[s["decoded"]]], np.int32), s["pos"], True))
                s["pos"] += 1
                s["decoded"] += 1
            else:
                continue
            who.append(j)
        for j, logits in zip(who, model.engine.forward_batch(items)):
            if logits is not None:
                got[j].append(logits)
    for j in range(len(jobs)):
        assert len(got[j]) == len(alone[j])
        for a, b in zip(got[j], alone[j]):
            np.testing.assert_array_equal(a, b)


def test_forward_batch_refuses_bad_items():
    model = random_model()
    a, b = model.sequences.acquire().cache, model.sequences.acquire().cache
    one = np.array([1], np.int32)
    with pytest.raises(ValueError, match="twice"):
        model.engine.forward_batch([(a, one, 0, True), (a, one, 1, True)])
    with pytest.raises(ValueError, match="exceed the context"):
        model.engine.forward_batch([(a, one, 0, True), (b, one, model.context, True)])
    with pytest.raises(ValueError, match="vocabulary"):
        model.engine.forward_batch([(a, np.array([101], np.int32), 0, True)])
    other = random_model()
    with pytest.raises(ValueError, match="another engine"):
        other.engine.forward(a, one, 0)


def test_positions_must_follow_what_the_cache_holds():
    """A step may rewind or continue a sequence, never skip positions: attention would read keys
    and values nobody wrote. A failed or refused step leaves the valid prefix as it was."""
    model = random_model()
    cache = model.sequences.acquire().cache
    tokens = np.array([1, 2, 3, 4], np.int32)
    with pytest.raises(ValueError, match=r"position 1 would leave positions 0..0 .*holds \[0, 0\)"):
        model.engine.forward(cache, tokens, 1)
    model.engine.forward(cache, tokens, 0)
    with pytest.raises(ValueError, match=r"position 5 would leave positions 4..4"):
        model.engine.forward(cache, tokens[:1], 5)
    continued = model.engine.forward(cache, tokens[:1], 4)  # the next position: fine
    rewound = model.engine.forward(cache, tokens[:2], 2)     # back to position 2: [0, 4) valid now
    with pytest.raises(ValueError, match=r"position 5 would leave positions 4..4"):
        model.engine.forward(cache, tokens[:1], 5)          # position 4 is stale after the rewind
    fresh = model.sequences.acquire().cache
    np.testing.assert_array_equal(continued, model.engine.forward(fresh, np.array([1, 2, 3, 4, 1], np.int32), 0))
    np.testing.assert_array_equal(rewound, model.engine.forward(fresh, np.array([1, 2, 1, 2], np.int32), 0))
    with pytest.raises(ValueError, match="would leave"):
        model.engine.forward_batch([(fresh, tokens[:1], 4, True), (cache, tokens[:1], 9, True)])


def test_threads_and_interleaved_generators_share_one_model():
    import threading

    model = random_model()
    rng = np.random.default_rng(4)
    prompts = [list(rng.integers(0, 101, n)) for n in (7, 30, 3, 12)]
    expected = [list(model.stream_tokens(p, 12, temperature=0)) for p in prompts]
    # interleaved generators in one thread
    gens = [model.stream_tokens(p, 12, temperature=0) for p in prompts]
    got = [[] for _ in prompts]
    for _ in range(12):
        for g, out in zip(gens, got):
            out.append(next(g))
    assert got == expected
    # several threads at once, each with its own requests
    results, errors = {}, []

    def worker(k):
        try:
            for r in range(3):
                p = prompts[(k + r) % len(prompts)]
                results[(k, r)] = (p, list(model.stream_tokens(p, 12, temperature=0)))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for p, out in results.values():
        assert out == expected[prompts.index(p)]
    logits = model.logits(prompts[1])  # whole-sequence logits while nothing else runs
    assert np.array_equal(logits[-1], model.logits(prompts[1])[-1])


def test_all_sequences_in_use_is_a_clear_error():
    from tellme.errors import UsageError
    from tellme.packed import PackedModel

    model = random_model()
    small = Model(PackedModel(model.config, model.packed.arrays()), None, max_sequences=2)
    gens = [small.stream_tokens([1, 2], 5, temperature=0) for _ in range(3)]
    next(gens[0]), next(gens[1])
    with pytest.raises(UsageError, match="all 2 sequences"):
        next(gens[2])
    gens[0].close()  # a finished or closed generator gives its sequence back
    assert len(list(small.stream_tokens([1, 2], 5, temperature=0))) == 5


def test_kv_format_is_checked():
    from tellme.errors import UsageError
    with pytest.raises(UsageError, match="kv must be one of f16, q8"):
        random_model(kv="q4")
    model = random_model(kv="q8")
    assert model.kv == model.engine.kv == "q8"
    assert model.engine.cache_bytes_per_position == 2 * 2 * 2 * (24 + 4)  # K and V, layers, kv heads, int8 + scale
