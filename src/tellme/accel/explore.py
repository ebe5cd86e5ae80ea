"""`tellme accel explore`: design points within a board's resources, and their Pareto front.

A point is (T, Q, N_pe, clock, c_URAM) with T = floor(72 c_URAM / 5) (the paper's sizing: an
index vector fills c_URAM cascaded URAMs). Its weight buffer is whatever URAM (or, on a board
without URAM, BRAM at 1/8 of a URAM's depth) the other units leave; a linear that does not fit
is tiled by output rows, and each tile repeats the TLMM's per-block work for every token. A point
is infeasible when its LUT, FF, DSP, BRAM or URAM estimate passes the board's, or when the
largest linear's tiles cannot be addressed; the reason is given.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from ..config import ModelConfig
from . import resources
from .cycles import CycleModel
from .design import FITTED, LINEARS, TELLME_V2, Board, Design, Fitted, ceil_div

URAM_DEPTH, BRAM_PER_URAM = 4096, 8
C_URAMS = (1, 2, 3, 4)
QS = (8, 16, 32)
N_PES = (4, 8, 16)
CLOCKS = (150.0, 200.0, 250.0)  # MHz; 250 is the published closure on the KV260 (timing is not modelled)
UTILIZATION = 1.0  # of each resource a point may use


@dataclass
class Point:
    design: Design
    tiles: dict[str, int]
    ttft_s: float
    decode_tokens_per_s: float
    resources: dict
    feasible: bool
    why: list[str]

    def as_dict(self) -> dict:
        d = self.design
        return {"T": d.T, "Q": d.Q, "N_pe": d.N_pe, "clock_mhz": d.clock_mhz, "c_uram": d.c_uram,
                "ttft_s": self.ttft_s, "decode_tokens_per_s": self.decode_tokens_per_s,
                "lut": self.resources["lut"], "tiles": self.tiles, "feasible": self.feasible, "why": self.why,
                "resources": self.resources}


def buffer_entries(board: Board, d: Design, other_uram: float, other_bram: float) -> int:
    """Index vectors per bank the weight buffer can hold (Q/2 dual-ported banks, c_URAM wide)."""
    uram = board.uram - other_uram
    if board.uram == 0:  # BRAM in place of URAM
        uram = (board.bram36 - other_bram) / BRAM_PER_URAM
    columns = int(uram // d.c_uram)
    return (columns // (d.Q // 2)) * URAM_DEPTH


def tiles_needed(c: ModelConfig, d: Design, entries: int) -> dict[str, int]:
    out = {}
    for name in LINEARS:
        rows, k = c.linear_shape(name)
        need = ceil_div(rows, d.Q // 2) * ceil_div(k, d.block)
        out[name] = ceil_div(need, entries) if entries > 0 else 0
    return out


def sized(c: ModelConfig, board: Board, d: Design) -> tuple[dict, dict[str, int], int, float, float]:
    """(resources, row tiles per linear, buffer entries per bank, other units' URAM and BRAM) of
    design `d` holding model `c` on `board`."""
    d.check()
    res = resources.estimate(c, d)
    units = res["units"]
    other_uram = sum(u["uram"] for n, u in units.items() if n != "wbmu")
    other_bram = sum(u["bram36"] for u in units.values())
    entries = buffer_entries(board, d, other_uram, other_bram)
    return res, tiles_needed(c, d, entries), entries, other_uram, other_bram


def tiled_model(c: ModelConfig, board: Board, d: Design = TELLME_V2, fitted: Fitted = FITTED) -> CycleModel:
    """The cycle model of `d` running `c` on `board` as it would: linears tiled to fit its buffer."""
    tiles = sized(c, board, d)[1]
    return CycleModel(c, board, d, fitted, tiles={n: max(1, t) for n, t in tiles.items()})


def evaluate(c: ModelConfig, board: Board, d: Design, prompt: int, context: int, fitted: Fitted = FITTED) -> Point:
    res, tiles, entries, other_uram, other_bram = sized(c, board, d)
    total = dict(res["total"])
    why = []
    if entries <= 0 or not all(tiles.values()):
        why.append("no memory left for the weight buffer")
        tiles = {n: 1 for n in tiles}
    # the buffer takes what it needs, at most what is left
    need = max(ceil_div(c.linear_shape(n)[0], d.Q // 2) * ceil_div(c.linear_shape(n)[1], d.block)
               for n in tiles)
    used_columns = ceil_div(min(need, max(entries, 1)), URAM_DEPTH) * (d.Q // 2) * d.c_uram
    if board.uram:
        total["uram"] = other_uram + used_columns
    else:
        total["uram"] = 0
        total["bram36"] = other_bram + used_columns * BRAM_PER_URAM
    for key in ("lut", "ff", "dsp", "bram36", "uram"):
        cap = getattr(board, key) * UTILIZATION
        if total[key] > cap:
            why.append(f"{key.upper()} {total[key]:,.0f} > {cap:,.0f}")
    m = CycleModel(c, board, d, fitted, tiles=tiles)
    return Point(d, tiles, m.prefill(prompt)["ttft_s"], m.decode(context)["decode_tokens_per_s"], total,
                 not why, why)


def points(board: Board, base: Design = TELLME_V2):
    for c_uram, q, n_pe, clock in itertools.product(C_URAMS, QS, N_PES, CLOCKS):
        yield replace(base.with_c_uram(c_uram), Q=q, N_pe=n_pe, clock_mhz=clock)


def pareto(pts: list[Point]) -> list[Point]:
    """Feasible points no other feasible point beats on TTFT, decode rate and LUTs at once."""
    ok = [p for p in pts if p.feasible]

    def dominates(a: Point, b: Point) -> bool:
        no_worse = (a.ttft_s <= b.ttft_s and a.decode_tokens_per_s >= b.decode_tokens_per_s
                    and a.resources["lut"] <= b.resources["lut"])
        better = (a.ttft_s < b.ttft_s or a.decode_tokens_per_s > b.decode_tokens_per_s
                  or a.resources["lut"] < b.resources["lut"])
        return no_worse and better

    front = [p for p in ok if not any(dominates(o, p) for o in ok)]
    return sorted(front, key=lambda p: p.ttft_s)


def explore(c: ModelConfig, board: Board, prompt: int = 64, context: int = 1, fitted: Fitted = FITTED) -> dict:
    pts = [evaluate(c, board, d, prompt, context, fitted) for d in points(board)]
    released = evaluate(c, board, TELLME_V2, prompt, context, fitted)
    return {"board": board.name, "prompt": prompt, "context": context, "points": pts,
            "front": pareto(pts), "released": released}
