"""Sampling: temperature, top-k, top-p, min-p and repetition penalty over one row of logits."""

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
    seed: int | None = None

    def __post_init__(self):
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
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


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, history=()) -> int:
    logits = apply_repetition_penalty(np.asarray(logits, dtype=np.float32), history, params.repetition_penalty)
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
