"""Sampling rules (pure NumPy: no model, no torch)."""

import numpy as np
import pytest

from tellme.sampling import SamplingParams, apply_repetition_penalty, sample


def test_sampling_rules():
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 5.0, 3.0, 4.9], np.float32)
    assert sample(logits, SamplingParams(temperature=0), rng) == 1
    assert {sample(logits, SamplingParams(top_k=1), rng) for _ in range(20)} == {1}
    assert {sample(logits, SamplingParams(top_k=2, temperature=5), rng) for _ in range(200)} == {1, 3}
    assert {sample(logits, SamplingParams(top_p=0.01), rng) for _ in range(20)} == {1}
    penalised = apply_repetition_penalty(logits, [1, 0], 2.0)
    np.testing.assert_array_equal(penalised, np.array([0.5, 2.5, 3.0, 4.9], np.float32))
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(repetition_penalty=0),
                dict(min_p=-0.1), dict(min_p=1.5)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_min_p_keeps_tokens_near_the_top():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    kw = dict(temperature=1.0, top_k=0, top_p=1.0)
    # p >= 0.5 * 0.5 keeps tokens 0 and 1 only; min_p 0 keeps all four
    assert {sample(logits, SamplingParams(min_p=0.5, **kw), rng) for _ in range(300)} == {0, 1}
    assert {sample(logits, SamplingParams(min_p=0.0, **kw), rng) for _ in range(600)} == {0, 1, 2, 3}
    assert {sample(logits, SamplingParams(min_p=1.0, **kw), rng) for _ in range(50)} == {0}


def test_openai_penalties_and_logit_bias_as_defined():
    """OpenAI's definition: logit -= count * frequency_penalty + (count > 0) * presence_penalty over
    the generated tokens, then the bias is added."""
    from tellme.sampling import apply_openai_penalties

    logits = np.array([1.0, 5.0, 3.0, 4.9, 0.0], np.float32)
    generated = [1, 1, 3, 1]
    p = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias={4: 7.5, 2: -3})
    got = apply_openai_penalties(logits, generated, p)
    counts = np.bincount(generated, minlength=5)
    want = logits - counts * 0.25 - (counts > 0) * 0.5 + np.array([0, 0, -3, 0, 7.5])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    rng = np.random.default_rng(0)
    assert sample(logits, SamplingParams(temperature=0, logit_bias={0: 100}), rng) == 0
    assert sample(logits, SamplingParams(temperature=0, logit_bias={1: -100}), rng) == 3
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        sample(logits, SamplingParams(temperature=0, logit_bias={5: 1}), rng)
    for bad in (dict(presence_penalty=2.5), dict(frequency_penalty=-3), dict(logit_bias={1: 101}),
                dict(logit_bias={-1: 1}), dict(logit_bias=[1])):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_a_mask_keeps_only_the_allowed_tokens():
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 5.0, 3.0, 4.9], np.float32)
    allowed = np.array([True, False, True, False])
    assert sample(logits, SamplingParams(temperature=0), rng, allowed=allowed) == 2
    kw = dict(temperature=1.5, top_k=0, top_p=1.0)
    assert {sample(logits, SamplingParams(**kw), rng, allowed=allowed) for _ in range(200)} == {0, 2}
    with pytest.raises(ValueError, match="admits no token"):
        sample(logits, SamplingParams(**kw), rng, allowed=np.zeros(4, bool))
