"""The packed model: every tensor the native engine needs, by name, as numpy arrays.

One dict layout serves both paths: `pack_checkpoint` builds it from a Hugging Face checkpoint (in
memory), `tellme convert` writes it to a safetensors file, and loading that file gives it back
as memory-mapped views. Names:

    layers.{i}.{q,k,v,o,gate,up,down}.{tiles,neg_count | codes}, .scale   ternary linears
    layers.{i}.{attn_norm,ffn_norm,attn_sub_norm,ffn_sub_norm}            fp32 norms
    embedding.q / embedding.row_scale (int8 head) or embedding.f32        [vocab, hidden]
    lm_head.*  (absent when tied to the embedding), final_norm

q and k rows are reordered per head so that RoPE's pairs (j, j + head_dim/2) are adjacent rows
(2j, 2j+1): the matmul epilogue then rotates within one row block. Attention scores are dot
products over the head, which the same reordering of q and k leaves unchanged.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..kernels import TernaryWeights, preferred_kernel
from .config import ModelConfig

LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")
NORM_NAMES = ("attn_norm", "ffn_norm", "attn_sub_norm", "ffn_sub_norm")
HEAD_TYPES = ("int8", "fp32")


def rope_pair_order(heads: int, head_dim: int) -> np.ndarray:
    """Row order that puts rotary pairs (j, j + half) of each head next to each other."""
    half = head_dim // 2
    one = np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)
    return (np.arange(heads)[:, None] * head_dim + one[None, :]).reshape(-1)


def quantize_rows_int8(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row absmax int8: e ~= q * row_scale[:, None]."""
    amax = np.maximum(np.abs(e).max(axis=1), 1e-8).astype(np.float32)
    q = np.clip(np.rint(e * (np.float32(127.0) / amax)[:, None]), -127, 127).astype(np.int8)
    return q, amax / np.float32(127.0)


def pack_linear(ternary: np.ndarray, scale: float, kernel: str) -> dict[str, np.ndarray]:
    w = TernaryWeights.pack(ternary, scale, kernel)
    out = {"scale": np.array([w.scale], dtype=np.float32)}
    if w.kernel == "tlmm":
        out.update(tiles=w.data, neg_count=w.neg_count)
    else:
        out["codes"] = w.data
    return out


def pack_rows(prefix: str, table: np.ndarray, head: str) -> dict[str, np.ndarray]:
    if head == "fp32":
        return {f"{prefix}.f32": np.ascontiguousarray(table, dtype=np.float32)}
    q, s = quantize_rows_int8(table)
    return {f"{prefix}.q": q, f"{prefix}.row_scale": s}


def pack_checkpoint(ckpt, head: str = "int8", kernel: str = "auto",
                    progress: Callable[[Iterator], Iterator] = iter) -> dict[str, np.ndarray]:
    """Every tensor of `ckpt` (an HFCheckpoint-like reader) in the engine's layout."""
    if head not in HEAD_TYPES:
        raise ValueError(f"unknown head type {head!r}; expected one of {', '.join(HEAD_TYPES)}")
    c: ModelConfig = ckpt.config
    order = rope_pair_order(c.heads, c.head_dim), rope_pair_order(c.kv_heads, c.head_dim)
    tensors: dict[str, np.ndarray] = {}
    for i in progress(range(c.layers)):
        for name in LINEAR_NAMES:
            t, scale = ckpt.linear(i, name)
            if name in ("q", "k"):
                t = t[order[0] if name == "q" else order[1]]
            k = kernel if kernel != "auto" else preferred_kernel(*t.shape)
            for key, a in pack_linear(t, scale, k).items():
                tensors[f"layers.{i}.{name}.{key}"] = a
        for name in NORM_NAMES:
            g = ckpt.norm(i, name)
            if g is not None:
                tensors[f"layers.{i}.{name}"] = np.ascontiguousarray(g, dtype=np.float32)
    tensors.update(pack_rows("embedding", ckpt.embedding(), head))
    lm = ckpt.lm_head()
    if lm is not None:
        tensors.update(pack_rows("lm_head", lm, head))
    tensors["final_norm"] = np.ascontiguousarray(ckpt.final_norm(), dtype=np.float32)
    return tensors


def head_type(tensors: dict[str, np.ndarray]) -> str:
    return "fp32" if "embedding.f32" in tensors else "int8"
