"""`Model`: a loaded ternary LLM with text generation, chat, logits and perplexity.

    >>> model = tellme.load("path/to/checkpoint")          # HF directory or converted .safetensors
    >>> for piece in model.stream("Once upon a time", max_tokens=32):
    ...     print(piece, end="", flush=True)

The forward pass is native (tellme._core.Engine): one call per prefill or decode step runs every
layer, so Python's share of a decode step is sampling and detokenizing only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .. import _core, runtime
from ..formats import packed
from ..formats.gguf_file import is_gguf
from ..formats.gguf_model import GGUFCheckpoint
from ..formats.hf import HFCheckpoint
from ..formats.safetensors import FormatError
from ..generate import SamplingParams, sample
from ..tokenizer import StreamDecoder, Tokenizer
from .config import ModelConfig
from .weights import LINEAR_NAMES, NORM_NAMES, head_type, pack_checkpoint


def rope_frequencies(c: ModelConfig) -> np.ndarray:
    """RoPE's inverse frequencies [head_dim/2] in float32, computed as transformers computes them."""
    dim = c.head_dim
    inv = np.float32(1.0) / np.power(np.float32(c.rope_theta), np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    s = c.rope_scaling
    if s and s.get("rope_type") == "factors":  # from a GGUF's rope_freqs: one divisor per frequency
        return (inv / np.asarray(s["factors"], dtype=np.float32)).astype(np.float32)
    if s:  # llama3: stretch low frequencies, blend the middle band
        factor, low, high = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
        old = float(s["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        inv = np.where(medium, blended, scaled).astype(np.float32)
    return inv


def rope_tables(c: ModelConfig, context: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [context, head_dim/2] in float32."""
    freqs = np.arange(context, dtype=np.float32)[:, None] * rope_frequencies(c)[None, :]
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


def build_engine(c: ModelConfig, tensors: dict[str, np.ndarray], context: int):
    cos, sin = rope_tables(c, context)
    e = _core.Engine(c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.head_dim, c.vocab, context,
                     c.eps, c.activation, cos, sin)

    def get(name):
        if name not in tensors:
            raise FormatError(f"tensor {name!r} is missing from the model")
        return tensors[name]

    for i in range(c.layers):
        for name in LINEAR_NAMES:
            p = f"layers.{i}.{name}"
            scale = float(get(p + ".scale")[0])
            if p + ".tiles" in tensors:
                e.set_linear(i, name, "tlmm", tensors[p + ".tiles"], get(p + ".neg_count"), *c.linear_shape(name), scale)
            else:
                e.set_linear(i, name, "i2", get(p + ".codes"), None, *c.linear_shape(name), scale)
        for name in NORM_NAMES:
            if f"layers.{i}.{name}" in tensors:
                e.set_norm(i, name, tensors[f"layers.{i}.{name}"])
            elif c.sub_norms or name in ("attn_norm", "ffn_norm"):
                raise FormatError(f"tensor 'layers.{i}.{name}' is missing from the model")
    e.set_norm(-1, "final_norm", get("final_norm"))
    for table in ("embedding", "lm_head"):
        src = table if f"{table}.q" in tensors or f"{table}.f32" in tensors else "embedding"  # tied
        e.set_rows(table, tensors.get(f"{src}.q"), tensors.get(f"{src}.row_scale"), tensors.get(f"{src}.f32"))
    return e


def progress_bar(desc: str, enabled: bool):
    if not enabled:
        return iter
    from tqdm.auto import tqdm
    return lambda it: tqdm(it, desc=desc, unit="layer", leave=False)


def open_checkpoint(path: Path):
    """(reader, tokenizer or None) of a GGUF file or a Hugging Face directory; the reader gives
    config, linear(), norm(), embedding(), lm_head() and final_norm() (see formats/hf.py)."""
    if is_gguf(path):
        ckpt = GGUFCheckpoint(path)
        return ckpt, ckpt.tokenizer
    if path.is_dir():
        return HFCheckpoint(path), Tokenizer.from_dir(path)
    raise FormatError(f"{path}: neither a checkpoint directory nor a GGUF file")


def read_model(path: str | Path, head: str = "int8", kernel: str = "auto", progress: bool = False):
    """(config, packed tensors, tokenizer) from a checkpoint directory, a GGUF file or a converted file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.is_file() and not is_gguf(path):
        if not packed.is_packed_file(path):
            raise FormatError(f"{path}: neither a GGUF file nor a tellme model file (convert a checkpoint "
                              "directory with `tellme convert`)")
        config, tensors, tokenizer = packed.load(path)
        if head_type(tensors) != head:
            raise FormatError(f"{path}: converted with a {head_type(tensors)} LM head; {head} was asked for "
                              f"(convert again with --head {head})")
        return config, tensors, tokenizer
    ckpt, tokenizer = open_checkpoint(path)
    return ckpt.config, pack_checkpoint(ckpt, head, kernel, progress_bar("packing", progress)), tokenizer


class Model:
    def __init__(self, config: ModelConfig, tensors: dict[str, np.ndarray], tokenizer: Tokenizer | None,
                 context: int | None = None, source: str = ""):
        self.config = config
        self.tokenizer = tokenizer
        self.source = source
        self.context = int(context or config.context)
        if self.context < 1:
            raise ValueError(f"context must be >= 1, got {self.context}")
        self.head = head_type(tensors)
        self._tensors = tensors
        self._engine = build_engine(config, tensors, self.context)
        self._cached: list[int] = []   # tokens whose K/V are in the cache, in order
        self.weight_bytes = sum(a.nbytes for a in tensors.values())

    # ---- numbers in, numbers out ----
    def _run(self, ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Brings the cache to `ids` (reusing a common prefix) and returns logits of the new tokens."""
        ids = [int(t) for t in ids]
        if not ids:
            raise ValueError("no tokens to run")
        if len(ids) > self.context:
            raise ValueError(f"{len(ids)} tokens exceed the context of {self.context} tokens")
        keep = 0
        if not all_logits:
            while keep < min(len(self._cached), len(ids) - 1) and self._cached[keep] == ids[keep]:
                keep += 1
        self._cached = self._cached[:keep]
        out = self._engine.forward(np.asarray(ids[keep:], dtype=np.int32), keep, all_logits)
        self._cached = ids
        return out

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 logits [len(token_ids), vocab] of a fresh forward pass over token_ids."""
        return self._run(token_ids, all_logits=True)

    # ---- text ----
    def _tok(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(f"{self.source or 'this model'} has no tokenizer.json; use logits() with token ids")
        return self.tokenizer

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok().encode(text, add_special_tokens)

    def stream_tokens(self, prompt_ids: Sequence[int], max_tokens: int = 128, stop_ids=(), **sampling) -> Iterator[int]:
        """Yields generated token ids: prefill once, then one decode step per token."""
        params = SamplingParams(**sampling)
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        prompt_ids = list(prompt_ids)
        if len(prompt_ids) >= self.context:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context of {self.context} "
                             "tokens (one position is needed for the first generated token)")
        rng = np.random.default_rng(params.seed)
        stop_ids = set(stop_ids)
        ids = list(prompt_ids)
        if max_tokens == 0:
            return
        logits = self._run(ids)[-1]
        self._cached = ids  # grows with each decoded token below
        for _ in range(max_tokens):
            token = sample(logits, params, rng, ids)
            if token in stop_ids:
                return
            yield token
            if len(ids) + 1 >= self.context:
                return
            logits = self._engine.forward(np.array([token], dtype=np.int32), len(ids), False)[0]
            ids.append(token)

    def stream(self, prompt: str, max_tokens: int = 128, stop: Sequence[str] | str = (), **sampling) -> Iterator[str]:
        """Yields text pieces as they are generated. `stop` strings end generation (not included)."""
        ids = self._tok().encode(prompt, add_special_tokens=True)
        yield from self._stream_ids(ids, max_tokens, stop, **sampling)

    def _stream_ids(self, ids, max_tokens, stop: Sequence[str] | str, **sampling) -> Iterator[str]:
        stops = [stop] if isinstance(stop, str) else list(stop)
        decoder = StreamDecoder(self._tok())
        held = ""  # text that could still be the start of a stop string
        for token in self.stream_tokens(ids, max_tokens, self.eos_ids(), **sampling):
            held += decoder.push(token)
            if stops:
                hit = min((held.find(s) for s in stops if s in held), default=-1)
                if hit >= 0:
                    if held[:hit]:
                        yield held[:hit]
                    return
                safe = len(held) - max(len(s) - 1 for s in stops)
                if safe > 0:
                    yield held[:safe]
                    held = held[safe:]
            elif held:
                yield held
                held = ""
        if held:
            yield held

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop: Sequence[str] | str = ()) -> str:
        return "".join(self.stream(prompt, max_tokens, stop, temperature=temperature, top_k=top_k, top_p=top_p,
                                   repetition_penalty=repetition_penalty, seed=seed))

    def chat(self, messages: list[dict], max_tokens: int = 256, stream: bool = False, **kwargs):
        """Reply to `messages` ([{"role": ..., "content": ...}]) using the model's chat template.

        Stops at EOS, at `stop` strings, or by default at the model's generation_config.json
        stop_strings."""
        text = self._tok().apply_chat_template(messages, add_generation_prompt=True)
        ids = self._tok().encode(text, add_special_tokens=False)
        stop = kwargs.pop("stop", None)
        if stop is None:  # the model's own end of a turn (generation_config.json stop_strings)
            stop = self.config.stop_strings
        pieces = self._stream_ids(ids, max_tokens, stop, **kwargs)
        return pieces if stream else "".join(pieces)

    def eos_ids(self) -> set[int]:
        ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            for key in ("eos_token", "eot_token"):
                t = self.tokenizer.token_id(self.tokenizer.config.get(key))
                if t is not None:
                    ids.add(t)
        return ids

    def perplexity(self, text: str | Sequence[int], window: int | None = None, stride: int | None = None) -> dict:
        """Sliding-window perplexity: each window of `window` tokens is scored on the tokens it
        adds beyond the previous window (`stride` new tokens per window, context before them)."""
        ids = self._tok().encode(text, add_special_tokens=True) if isinstance(text, str) else list(text)
        window = min(window or self.context, self.context)
        stride = stride or window // 2 or 1
        if len(ids) < 2:
            raise ValueError("perplexity needs at least 2 tokens")
        if not (1 <= stride <= window):
            raise ValueError(f"stride must be in [1, window={window}], got {stride}")
        nll, scored, start_t = 0.0, 0, time.perf_counter()
        prev_end = 0
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            logits = self.logits(ids[begin:end])
            first = max(prev_end, begin + 1)  # first token scored here (token 0 has no context)
            targets = np.asarray(ids[first:end])
            rows = logits[first - begin - 1:end - begin - 1].astype(np.float64)
            m = rows.max(axis=1)
            lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
            nll += float((lse - rows[np.arange(targets.size), targets]).sum())
            scored += targets.size
            prev_end = end
            if end == len(ids):
                break
        seconds = time.perf_counter() - start_t
        return {"perplexity": math.exp(nll / scored), "tokens": scored, "seconds": seconds,
                "tokens_per_s": len(ids) / seconds if seconds > 0 else float("inf")}


def default_model_path() -> Path:
    """Directory of the small model shipped with tellme (trained by `tellme train`, see README)."""
    return Path(__file__).resolve().parent.parent / "default_model"


def load(path: str | Path = "default", threads: int | None = None, context: int | None = None, head: str = "int8",
         kernel: str = "auto", progress: bool | None = None) -> Model:
    """Load a model: a Hugging Face checkpoint directory, a GGUF file (llama.cpp's TQ1_0/TQ2_0 or
    bitnet.cpp's I2_S), a file written by `tellme convert`, or "default" for the small model
    shipped with tellme.

    threads: native threads (default: physical cores); context: KV cache length in tokens
    (default: the model's max_position_embeddings; memory is committed only as it fills);
    head: "int8" (per-row scales, default) or "fp32" embedding and LM head; kernel: "auto",
    "tlmm" or "i2" for every ternary linear (ignored for converted files).
    """
    if str(path) == "default":
        path = default_model_path()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"the default model is missing from this installation ({path})")
    if threads is not None:
        runtime.set_num_threads(threads)
    if progress is None:
        import sys
        progress = sys.stderr.isatty()
    config, tensors, tokenizer = read_model(path, head, kernel, progress)
    return Model(config, tensors, tokenizer, context, str(path))
