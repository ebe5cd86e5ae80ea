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
