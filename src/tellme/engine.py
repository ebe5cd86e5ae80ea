"""The native engine (`tellme._core.Engine`) wired to a packed model, and the sequences that run on
it. One engine call runs every layer for a step of one or several sequences (csrc/engine.cpp); the
engine checks each tensor against its configuration and keeps the arrays alive, so a memory-mapped
file stays mapped while it runs. Each sequence has its own KV cache (`_core.KVCache`); calls from
several threads are serialised inside the engine."""

from __future__ import annotations

import threading

from . import _core
from .config import DEFAULT_KV, LINEAR_NAMES, NORM_NAMES
from .errors import FormatError
from .packed import PackedModel
from .rope import rope_tables


def build_engine(packed: PackedModel, context: int, kv: str = DEFAULT_KV) -> _core.Engine:
    """An engine over `packed` for sequences of up to `context` positions (its RoPE tables; each
    sequence's KV cache, in format `kv`, is a `Sequence` of its own)."""
    c = packed.config
    cos, sin = rope_tables(c, context)
    e = _core.Engine(c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.head_dim, c.vocab, context,
                     c.eps, c.activation, c.sub_norms, cos, sin, c.qk_norm, kv)
    for i in range(c.layers):
        for name in LINEAR_NAMES:
            w = packed.linear(i, name)
            e.set_linear(i, name, w.kernel, w.data, w.neg_count, w.scale, w.group_scale, w.group)
        for name in NORM_NAMES:
            gamma = packed.norm(i, name)
            if gamma is not None:
                e.set_norm(i, name, gamma)
    e.set_norm(-1, "final_norm", packed.final_norm)
    for table in ("embedding", "lm_head"):
        r = packed.rows(table)
        e.set_rows(table, r.q, r.row_scale, r.f32, r.q6)
    if e.missing:
        raise FormatError(f"{packed.source}: {e.missing[0]} is missing from the model")
    return e


class Sequence:
    """One sequence: its KV cache and the tokens whose keys and values are in it, in order."""

    def __init__(self, engine, capacity: int):
        # an engine other than the native one (accel.forward.AccelEngine) makes its own caches
        new_cache = getattr(engine, "new_cache", None)
        self.cache = new_cache(capacity) if new_cache else _core.KVCache(engine, capacity)
        self.tokens: list[int] = []

    def copy_prefix(self, other: "Sequence", count: int) -> bool:
        """Takes `other`'s first `count` positions (their K/V and tokens) instead of running them;
        False where the engine's caches cannot copy (the accelerator model's)."""
        if not hasattr(self.cache, "copy_prefix"):
            return False
        self.cache.copy_prefix(other.cache, count)
        self.tokens[:] = other.tokens[:count]
        return True

    def reusable(self, ids: list[int]) -> int:
        """How many leading ids already have their K/V here (the last one is always run again)."""
        return common_prefix(self.tokens, ids, len(ids) - 1)


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """The length of a's and b's common start, at most `limit`: a binary search over slice
    comparisons (each in C), as prompts of thousands of tokens are compared every step."""
    limit = max(0, min(limit, len(a), len(b)))
    if a[:limit] == b[:limit]:
        return limit
    lo, hi = 0, limit  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class SequencePool:
    """At most `limit` sequences of one engine. A released sequence keeps its tokens, and the next
    request takes the idle one sharing the longest prefix with its prompt (its K/V are reused)."""

    def __init__(self, engine: _core.Engine, capacity: int, limit: int):
        self.engine, self.capacity, self.limit = engine, capacity, limit
        self._lock = threading.Lock()
        self._idle: list[Sequence] = []
        self.busy = 0

    def acquire(self, ids: list[int] = ()) -> Sequence | None:
        """A sequence for a request starting with `ids`, or None when all `limit` are in use."""
        ids = list(ids)
        with self._lock:
            if self._idle:
                best = max(self._idle, key=lambda s: s.reusable(ids))
                self._idle.remove(best)
            elif self.busy < self.limit:
                best = None
            else:
                return None
            self.busy += 1
        return best if best is not None else Sequence(self.engine, self.capacity)

    def release(self, seq: Sequence) -> None:
        with self._lock:
            self.busy -= 1
            self._idle.append(seq)
