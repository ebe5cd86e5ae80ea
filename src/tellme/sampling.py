"""Sampling over one row of logits: penalties (repetition, presence, frequency), logit bias, the
tokens a grammar allows, then temperature, top-k, top-p and min-p."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UsageError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8      # 0: greedy
    top_k: int = 40               # 0: no limit
    top_p: float = 0.95           # 1: no limit
    min_p: float = 0.0            # drop tokens below min_p * the top token's probability; 0: off
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0     # OpenAI's: subtracted once from each token already generated
    frequency_penalty: float = 0.0    # OpenAI's: subtracted per time a token was generated
    logit_bias: dict | None = None    # token id -> added to its logit
    seed: int | None = None

    def __post_init__(self):
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise UsageError(f"{name} must be a number, got {v!r}")
        for name, v in (("top_k", self.top_k), ("seed", self.seed)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise UsageError(f"{name} must be an integer, got {v!r}")
        if self.top_k is None:
            raise UsageError("top_k must be an integer, got None")
        if self.seed is not None and self.seed < 0:
            raise UsageError(f"seed must be >= 0 (or None for a random one), got {self.seed}")
        if not (self.temperature >= 0):
            raise UsageError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top_k must be >= 0, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.min_p <= 1):
            raise UsageError(f"min_p must be in [0, 1], got {self.min_p}")
        if not (self.repetition_penalty > 0):
            raise UsageError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not (-2 <= getattr(self, name) <= 2):
                raise UsageError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise UsageError(f"logit_bias must map token ids to numbers, got {self.logit_bias!r}")
            for k, v in self.logit_bias.items():
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                    raise UsageError(f"logit_bias: {k!r} is not a token id")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (-100 <= v <= 100):
                    raise UsageError(f"logit_bias: the bias of token {k} must be a number in [-100, 100], got {v!r}")


def apply_repetition_penalty(logits: np.ndarray, history, penalty: float) -> np.ndarray:
    """CTRL-style, as transformers does it: seen tokens' logits are divided by the penalty when
    positive and multiplied by it when negative."""
    if penalty == 1.0 or not len(history):
        return logits
    ids = np.unique(np.asarray(history, dtype=np.int64))
    logits = logits.copy()
    seen = logits[ids]
    logits[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def apply_openai_penalties(logits: np.ndarray, generated, params: SamplingParams) -> np.ndarray:
    """Presence and frequency penalties over the generated tokens, then the logit bias, as OpenAI
    defines them."""
    presence, frequency, bias = params.presence_penalty, params.frequency_penalty, params.logit_bias
    if not ((presence or frequency) and len(generated)) and not bias:
        return logits
    logits = logits.copy()
    if (presence or frequency) and len(generated):
        ids, counts = np.unique(np.asarray(generated, dtype=np.int64), return_counts=True)
        logits[ids] -= frequency * counts + presence
    if bias:
        ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))
        if ids.max() >= logits.size:
            raise UsageError(f"logit_bias: token {int(ids.max())} is beyond the vocabulary of {logits.size}")
        logits[ids] += np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    return logits


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, history=(), generated=(),
           allowed: np.ndarray | None = None) -> int:
    """The next token. `history`: the prompt and the tokens generated so far (repetition penalty);
    `generated`: those generated (presence and frequency penalties); `allowed`: one bool per token,
    the tokens a grammar admits (constrain.py), or None for all."""
    logits = apply_repetition_penalty(np.asarray(logits, dtype=np.float32), history, params.repetition_penalty)
    logits = apply_openai_penalties(logits, generated, params)
    if allowed is not None:
        if not allowed.any():
            raise UsageError("the grammar admits no token here")
        logits = np.where(allowed, logits, np.float32(-np.inf))
    if params.temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / params.temperature
    if 0 < params.top_k < z.size:
        idx = np.argpartition(-z, params.top_k - 1)[:params.top_k]
    else:
        idx = np.arange(z.size)
    idx = idx[np.argsort(-z[idx], kind="stable")]
    p = np.exp(z[idx] - z[idx[0]])
    p /= p.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), params.top_p) + 1)
        idx, p = idx[:keep], p[:keep] / p[:keep].sum()
    if params.min_p > 0:  # p is sorted, so the survivors are a prefix
        keep = int(np.count_nonzero(p >= params.min_p * p[0]))
        idx, p = idx[:keep], p[:keep] / p[:keep].sum()
    return int(idx[rng.choice(idx.size, p=p)])


def logprobs(logits: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """log softmax of the model's logits: the chosen token's, and the `top` most likely."""
    z = logits.astype(np.float64)
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    best = np.argsort(-z, kind="stable")[:top] if top else []
    return float(z[token] - lse), [(int(i), float(z[i] - lse)) for i in best]
