"""Constrained decoding: each next token restricted to those that keep the output inside a grammar
(a JSON schema, any JSON object, a regex, or a Lark or GBNF grammar), by llguidance.

llguidance is the engine llama.cpp, vLLM and SGLang use. It was picked over xgrammar by measurement
(docs/serving.md, "Structured output"): both compute a 128k-token mask in tens of microseconds, a
small share of a decode step, but xgrammar needs torch, transformers and triton at run time and
took 75 ms to compile a schema against llguidance's 2 ms.

The mask is computed from the model's own tokenizer: tellme reads every tokenizer kind (HF
tokenizer.json, GGUF SentencePiece and GPT-2 BPE) into a `tokenizers` tokenizer, whose JSON
llguidance takes as it is. Each sequence has its own matcher (`Constraint`); `fill_masks` computes
a batch's masks on llguidance's threads without the GIL, so the scheduler runs it beside the
engine's forward pass.
"""

from __future__ import annotations

import json
import threading

import numpy as np

from .errors import UsageError
from .tokenizer import Tokenizer

# Compact JSON: no whitespace between tokens. A model may otherwise spend its whole budget on
# spaces and newlines inside an object (llguidance's default allows any amount).
JSON_OPTIONS = {"whitespace_flexible": False}


def _llg():
    try:
        import llguidance
        import llguidance.numpy  # noqa: F401  (the bitmask helpers)
    except ImportError:  # pragma: no cover - a base dependency
        raise UsageError("constrained decoding needs llguidance: pip install llguidance") from None
    return llguidance


def compile_grammar(json_schema=None, regex: str | None = None, grammar: str | None = None,
                    json_object: bool = False) -> str:
    """llguidance's grammar for exactly one of: a JSON schema (a dict or its JSON text), any JSON
    object, a regex, or a Lark or GBNF grammar. An invalid or unsupported one raises UsageError
    naming the argument and what is wrong."""
    llg = _llg()
    given = [n for n, v in (("json_schema", json_schema), ("regex", regex), ("grammar", grammar),
                            ("json_object", json_object or None)) if v is not None]
    if len(given) != 1:
        raise UsageError(f"give exactly one of json_schema, regex, grammar, json_object; got {given or 'none'}")
    name = given[0]
    try:
        if name == "json_schema":
            schema = json.loads(json_schema) if isinstance(json_schema, str) else json_schema
            if not isinstance(schema, dict):
                raise UsageError(f"json_schema must be a JSON object, got {type(schema).__name__}")
            text = llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        elif name == "json_object":
            text = llg.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)
        elif name == "regex":
            if not isinstance(regex, str):
                raise UsageError(f"regex must be a string, got {type(regex).__name__}")
            text = llg.LLMatcher.grammar_from_regex(regex)
        else:
            if not isinstance(grammar, str):
                raise UsageError(f"grammar must be a string (Lark or GBNF), got {type(grammar).__name__}")
            text = llg.grammar_from("grammar", grammar)
    except (ValueError, TypeError, RecursionError) as e:  # not JSON, or GBNF that does not convert
        raise UsageError(f"{name}: {e}") from None
    failed, messages = llg.LLMatcher.validate_grammar_with_warnings(text)
    if failed:
        raise UsageError(f"{name} is invalid or unsupported: {messages[0].strip()}")
    return text


class Vocabulary:
    """llguidance's view of a model's tokenizer, built once per model (about a second at 128k
    tokens). `size` is the model's vocabulary, which may exceed the tokenizer's (padding rows)."""

    def __init__(self, tokenizer: Tokenizer, size: int, eos_ids):
        llg = _llg()
        if tokenizer.vocab_size > size:
            raise UsageError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's {size}")
        eos = sorted(eos_ids)
        if not eos:
            raise UsageError("constrained decoding needs an end-of-sequence token, and this model names none")
        self.size = size
        self.tokenizer = llg.LLTokenizer(tokenizer.json, n_vocab=size, eos_token=eos)
        self._executor = llg.LLExecutor()
        self._lock = threading.Lock()  # one batch at a time on the executor's threads


class Constraint:
    """One sequence's place in a grammar: the tokens allowed next, and the tokens taken so far."""

    def __init__(self, vocabulary: Vocabulary, grammar: str):
        llg = _llg()
        self.vocabulary = vocabulary
        self.matcher = llg.LLMatcher(vocabulary.tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise UsageError(f"the grammar is invalid or unsupported: {self.matcher.get_error()}")

    def allowed(self) -> np.ndarray:
        """The tokens allowed next, as one bool per vocabulary entry."""
        masks = new_masks(1, self.vocabulary.size)
        fill_masks([self], masks)
        return unpack(masks[0], self.vocabulary.size)

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise UsageError(f"token {token} breaks the grammar: {self.matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """The grammar admits nothing more: the reply is complete."""
        return self.matcher.is_stopped()


def new_masks(rows: int, size: int) -> np.ndarray:
    return np.full((rows, (size + 31) // 32), -1, dtype=np.int32)


def fill_masks(constraints: list[Constraint], masks: np.ndarray) -> None:
    """Row i of `masks` gets constraints[i]'s allowed tokens (one bit each), computed in parallel
    without the GIL."""
    if not constraints:
        return
    import llguidance.numpy as lnp

    vocabulary = constraints[0].vocabulary  # one model's: a step's constraints share it
    with vocabulary._lock:
        lnp.fill_next_token_bitmask_par(vocabulary._executor, [(c.matcher, i) for i, c in enumerate(constraints)],
                                        masks)


def unpack(mask: np.ndarray, size: int) -> np.ndarray:
    return np.unpackbits(mask.view(np.uint8), bitorder="little")[:size].astype(bool)
