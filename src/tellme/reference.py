"""Plain NumPy forward pass over the packed tensors: the definition of what the native engine
computes, written the way transformers writes BitNet (q/k rows in Hugging Face order, RoPE by
rotate_half, softmax over the whole score row). Slow; for tests.

Per layer, with Q(x) = per-token absmax int8 quantization and lin(T, s)(x) = (Q(x) @ T.T) * s:
    h = x + o(subnorm_a(attention(rope(q(n)), rope(k(n)), v(n))))          n = rmsnorm_a(x)
    x = h + down(subnorm_f(act(gate(m)) * up(m)))                          m = rmsnorm_f(h)
K and V are rounded to fp16, as the KV cache stores them, or (kv="q8") quantized per (token, kv
head) row like a linear's input and dequantized; against a q8 cache each head of q is quantized
the same way (the scores are integer dot products, scaled). Qwen3 normalises each head of q and k
(q_norm, k_norm) before RoPE; a linear with group scales is kernels.reference.grouped_matmul.
"""

from __future__ import annotations

import numpy as np

from .config import LINEAR_NAMES
from .kernels.reference import grouped_matmul, quantize, rmsnorm
from .packed import PackedModel
from .rope import rope_pair_order, rope_tables


def _apply(t: np.ndarray, scale, x: np.ndarray) -> np.ndarray:
    q, s = quantize(x)
    if np.ndim(scale):
        return grouped_matmul(t, scale, q, s)
    acc = q.astype(np.int64) @ t.T.astype(np.int64)                     # exact
    return acc.astype(np.float32) * (s[:, None] * np.float32(scale))


def _cached(x: np.ndarray, kv: str, heads: int, hd: int) -> np.ndarray:
    """K or V [n, heads * hd] as the KV cache holds them (and q as it meets a q8 cache), in float64."""
    if kv == "f16":
        return x.astype(np.float16).astype(np.float64)
    q, s = quantize(x.reshape(-1, hd))
    return (q.astype(np.float64) * s[:, None]).reshape(-1, heads * hd)


def forward(packed: PackedModel, ids, kv: str = "f16") -> np.ndarray:
    """Logits [len(ids), vocab] for a fresh sequence."""
    c = packed.config
    ids = np.asarray(ids)
    n, hd, half = len(ids), c.head_dim, c.head_dim // 2
    qd = c.heads * hd
    cos, sin = rope_tables(c, n)
    unorder_q = np.argsort(rope_pair_order(c.heads, hd))     # packed rows -> Hugging Face rows
    unorder_k = np.argsort(rope_pair_order(c.kv_heads, hd))

    def rope(x, heads):
        x = x.reshape(n, heads, hd)
        a, b = x[..., :half], x[..., half:]
        cc, ss = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * cc - b * ss, b * cc + a * ss], axis=-1).reshape(n, heads * hd)

    def head_norm(x, name, heads):  # gamma stored in the rows' RoPE-pair order
        gamma = packed.norm(i, name)[np.argsort(rope_pair_order(1, hd))]
        return rmsnorm(x.reshape(n * heads, hd), gamma, c.eps).reshape(n, heads * hd)

    def act(g):
        return np.square(np.maximum(g, 0)) if c.activation == "relu2" else g / (1 + np.exp(-g))

    x = packed.rows("embedding").float32()[ids].astype(np.float32)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(c.layers):
        lin = {name: (w.ternary(), w.scale if w.group_scale is None else w.group_scale[:w.out_features])
               for name in LINEAR_NAMES for w in [packed.linear(i, name)]}
        h = rmsnorm(x, packed.norm(i, "attn_norm"), c.eps)
        q, k = _apply(*lin["q"], h)[:, unorder_q], _apply(*lin["k"], h)[:, unorder_k]
        if c.qk_norm:
            q, k = head_norm(q, "q_norm", c.heads), head_norm(k, "k_norm", c.kv_heads)
        q = rope(q, c.heads) if kv == "f16" else _cached(rope(q, c.heads), kv, c.heads, hd)
        k = _cached(rope(k, c.kv_heads), kv, c.kv_heads, hd)
        v = _cached(_apply(*lin["v"], h), kv, c.kv_heads, hd)
        out = np.empty((n, qd), np.float32)
        for head in range(c.heads):
            g = head // (c.heads // c.kv_heads)
            s = q[:, head * hd:(head + 1) * hd].astype(np.float64) @ k[:, g * hd:(g + 1) * hd].T / np.sqrt(hd) + mask
            pr = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, head * hd:(head + 1) * hd] = (pr / pr.sum(axis=1, keepdims=True)) @ v[:, g * hd:(g + 1) * hd]
        if c.sub_norms:
            out = rmsnorm(out, packed.norm(i, "attn_sub_norm"), c.eps)
        x = x + _apply(*lin["o"], out)
        m = rmsnorm(x, packed.norm(i, "ffn_norm"), c.eps)
        f = act(_apply(*lin["gate"], m)) * _apply(*lin["up"], m)
        if c.sub_norms:
            f = rmsnorm(f, packed.norm(i, "ffn_sub_norm"), c.eps)
        x = x + _apply(*lin["down"], f)
    head = packed.rows("lm_head")
    h = rmsnorm(x, packed.final_norm, c.eps)
    if head.f32 is not None:
        return h @ head.f32.T
    q, s = quantize(h)  # int8 or 6-bit head: the normed hidden state is quantized like a linear's input
    acc = q.astype(np.int64) @ head.integers().astype(np.int64).T
    return acc.astype(np.float32) * (s[:, None] * head.row_scale[None, :])
