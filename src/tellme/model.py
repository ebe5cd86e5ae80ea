"""`Model`: a loaded ternary LLM with text generation, chat, logits and perplexity.

    >>> model = tellme.load("path/to/checkpoint")          # HF directory, GGUF or converted file
    >>> for piece in model.stream("Once upon a time", max_tokens=32):
    ...     print(piece, end="", flush=True)

One native call per prefill chunk or decode token runs every layer (engine.py), so Python's share
of a decode step is sampling and detokenizing. Each call runs on a sequence (KV cache) of its own,
so a Model may be shared by threads and interleaved generators (docs/serving.md).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from .accel.forward import AccelEngine
from .accel.numerics import ACCEL_NUMERICS, Numerics
from .config import DEFAULT_KV, KV_FORMATS, LIMITS
from .constrain import Constraint, Vocabulary, compile_grammar
from .engine import Sequence, SequencePool, build_engine
from .errors import FormatError, UsageError
from .packed import PackedModel
from .sampling import SamplingParams, sample
from .tokenizer import TextStream, Tokenizer


@dataclass
class GenerationStats:
    """What one generation did, filled in as it runs (pass one as `stats=`)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0        # of the prompt, whose K/V were reused from an earlier call
    prefill_s: float = 0.0
    generated_tokens: int = 0
    decode_steps: int = 0         # forward passes after the prefill (the first token comes from it)
    decode_s: float = 0.0         # in forward passes and sampling, not in the caller's hands
    stop_reason: str = ""         # "eos", "stop" (a stop string), "grammar" (complete), "length" (max_tokens), "context"

    @property
    def prefill_tokens_per_s(self) -> float:
        n = self.prompt_tokens - self.cached_tokens
        return n / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s > 0 else float("nan")


def _count(value, name: str, low: int = 0, high: int | None = None) -> int:
    """`value` as an int in [low, high], or a UsageError in the API's terms."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        raise UsageError(f"{name} must be an integer {f'from {low} to {high}' if high else f'>= {low}'}, "
                         f"got {value!r}")
    return int(value)


def _token_ids(ids, name: str) -> list[int]:
    """A sequence of integer token ids as a list, or a UsageError (never 1.7 -> 1, never bytes)."""
    if isinstance(ids, (str, bytes, bytearray)):
        raise UsageError(f"{name} must be a sequence of integer token ids, got {type(ids).__name__}")
    a = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise UsageError(f"{name} must be a 1-D sequence of integer token ids, got {a.dtype} of shape {a.shape}")
    return [int(t) for t in a]


DEFAULT_SEQUENCES = 8   # sequences a Model holds at most (each one's KV cache is committed as it fills)


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


class Model:
    """Safe to share between threads and between interleaved generators: every call runs on a
    sequence (KV cache) of its own, taken from a pool of `max_sequences`, and the engine runs one
    step at a time. A call that finds every sequence in use raises UsageError."""

    def __init__(self, packed: PackedModel, tokenizer: Tokenizer | None, context: int | None = None,
                 max_sequences: int | None = None, numerics: "str | Numerics" = "native", kv: str | None = None):
        self.packed = packed
        self.config = c = packed.config
        self.tokenizer = tokenizer
        self.source = packed.source
        self.context = _count(c.context if context is None else context, "context", 1, LIMITS["context"])
        if kv is not None and kv not in KV_FORMATS:
            raise UsageError(f"kv must be one of {', '.join(KV_FORMATS)}, got {kv!r}")
        if kv not in (None, "f16") and numerics != "native":
            raise UsageError(f"kv={kv!r} needs numerics='native' (the accelerator's numerics keep their own fp16 cache)")
        self.kv = kv or (DEFAULT_KV if numerics == "native" else "f16")
        # each sequence reserves (without touching) a KV cache for the whole context
        row = c.head_dim + 4 if self.kv == "q8" else 2 * c.head_dim  # int8 values and a scale, or fp16
        per_sequence = 2 * c.layers * self.context * c.kv_heads * row
        tables = self.context * c.head_dim * 4  # RoPE cos/sin
        room = (physical_memory_bytes() - tables) // per_sequence
        if room < 1:
            raise UsageError(f"a context of {self.context} tokens needs {(per_sequence + tables) / 2**30:.1f} GiB for "
                             f"the KV cache and RoPE tables; this machine has {physical_memory_bytes() / 2**30:.1f} "
                             "GiB: choose a smaller context (context=, --context)")
        if max_sequences is None:
            max_sequences = min(DEFAULT_SEQUENCES, room)
        self.max_sequences = _count(max_sequences, "max_sequences", 1, room)
        self.numerics = numerics
        if numerics == "native":
            self.engine = build_engine(packed, self.context, self.kv)
        elif isinstance(numerics, Numerics) or (isinstance(numerics, str) and numerics in ACCEL_NUMERICS):
            # the accelerator's datapath in NumPy: a golden model, slow (docs/accel.md)
            self.engine = AccelEngine(packed, self.context, ACCEL_NUMERICS.get(numerics, numerics))
        else:
            raise UsageError(f"numerics must be 'native' or one of {', '.join(ACCEL_NUMERICS)}, got {numerics!r}")
        self.sequences = SequencePool(self.engine, self.context, self.max_sequences)
        self._vocabulary: Vocabulary | None = None
        self._vocabulary_lock = threading.Lock()

    # ---- numbers in, numbers out ----
    def _sequence(self, ids: list[int] = ()) -> Sequence:
        seq = self.sequences.acquire(ids)
        if seq is None:
            raise UsageError(f"all {self.max_sequences} sequences of this model are in use (unfinished generators "
                             "hold one each); close some, or load with a larger max_sequences")
        return seq

    def _run(self, seq: Sequence, ids: list[int], all_logits: bool = False) -> np.ndarray:
        """Brings `seq` to `ids` (reusing its common prefix) and returns logits of the new tokens."""
        if not ids:
            raise UsageError("no tokens to run")
        if len(ids) > self.context:
            raise UsageError(f"{len(ids)} tokens exceed the context of {self.context} tokens")
        keep = 0 if all_logits else seq.reusable(ids)
        del seq.tokens[keep:]
        out = self._forward(seq, ids[keep:], keep, all_logits)
        seq.tokens[:] = ids
        return out

    def _forward(self, seq: Sequence, ids: list[int], position: int, all_logits: bool) -> np.ndarray:
        try:
            return self.engine.forward(seq.cache, np.asarray(ids, dtype=np.int32), position, all_logits)
        except RuntimeError as e:  # the engine's only run-time failure: activations overflowed
            raise FormatError(f"{self.source}: {e}; the weights drive float32 out of range") from None

    def logits(self, token_ids: Iterable[int]) -> np.ndarray:
        """float32 logits [len(token_ids), vocab] of a fresh forward pass over token_ids."""
        ids = _token_ids(token_ids, "token_ids")
        seq = self._sequence()
        try:
            return self._run(seq, ids, all_logits=True)
        finally:
            self.sequences.release(seq)

    # ---- text ----
    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            raise UsageError(f"{self.source} has no tokenizer.json (nor GGUF tokenizer metadata); "
                             "use logits() with token ids")
        return self.tokenizer

    @property
    def vocabulary(self) -> Vocabulary:
        """The tokenizer as the grammar engine sees it: built on first use (about a second at 128k tokens)."""
        with self._vocabulary_lock:
            if self._vocabulary is None:
                self._vocabulary = Vocabulary(self._tok(), self.config.vocab, self.eos_ids())
            return self._vocabulary

    def constraint(self, json_schema=None, regex: str | None = None, grammar: str | None = None,
                   json_object: bool = False) -> Constraint | None:
        """A fresh grammar state for one reply (constrain.py), or None when none is asked for."""
        if json_schema is None and regex is None and grammar is None and not json_object:
            return None
        return Constraint(self.vocabulary, compile_grammar(json_schema, regex, grammar, json_object))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise UsageError(f"text must be a str, got {type(text).__name__}")
        return self._tok().encode(text, add_special_tokens)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tok().decode(_token_ids(ids, "ids"), skip_special_tokens)

    def stream_tokens(self, prompt_ids: Iterable[int], max_tokens: int = 128, stop_ids=(),
                      stats: GenerationStats | None = None, constraint: Constraint | None = None,
                      **sampling) -> Iterator[int]:
        """Yields generated token ids: prefill once, then one decode step per token. With a
        `constraint` (Model.constraint), only tokens its grammar admits; it ends when the grammar is
        complete."""
        params = SamplingParams(**sampling)
        max_tokens = _count(max_tokens, "max_tokens")
        prompt_ids = _token_ids(prompt_ids, "prompt_ids")
        if not prompt_ids:
            raise UsageError("the prompt is empty: generation needs at least one token")
        if len(prompt_ids) >= self.context:
            raise UsageError(f"prompt of {len(prompt_ids)} tokens does not fit the context of {self.context} "
                             "tokens (one position is needed for the first generated token)")
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens, stats.stop_reason = len(prompt_ids), "length"
        stop_ids = set(stop_ids)
        ids = prompt_ids  # a fresh list: it grows with the generated tokens
        if max_tokens == 0:
            return
        seq = self._sequence(ids)
        try:
            yield from self._generate(seq, ids, max_tokens, stop_ids, stats, params, constraint)
        finally:  # also when the caller stops early (the generator is closed)
            self.sequences.release(seq)

    def _generate(self, seq: Sequence, ids: list[int], max_tokens: int, stop_ids: set[int], stats: GenerationStats,
                  params: SamplingParams, constraint: Constraint | None) -> Iterator[int]:
        rng = np.random.default_rng(params.seed)
        start = time.perf_counter()
        prompt_length = len(ids)

        def choose(logits):
            allowed = constraint.allowed() if constraint is not None else None
            return sample(logits, params, rng, ids, ids[prompt_length:], allowed)

        stats.cached_tokens = seq.reusable(ids)
        logits = self._run(seq, ids)[-1]
        seq.tokens = ids  # grows with each decoded token below
        token = choose(logits)
        stats.prefill_s = time.perf_counter() - start
        for n in range(max_tokens):
            if token in stop_ids:
                stats.stop_reason = "eos"
                return
            if constraint is not None:
                constraint.consume(token)
            stats.generated_tokens += 1
            yield token
            if constraint is not None and constraint.finished:
                stats.stop_reason = "grammar"
                return
            if len(ids) + 1 >= self.context:
                stats.stop_reason = "context"
                return
            if n + 1 == max_tokens:
                return
            start = time.perf_counter()
            logits = self._forward(seq, [token], len(ids), False)[0]
            ids.append(token)
            token = choose(logits)
            stats.decode_s += time.perf_counter() - start
            stats.decode_steps += 1

    def stream(self, prompt: str, max_tokens: int = 128, stop: Iterable[str] | str = (),
               stats: GenerationStats | None = None, **sampling) -> Iterator[str]:
        """Yields text pieces as they are generated. `stop` strings end generation (not included).
        `json_schema=` (a dict or its JSON text), `regex=` or `grammar=` (Lark or GBNF) constrain
        the output to match it; a reply that ends on its own then matches it whole."""
        yield from self.stream_ids(self.encode(prompt), max_tokens, stop, stats, **sampling)

    def stream_ids(self, ids: Iterable[int], max_tokens: int = 128, stop: Iterable[str] | str = (),
                   stats: GenerationStats | None = None, **sampling) -> Iterator[str]:
        """Text pieces generated after the prompt token ids `ids` (see `stream`)."""
        text = TextStream(self._tok(), stop)
        constraint = self.constraint(*(sampling.pop(k, None) for k in ("json_schema", "regex", "grammar")))
        for token in self.stream_tokens(ids, max_tokens, self.eos_ids(), stats, constraint, **sampling):
            piece, stopped = text.push(token)
            if piece:
                yield piece
            if stopped:
                if stats is not None:
                    stats.stop_reason = "stop"
                return
        if text.held:
            yield text.held

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop: Iterable[str] | str = (),
                 stats: GenerationStats | None = None, json_schema=None, regex: str | None = None,
                 grammar: str | None = None, **sampling) -> str:
        """The whole reply (see `stream`); `sampling` takes SamplingParams' other fields
        (presence_penalty, frequency_penalty, logit_bias)."""
        return "".join(self.stream(prompt, max_tokens, stop, stats, temperature=temperature, top_k=top_k,
                                   top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty, seed=seed,
                                   json_schema=json_schema, regex=regex, grammar=grammar, **sampling))

    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Token ids of `messages` rendered by the model's chat template, ready for the reply;
        `tools` (OpenAI's function specs) go to templates that take them."""
        text = self._tok().apply_chat_template(messages, add_generation_prompt=True, tools=tools)
        return self._tok().encode(text, add_special_tokens=False)

    def chat(self, messages: list[dict], max_tokens: int = 256, stream: bool = False,
             stats: GenerationStats | None = None, **kwargs):
        """Reply to `messages` ([{"role": ..., "content": ...}]) using the model's chat template.

        Stops at EOS, at `stop` strings, or by default at the model's generation_config.json
        stop_strings (not when json_schema, regex or grammar decides where the reply ends)."""
        ids = self.encode_chat(messages)
        stop = kwargs.pop("stop", None)
        if stop is None and not any(kwargs.get(k) is not None for k in ("json_schema", "regex", "grammar")):
            stop = self.config.stop_strings  # the model's own end of a turn (generation_config.json), unless a grammar ends it
        pieces = self.stream_ids(ids, max_tokens, stop, stats, **kwargs)
        return pieces if stream else "".join(pieces)

    def eos_ids(self) -> set[int]:
        ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            for key in ("eos_token", "eot_token"):
                t = self.tokenizer.token_id(self.tokenizer.config.get(key))
                if t is not None:
                    ids.add(t)
        return ids

    def scored_windows(self, ids: list[int], window: int, stride: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """perplexity's sliding windows: per window of `window` tokens (starting every `stride`), the
        float64 logits rows that predict the tokens it adds beyond the previous window, and those tokens."""
        prev_end = 0
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            logits = self.logits(ids[begin:end])
            first = max(prev_end, begin + 1)  # first token scored here (token 0 has no context)
            yield logits[first - begin - 1:end - begin - 1].astype(np.float64), np.asarray(ids[first:end])
            prev_end = end
            if end == len(ids):
                return

    def perplexity(self, text: str | Iterable[int], window: int | None = None, stride: int | None = None,
                   progress: Callable[[int, int, float], None] | None = None) -> dict:
        """Sliding-window perplexity: each window of `window` tokens is scored on the tokens it
        adds beyond the previous window (`stride` new tokens per window, context before them).
        `progress(scored, total, running_ppl)` is called after each window."""
        ids = self.encode(text) if isinstance(text, str) else _token_ids(text, "text")
        window = min(self.context if window is None else _count(window, "window", 1), self.context)
        stride = max(1, window // 2) if stride is None else _count(stride, "stride", 1)
        if len(ids) < 2:
            raise UsageError("perplexity needs at least 2 tokens")
        if not (1 <= stride <= window):
            raise UsageError(f"stride must be in [1, window={window}], got {stride}")
        nll, scored, start_t = 0.0, 0, time.perf_counter()
        for rows, targets in self.scored_windows(ids, window, stride):
            m = rows.max(axis=1)
            lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
            nll += float((lse - rows[np.arange(targets.size), targets]).sum())
            scored += targets.size
            if progress is not None:
                progress(scored, len(ids) - 1, math.exp(nll / scored))
        seconds = time.perf_counter() - start_t
        return {"perplexity": math.exp(nll / scored), "tokens": scored, "seconds": seconds,
                "tokens_per_s": len(ids) / seconds if seconds > 0 else float("inf")}
