"""Cycles and DDR bytes per unit, from the design's parameters and loop structure
(../shared/TELLME-HARDWARE.md; each constant is named in design.py with its source).

A forward pass runs, per layer, the dataflow steps of the released top level one after another:
each linear's weights are loaded into URAM (WBMU) immediately before its TLMM region runs [C],
and the regions do not overlap one another [C]. Inside a region the stages stream (HLS dataflow),
so a region takes as long as its slowest stage; activations stream to and from DDR beside the
compute. Every loop iteration of the released code that starts a new DDR read (a region, a TLMM
block's activations, an RPA key step's K and V rows, a DA position) pays one read round trip
(the fitted DDR latency) [D]. What each unit costs, per forward of `tokens` tokens:

  TLMM   per token, per 84-activation block: one DDR read round trip (the block's first read),
         84 activations read one per cycle, 27 table entries written, out/Q row steps at II = 1,
         and the row sweep's pipeline depth                                              [C], [D]
  WBMU   blocks x ceil(out / 5) 768-bit beats per linear, one per cycle at most, and no faster
         than DDR (peak x efficiency)                                                    [C], [F]
  RPA    per layer, query blocks of N_pe sweep keys [N_pe b, N): per key step, a read round trip,
         heads x hd/16 cycles of 16-wide dot products, heads x hd / rpa_update_lanes of output
         update                                                                          [P], [C], [D]
  DA     per layer, two passes over L cached positions, a round trip and heads x hd/16
         cycles per position each                                                        [P], [C], [D]
  RMS-MAX  per norm and token, two passes over d at 16 values per cycle                 [C], [D]
  host_head   embedding rows, and the int8 LM head at the A53s' NEON rate or DDR rate [DS]
  host_calls  a fixed overhead per accelerator call, 12 calls per layer                  [C], [F]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ModelConfig
from .design import FITTED, LINEARS, TELLME_V2, Board, Design, Fitted, ceil_div

STEPS_PER_LAYER = 12          # accelerator calls per layer: the dataflow steps 0-11 of the top level   [C]
A53_INT8_MACS_PER_CYCLE = 4   # per core: SMLAL on a 64-bit NEON datapath (8 lanes every 2 cycles)   [DS] Cortex-A53 TRM


@dataclass
class Unit:
    cycles: float = 0.0       # on the critical path
    ddr_bytes: float = 0.0
    seconds: float = 0.0

    def add(self, cycles=0.0, ddr_bytes=0.0, seconds=0.0):
        self.cycles += cycles
        self.ddr_bytes += ddr_bytes
        self.seconds += seconds


@dataclass
class Phase:
    units: dict[str, Unit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def unit(self, name: str) -> Unit:
        return self.units.setdefault(name, Unit())

    @property
    def seconds(self) -> float:
        return sum(u.seconds for u in self.units.values())

    @property
    def bound(self) -> str:
        return max(self.units, key=lambda n: self.units[n].seconds)

    def as_dict(self) -> dict:
        return {n: {"cycles": round(u.cycles), "ddr_bytes": round(u.ddr_bytes), "seconds": u.seconds}
                for n, u in self.units.items()}


class CycleModel:
    """tiles: row tiles per linear where its indices do not fit the weight buffer at once
    (explore.py sizes them): each tile is loaded and swept on its own, so every token pays each
    block's fixed work once per tile."""

    def __init__(self, config: ModelConfig, board: Board, design: Design = TELLME_V2, fitted: Fitted = FITTED,
                 tiles: dict[str, int] | None = None):
        design.check()
        self.c, self.b, self.d, self.f = config, board, design, fitted
        self.tiles = {n: 1 for n in LINEARS} | (tiles or {})
        self.hz = design.hz
        self.bytes_per_cycle = board.ddr_gbs * 1e9 * fitted.ddr_efficiency / self.hz
        self.latency = fitted.ddr_latency_ns * 1e-9 * self.hz

    # ---- per unit ----
    def tlmm_cycles_per_token(self, out: int, k: int, tiles: int = 1) -> float:
        d = self.d
        blocks = ceil_div(k, d.block)
        return tiles * blocks * (self.latency + d.block + d.table_write_cycles + ceil_div(ceil_div(out, tiles), d.Q)
                                 + d.sweep_depth)

    def load_beats(self, out: int, k: int) -> int:
        return ceil_div(k, self.d.block) * ceil_div(out, self.d.rows_per_beat)

    def wbmu(self, out: int, k: int) -> tuple[float, float]:
        """(cycles, bytes) of loading one linear: a beat per cycle at most, DDR-bound below that."""
        beats = self.load_beats(out, k)
        nbytes = beats * self.d.beat_bytes
        return self.latency + max(beats, nbytes / self.bytes_per_cycle), nbytes

    def rpa_key_steps(self, n: int) -> int:
        """Key steps of one layer's RPA over a prompt padded to n (a multiple of N_pe): block b
        sweeps keys [N_pe b, n)."""
        nb = n // self.d.N_pe
        return n * nb - self.d.N_pe * nb * (nb - 1) // 2

    def rpa(self, n: int) -> tuple[float, float]:
        """Per key step: the K and V rows' read round trip, the scores, the output update."""
        c, d = self.c, self.d
        per_step = (self.latency + c.heads * ceil_div(c.head_dim, d.dot_lanes)
                    + c.heads * c.head_dim / d.rpa_update_lanes)
        steps = self.rpa_key_steps(n)
        kv_row = c.kv_heads * c.head_dim * d.activation_bytes
        nbytes = steps * 2 * kv_row + 2 * n * c.heads * c.head_dim * d.activation_bytes
        return self.latency + max(steps * per_step, nbytes / self.bytes_per_cycle), nbytes

    def da(self, L: int) -> tuple[float, float]:
        """Two passes, each reading the cache token by token: a round trip and 16-wide steps per position."""
        c, d = self.c, self.d
        per_pos = self.latency + c.heads * ceil_div(c.head_dim, d.dot_lanes)
        kv_bytes = L * c.kv_heads * c.head_dim * d.activation_bytes
        one_pass = max(L * per_pos, kv_bytes / self.bytes_per_cycle)
        return 2 * (self.latency + one_pass), 2 * kv_bytes

    def norm_dims(self) -> list[int]:
        c = self.c
        dims = [c.hidden, c.hidden]
        if c.sub_norms:
            dims += [c.heads * c.head_dim, c.intermediate]
        return dims

    def rms_max(self, tokens: int) -> tuple[float, float]:
        cyc = nbytes = 0.0
        for dim in self.norm_dims():
            cyc += self.latency + tokens * 2 * ceil_div(dim, self.d.dot_lanes)
            nbytes += tokens * 3 * dim * self.d.activation_bytes  # two reads, one write
        return cyc, nbytes

    def host_head_s(self) -> float:
        c, h = self.c, self.b.host
        macs = c.vocab * c.hidden
        compute = macs / (h.cores * h.ghz * 1e9 * A53_INT8_MACS_PER_CYCLE)
        memory = macs / (self.b.ddr_gbs * 1e9 * self.f.ddr_efficiency)  # int8 rows streamed once
        return max(compute, memory)

    # ---- phases ----
    def forward(self, tokens: int, context: int | None = None) -> Phase:
        """One forward: a prompt of `tokens` from position 0 (context None), or one decode token
        attending `context` positions."""
        c, d = self.c, self.d
        p = Phase()
        tlmm, wbmu, rms, act = p.unit("tlmm"), p.unit("wbmu"), p.unit("rms_max"), p.unit("activations")
        att = p.unit("rpa" if context is None else "da")
        for name in LINEARS:
            out, k = c.linear_shape(name)
            cyc, nbytes = self.wbmu(out, k)
            wbmu.add(cyc * c.layers, nbytes * c.layers)
            compute = self.latency + tokens * self.tlmm_cycles_per_token(out, k, self.tiles[name])
            io_bytes = tokens * (k + out * (2 if name in ("o", "down", "gate") else 1)) * d.activation_bytes
            io = io_bytes / self.bytes_per_cycle
            tlmm.add(max(compute, io) * c.layers)
            act.add(0, io_bytes * c.layers)     # streams beside the TLMM region (overlapped)
        cyc, nbytes = self.rpa(tokens) if context is None else self.da(context)
        att.add(cyc * c.layers, nbytes * c.layers)
        cyc, nbytes = self.rms_max(tokens)
        rms.add(cyc * c.layers, nbytes * c.layers)
        for u in (tlmm, wbmu, rms, att):
            u.seconds = u.cycles / self.hz
        # the host: embedding rows (fp16) in, the LM head for the last token, and every call's overhead
        p.unit("host_head").add(ddr_bytes=c.vocab * c.hidden + tokens * c.hidden * 2,
                                seconds=self.host_head_s() + tokens * c.hidden * 2 / (self.b.ddr_gbs * 1e9))
        p.unit("host_calls").add(seconds=STEPS_PER_LAYER * c.layers * self.f.host_call_us * 1e-6)
        return p

    def prefill(self, prompt: int) -> dict:
        n = ceil_div(prompt, self.d.N_pe) * self.d.N_pe   # the host pads to a multiple of N_pe   [C]
        p = self.forward(n)
        if prompt > self.d.kv_positions:
            p.notes.append(f"the prompt passes the KV cache's {self.d.kv_positions} positions in DDR")
        t = p.seconds
        return {"prompt": prompt, "padded": n, "ttft_s": t, "prefill_tokens_per_s": prompt / t,
                **self._per_joule(prompt / t, "prefill"), "units": p.as_dict(), "per_layer": self._per_layer(p),
                "bound": p.bound, "notes": p.notes}

    def _per_layer(self, p: Phase) -> dict:
        """Cycles of one layer per unit (every layer is alike; the host's share is not per layer)."""
        return {n: round(u.cycles / self.c.layers) for n, u in p.units.items() if not n.startswith("host")}

    def _per_joule(self, rate: float, what: str) -> dict:
        return {f"{what}_tokens_per_j": rate / self.b.power_w} if self.b.power_w else {}

    def decode(self, context: int) -> dict:
        p = self.forward(1, context)
        if context > self.d.score_fifo:
            p.notes.append(f"context past the score FIFO's {self.d.score_fifo} positions: the released design "
                           "cannot run it (timed here as if the FIFO were deeper)")
        t = p.seconds
        return {"context": context, "decode_tokens_per_s": 1 / t, **self._per_joule(1 / t, "decode"), "seconds": t,
                "units": p.as_dict(), "per_layer": self._per_layer(p), "bound": p.bound, "notes": p.notes}
