"""A whole model through the TeLLMe v2 datapath: `AccelEngine` runs a `PackedModel` with the
units of numerics.py in the design's order (../shared/TELLME-HARDWARE.md, "Dataflow per layer"):

    x = embedding[id] (fp16, the host)
    per layer:  n = rmsnorm(x); q = rope(deq(tlmm(Q(n)))); k = rope(...) -> K cache; v -> V cache
                a = RPA (prompt) or DA (decode); x = x + deq(tlmm(Q(subnorm(a))))        (o)
                m = rmsnorm(x); f = act(deq(tlmm(Q(m)))) * deq(tlmm(Q(m)))               (gate, up)
                x = x + deq(tlmm(Q(subnorm(f))))                                         (down)
    logits = int8 head(Q(rmsnorm(x))) (the host)

Q is the per-token quantizer, deq the dequantizer; a prompt runs from position 0 through RPA and
every later token one at a time through DA, as the board runs them. It has the native engine's
interface (`forward(cache, ids, position, all_logits)`, `new_cache(capacity)`), so a `Model`
built on it generates and scores text with these numerics (`tellme.load(..., numerics="tellme-v2")`).
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import UsageError
from ..kernels.reference import quantize as quantize_rows
from ..packed import PackedModel
from ..rope import rope_tables
from . import numerics as nm


class AccelCache:
    """One sequence's fp16 K and V caches [layers, capacity, kv_heads * head_dim]."""

    def __init__(self, layers: int, capacity: int, kv_dim: int, dtype):
        self.k = np.zeros((layers, capacity, kv_dim), dtype)
        self.v = np.zeros((layers, capacity, kv_dim), dtype)


class AccelEngine:
    def __init__(self, packed: PackedModel, context: int, numerics: nm.Numerics = nm.HARDWARE):
        self.packed, self.config, self.context, self.numerics = packed, packed.config, context, numerics
        dt = numerics.dtype
        cos, sin = rope_tables(self.config, context)
        self.cos, self.sin = cos.astype(dt), sin.astype(dt)
        self._ternary: dict[tuple[int, str], np.ndarray] = {}
        self._embedding: np.ndarray | None = None
        self._head: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()  # one step at a time, as on the board

    def new_cache(self, capacity: int) -> AccelCache:
        c = self.config
        return AccelCache(c.layers, capacity, c.kv_heads * c.head_dim, self.numerics.kv_dtype)

    # ---- weights, converted once ----
    def _weights(self, layer: int, name: str):
        w = self.packed.linear(layer, name)
        if (layer, name) not in self._ternary:  # unpacked once: int8 [out, in]
            self._ternary[layer, name] = w.ternary()
        return self._ternary[layer, name], w

    def embedding(self) -> np.ndarray:
        """The host's embedding table in the activation dtype (fp16), dequantized once."""
        if self._embedding is None:
            self._embedding = self.packed.rows("embedding").float32().astype(self.numerics.dtype)
        return self._embedding

    def head_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The host's int8 LM head: the model's int8 rows as they are, other heads requantized per row."""
        if self._head is None:
            r = self.packed.rows("lm_head")
            self._head = (r.q, r.row_scale) if r.q is not None else quantize_rows(r.float32())
        return self._head

    # ---- units ----
    def linear(self, layer: int, name: str, x: np.ndarray) -> np.ndarray:
        """Quantize, TLMM, dequantize: x [tokens, in] in the activation dtype -> [tokens, out]."""
        n = self.numerics
        t, w = self._weights(layer, name)
        a, amax = nm.quantize(x, n.rounding)
        where = f"layer {layer} {name}"
        if w.group_scale is None:
            return nm.dequantize(nm.tlmm(t, a, n.acc_bits, where), amax, w.scale, n.dtype)
        # group scales (beyond the design, which has one scale per linear): each group's exact sum
        # times its scale, added in float32 group by group, then the token's scale
        gs = w.group_scale[:w.out_features].astype(np.float32)
        g = w.in_features // gs.shape[1]
        y = np.zeros((a.shape[0], w.out_features), np.float32)
        for j in range(gs.shape[1]):
            cols = slice(j * g, (j + 1) * g)
            y += nm.tlmm(t[:, cols], a[:, cols], n.acc_bits, where).astype(np.float32) * gs[:, j][None]
        return nm.dequantize(y, amax, 1.0, n.dtype)

    def _norm(self, x, gamma):
        return nm.rmsnorm(x, gamma, self.config.eps, self.numerics.dtype)

    def _act(self, g):
        n = self.numerics
        return nm.silu(g, n.silu_table, n.dtype) if self.config.activation == "silu" else nm.relu2(g, n.dtype)

    def _head_norm(self, x, layer, name, heads):
        hd = self.config.head_dim
        return self._norm(x.reshape(-1, hd), self.packed.norm(layer, name)).reshape(x.shape[0], heads * hd)

    def layer(self, i: int, x: np.ndarray, cache: AccelCache, position: int) -> np.ndarray:
        c, p, dt = self.config, self.packed, self.numerics.dtype
        n = x.shape[0]
        cos, sin = self.cos[position:position + n], self.sin[position:position + n]
        h = self._norm(x, p.norm(i, "attn_norm"))
        q, k = self.linear(i, "q", h), self.linear(i, "k", h)
        if c.qk_norm:
            q, k = self._head_norm(q, i, "q_norm", c.heads), self._head_norm(k, i, "k_norm", c.kv_heads)
        q, k = nm.rope(q, cos, sin, dt), nm.rope(k, cos, sin, dt)
        cache.k[i, position:position + n] = k
        cache.v[i, position:position + n] = self.linear(i, "v", h)
        keys, values = cache.k[i, :position + n].astype(dt), cache.v[i, :position + n].astype(dt)
        if position == 0:
            att = nm.prefill_attention(q, keys, values, c.heads, c.kv_heads, dt)
        else:
            att = nm.decode_attention(q, keys, values, c.heads, c.kv_heads, dt)
        if c.sub_norms:
            att = self._norm(att, p.norm(i, "attn_sub_norm"))
        x = x + self.linear(i, "o", att)
        m = self._norm(x, p.norm(i, "ffn_norm"))
        f = self._act(self.linear(i, "gate", m)) * self.linear(i, "up", m)
        if c.sub_norms:
            f = self._norm(f, p.norm(i, "ffn_sub_norm"))
        return x + self.linear(i, "down", f)

    def _step(self, cache: AccelCache, ids: np.ndarray, position: int) -> np.ndarray:
        x = self.embedding()[ids]
        for i in range(self.config.layers):
            x = self.layer(i, x, cache, position)
        h = self._norm(x, self.packed.final_norm)
        rows, scale = self.head_rows()
        return nm.head_logits(h, rows, scale, self.numerics.rounding)

    def forward(self, cache: AccelCache, ids, position: int, all_logits: bool) -> np.ndarray:
        """Logits [len(ids) or 1, vocab] of `ids` placed at `position` of `cache`: from position 0 as one
        prompt (RPA), later tokens one by one (DA)."""
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            raise UsageError("no tokens to run")
        if position + len(ids) > cache.k.shape[1]:
            raise UsageError(f"{position + len(ids)} positions exceed the cache of {cache.k.shape[1]}")
        if ids.min() < 0 or ids.max() >= self.config.vocab:
            raise UsageError(f"token ids must be in [0, {self.config.vocab})")
        with self._lock:
            if position == 0:
                logits = self._step(cache, ids, 0)
            else:
                logits = np.concatenate([self._step(cache, ids[j:j + 1], position + j) for j in range(len(ids))])
        return logits if all_logits else logits[-1:]


