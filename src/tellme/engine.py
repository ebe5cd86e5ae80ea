"""The native engine (`tellme._core.Engine`) wired to a packed model: one call per prefill chunk or
decode token runs every layer (csrc/engine.cpp). The engine checks each tensor against its
configuration and keeps the arrays alive, so a memory-mapped file stays mapped while it runs."""

from __future__ import annotations

from . import _core
from .config import LINEAR_NAMES, NORM_NAMES
from .errors import FormatError
from .packed import PackedModel
from .rope import rope_tables


def build_engine(packed: PackedModel, context: int) -> _core.Engine:
    """An engine over `packed` with a KV cache of `context` positions (allocated, not touched)."""
    c = packed.config
    cos, sin = rope_tables(c, context)
    e = _core.Engine(c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.head_dim, c.vocab, context,
                     c.eps, c.activation, c.sub_norms, cos, sin)
    for i in range(c.layers):
        for name in LINEAR_NAMES:
            w = packed.linear(i, name)
            e.set_linear(i, name, w.kernel, w.data, w.neg_count, w.scale)
        for name in NORM_NAMES:
            gamma = packed.norm(i, name)
            if gamma is not None:
                e.set_norm(i, name, gamma)
    e.set_norm(-1, "final_norm", packed.final_norm)
    for table in ("embedding", "lm_head"):
        r = packed.rows(table)
        e.set_rows(table, r.q, r.row_scale, r.f32)
    if e.missing:
        raise FormatError(f"{packed.source}: {e.missing[0]} is missing from the model")
    return e
