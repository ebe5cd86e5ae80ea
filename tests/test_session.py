"""The Python session (`tellme.Model`) on the shipped model, without torch: decode, generation
statistics and why generation stopped, perplexity progress."""

import math

import pytest

import tellme


@pytest.fixture(scope="module")
def model():
    return tellme.load()


def test_decode_inverts_encode(model):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?"
    assert model.decode(model.encode(text)) == text


def test_stats_say_what_happened_and_why_it_stopped(model):
    ids = model.encode("ROMEO:")
    s = tellme.GenerationStats()
    tokens = list(model.stream_tokens(ids, 10, stats=s, temperature=0))
    assert (s.prompt_tokens, s.generated_tokens, s.decode_steps, s.stop_reason) == (len(ids), 10, 9, "length")
    assert s.prefill_s > 0 and s.decode_s > 0 and s.decode_tokens_per_s > 0
    again = tellme.GenerationStats()
    assert list(model.stream_tokens(ids + tokens[:3], 2, stats=again, temperature=0)) == tokens[3:5]
    assert again.cached_tokens == len(ids) + 2  # the K/V of the earlier call were reused
    short = tellme.load(context=len(ids) + 4)
    s = tellme.GenerationStats()
    assert len(list(short.stream_tokens(ids, 100, stats=s, temperature=0))) == 4 and s.stop_reason == "context"
    stop = model.generate("ROMEO:", 200, temperature=0)[10:14]
    s = tellme.GenerationStats()
    model.generate("ROMEO:", 200, temperature=0, stop=stop, stats=s)
    assert s.stop_reason == "stop"
    s = tellme.GenerationStats()  # the first token is an end-of-sequence token
    assert list(model.stream_tokens(ids, 5, stop_ids={tokens[0]}, stats=s, temperature=0)) == []
    assert s.stop_reason == "eos"


def test_perplexity_reports_progress(model):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n" * 4
    calls = []
    r = model.perplexity(text, window=32, stride=16, progress=lambda *a: calls.append(a))
    assert len(calls) > 2 and calls[-1][0] == calls[-1][1] == r["tokens"]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert math.isclose(calls[-1][2], r["perplexity"])
