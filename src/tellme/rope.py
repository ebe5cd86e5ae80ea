"""Rotary position embedding: frequencies and tables as transformers computes them, and the row
order that makes each rotary pair (j, j + head_dim/2) two adjacent rows."""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig


def yarn_attention_factor(s: dict) -> float:
    """YaRN's factor on cos and sin (transformers' default: 0.1 ln(factor) + 1, or mscale's ratio)."""
    if s.get("attention_factor") is not None:
        return float(s["attention_factor"])

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    factor = float(s["factor"])
    if s.get("mscale") and s.get("mscale_all_dim"):
        return mscale(factor, float(s["mscale"])) / mscale(factor, float(s["mscale_all_dim"]))
    return mscale(factor)


def _yarn(c: ModelConfig, s: dict) -> np.ndarray:
    """YaRN's inverse frequencies: interpolated (divided by factor) below a band of dimensions,
    as they were above it, ramped linearly between (the band from beta_fast and beta_slow)."""
    dim, base = c.head_dim, float(c.rope_theta)
    factor, old = float(s["factor"]), float(s["original_max_position_embeddings"])
    fast, slow = float(s.get("beta_fast") or 32), float(s.get("beta_slow") or 1)

    def correction_dim(rotations):
        return dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(fast), correction_dim(slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extrapolation = (np.float32(1) - ramp).astype(np.float32)
    inv = (np.float32(1) / (np.float32(factor) * pos)) * (np.float32(1) - extrapolation) + (np.float32(1) / pos) * extrapolation
    return inv.astype(np.float32)


def rope_frequencies(c: ModelConfig) -> np.ndarray:
    """RoPE's inverse frequencies [head_dim/2] in float32."""
    dim = c.head_dim
    inv = np.float32(1.0) / np.power(np.float32(c.rope_theta), np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    s = c.rope_scaling
    if s and s.get("rope_type") == "factors":  # from a GGUF's rope_freqs: one divisor per frequency
        return (inv / np.asarray(s["factors"], dtype=np.float32)).astype(np.float32)
    if s and s.get("rope_type") == "yarn":
        return _yarn(c, s)
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
    """cos/sin [context, head_dim/2] in float32 (times YaRN's attention factor where it applies)."""
    freqs = np.arange(context, dtype=np.float32)[:, None] * rope_frequencies(c)[None, :]
    cos, sin = np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)
    s = c.rope_scaling
    if s and s.get("rope_type") == "yarn":
        a = np.float32(yarn_attention_factor(s))
        cos, sin = cos * a, sin * a
    return cos, sin


def rope_pair_order(heads: int, head_dim: int) -> np.ndarray:
    """Row order that puts rotary pairs (j, j + half) of each head next to each other."""
    half = head_dim // 2
    one = np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)
    return (np.arange(heads)[:, None] * head_dim + one[None, :]).reshape(-1)
