"""Constrained decoding (constrain.py, llguidance): outputs that always match their grammar, under
random sampling, on every tokenizer kind tellme reads; batched with unconstrained sequences that
stay bit-identical to running alone; clear errors for grammars that cannot be used."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest

import tellme
from tellme.constrain import compile_grammar
from tellme.errors import UsageError
from tellme.model import GenerationStats
from tellme.sampling import SamplingParams
from tellme.scheduler import Request, Scheduler
from tests.helpers import failures_in_threads

jsonschema = pytest.importorskip("jsonschema")  # the test extra's; the ARM and sanitizer runs have only pytest

# nested objects, arrays, enums, anyOf, string patterns and number ranges, every part bounded so
# that a reply sampled at random ends within the token budget
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "minimum": -1, "maximum": 1, "multipleOf": 0.25},
        "mood": {"enum": ["merry", "sad", "wroth"]},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
        "home": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                  "floor": {"anyOf": [{"type": "integer", "minimum": 0,
                                                                       "maximum": 9}, {"type": "null"}]}},
                 "required": ["city", "floor"], "additionalProperties": False},
    },
    "required": ["name", "age", "score", "mood", "code", "tags", "home"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def model():
    return tellme.load(max_sequences=8)


def test_replies_match_their_schema_under_random_sampling(model):
    for seed in range(6):
        stats = GenerationStats()
        text = model.generate("ROMEO:\n", max_tokens=400, temperature=1.5, top_k=0, top_p=1.0, seed=seed,
                              json_schema=SCHEMA, stats=stats)
        assert stats.stop_reason in ("grammar", "eos"), (stats.stop_reason, text)
        jsonschema.validate(json.loads(text), SCHEMA)


def test_regex_and_grammars(model):
    for seed in range(4):
        text = model.generate("ROMEO:", 40, temperature=1.5, seed=seed, regex=r"(yes|no), my (lord|liege)!")
        assert re.fullmatch(r"(yes|no), my (lord|liege)!", text), text
    gbnf = 'root ::= "Good " ("morrow" | "night") ", " [a-z]{2,5} "."'
    lark = 'start: "Good " ("morrow" | "night") ", " /[a-z]{2,5}/ "."'
    for g in (gbnf, lark):
        text = model.generate("JULIET:", 40, temperature=1.5, seed=3, grammar=g)
        assert re.fullmatch(r"Good (morrow|night), [a-z]{2,5}\.", text), text


def test_a_reply_cut_by_max_tokens_says_so(model):
    stats = GenerationStats()
    text = model.generate("ROMEO:", 3, temperature=0, json_schema=SCHEMA, stats=stats)
    assert stats.stop_reason == "length" and text.startswith("{")


@pytest.mark.parametrize("kwargs, match", [
    (dict(json_schema={"not": {"type": "string"}}), r"json_schema .*Unimplemented keys: \[\"not\"\]"),
    (dict(json_schema={"type": "strin"}), "Invalid type: strin"),
    (dict(json_schema={"type": "integer", "minimum": 3, "maximum": 1}), "Unsatisfiable"),
    (dict(json_schema={"type": "string", "pattern": "(?<=a)b"}), "look-around"),
    (dict(json_schema={"$ref": "http://example.com/s.json"}), "does not fetch"),
    (dict(json_schema="{not json"), "json_schema"),
    (dict(json_schema=[1, 2]), "must be a JSON object"),
    (dict(regex="a{2,1}"), "regex"),
    (dict(grammar="start: missing_rule"), "unknown name"),
    (dict(regex="a", grammar='start: "a"'), "exactly one"),
    (dict(), "exactly one"),
])
def test_unusable_grammars_are_refused_by_name(kwargs, match):
    with pytest.raises(UsageError, match=match):
        compile_grammar(**kwargs)


def test_every_tokenizer_kind(tmp_path):
    """GGUF models with GPT-2 byte-level BPE, Llama 3's split, and SentencePiece-style BPE: random
    weights, random sampling, every reply valid."""
    from tellme.tokenizer import Tokenizer
    from tests.helpers import write_small_gguf
    from tests.models.test_gguf_tokenizer import CASES

    schema = {"type": "object", "properties": {"w": {"type": "string", "maxLength": 8},
                                               "n": {"type": "integer", "minimum": 0, "maximum": 99},
                                               "e": {"enum": ["naïve", "東京", "a b"]}},
              "required": ["w", "n", "e"], "additionalProperties": False}
    for kind, make in CASES.items():
        tok = make()
        config = {"bos_token": "<s>", "eos_token": "</s>"}
        path = tmp_path / f"{kind}.gguf"
        write_small_gguf(path, Tokenizer(tok.to_str(), config), vocab=tok.get_vocab_size() + 8)
        m = tellme.load(path)
        for seed in range(3):
            stats = GenerationStats()
            text = m.generate("Good morrow", 120, temperature=1.5, top_k=0, top_p=1.0, seed=seed,
                              json_schema=schema, stats=stats)
            assert stats.stop_reason in ("grammar", "eos"), (kind, text)
            jsonschema.validate(json.loads(text), schema)


def run_batch(model, requests):
    done, out = threading.Semaphore(0), {}

    def emitter(i):
        out[i] = []

        def emit(kind, value):
            if kind == "token":
                out[i].append(value.id)
            else:
                out[i].append(value)
                done.release()
        return emit

    s = Scheduler(model, 8)
    try:
        for i, (prompt, max_tokens, params, constraint) in enumerate(requests):
            s.submit(Request(prompt, max_tokens, params, emitter(i), constraint=constraint))
        for _ in requests:
            done.acquire()
        return out, dict(s.metrics)
    finally:
        s.close()


def test_a_batch_of_mixed_constrained_and_free_sequences(model):
    """8 sequences in one scheduler: the constrained ones (random sampling) all valid, the free ones
    (greedy) the same tokens as run alone."""
    prompts = [model.encode(p) for p in ("ROMEO:", "JULIET:\nO Romeo", "Nurse:", "To be")]
    requests = []
    for i in range(8):
        if i % 2:
            requests.append((prompts[i // 2], 24, SamplingParams(temperature=0), None))
        else:
            requests.append((prompts[i // 2], 400, SamplingParams(temperature=1.5, top_k=0, top_p=1.0, seed=i),
                             model.constraint(json_schema=SCHEMA)))
    out, _ = run_batch(model, requests)
    for i, (prompt, max_tokens, params, constraint) in enumerate(requests):
        *tokens, reason = out[i]
        if constraint is None:
            alone = list(model.stream_tokens(prompt, max_tokens, model.eos_ids(), temperature=0))
            assert tokens == alone
        else:
            assert reason == "stop"
            jsonschema.validate(json.loads(model.decode(tokens)), SCHEMA)


def test_shared_prompts_are_read_once_and_copied():
    """Four greedy requests with one prompt: its K/V are computed once and copied, and each reply is
    the reply run alone."""
    model = tellme.load(max_sequences=8)  # fresh: no idle sequence holds part of the prompt
    prompt = model.encode("ROMEO:\nGood morrow to thee, fair maid, and what news from Verona?\n\nJULIET:\n")
    out, metrics = run_batch(model, [(prompt, 16, SamplingParams(temperature=0), None)] * 4)
    alone = list(tellme.load().stream_tokens(prompt, 16, model.eos_ids(), temperature=0))
    assert all(out[i][:-1] == alone for i in range(4))
    # the prompt once, each follower's last prompt token, then 15 fed-back tokens per request
    assert metrics["batch_tokens"] == len(prompt) + 3 + 4 * 15


def test_copy_prefix_checks_its_arguments(model):
    from tellme import _core

    a, b = (_core.KVCache(model.engine, 16) for _ in range(2))
    model.engine.forward(a, np.arange(5, dtype=np.int32), 0, False)
    with pytest.raises(ValueError, match="source holds"):
        b.copy_prefix(a, 6)
    with pytest.raises(ValueError, match="itself"):
        a.copy_prefix(a, 2)
    other = tellme.load()
    with pytest.raises(ValueError, match="another engine"):
        _core.KVCache(other.engine, 16).copy_prefix(a, 2)
    b.copy_prefix(a, 5)  # then b continues as a does
    x = model.engine.forward(a, np.array([7], np.int32), 5, False)
    y = model.engine.forward(b, np.array([7], np.int32), 5, False)
    np.testing.assert_array_equal(x, y)


def test_constrained_generation_from_many_threads():
    """One Model shared by threads, each with its own grammar state (and one vocabulary built once,
    by whichever thread gets there first)."""
    model = tellme.load(max_sequences=4)
    results = {}

    def one(i):
        results[i] = model.generate("ROMEO:\n", 230, temperature=1.5, top_k=0, top_p=1.0, seed=i, json_schema=SCHEMA)

    errors = failures_in_threads(one, 4)
    assert not errors, errors
    for i in range(4):
        jsonschema.validate(json.loads(results[i]), SCHEMA)
        assert results[i] == model.generate("ROMEO:\n", 230, temperature=1.5, top_k=0, top_p=1.0, seed=i,
                                            json_schema=SCHEMA)  # as run alone
