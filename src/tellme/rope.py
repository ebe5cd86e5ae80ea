"""Rotary position embedding: frequencies and tables as transformers computes them, and the row
order that makes each rotary pair (j, j + head_dim/2) two adjacent rows."""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig


def rope_frequencies(c: ModelConfig) -> np.ndarray:
    """RoPE's inverse frequencies [head_dim/2] in float32."""
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


def rope_pair_order(heads: int, head_dim: int) -> np.ndarray:
    """Row order that puts rotary pairs (j, j + half) of each head next to each other."""
    half = head_dim // 2
    one = np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)
    return (np.arange(heads)[:, None] * head_dim + one[None, :]).reshape(-1)
