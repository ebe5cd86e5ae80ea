"""LUT, FF, DSP, BRAM36 and URAM per unit, from the design's parameters.

Each unit is counted as the primitives its loops need (so many fp16 multipliers per PE, so many
adder-tree bits per output row, so many URAMs per weight slot), times a per-primitive cost. The
costs are parameters in PRIMITIVES, each with its source; docs/accel.md lists them and compares
the totals with the paper's Table 1. URAM follows the paper's equation; the three TLMM table
designs the paper weighs are costed side by side (`tlmm_variants`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ModelConfig
from .design import TELLME_V2, Design, ceil_div


@dataclass(frozen=True)
class Cost:
    lut: float = 0
    ff: float = 0
    dsp: float = 0
    bram36: float = 0
    uram: float = 0

    def __add__(self, o: "Cost") -> "Cost":
        return Cost(self.lut + o.lut, self.ff + o.ff, self.dsp + o.dsp, self.bram36 + o.bram36, self.uram + o.uram)

    def __mul__(self, k: float) -> "Cost":
        return Cost(self.lut * k, self.ff * k, self.dsp * k, self.bram36 * k, self.uram * k)

    __rmul__ = __mul__

    def as_dict(self) -> dict:
        return {"lut": round(self.lut), "ff": round(self.ff), "dsp": round(self.dsp),
                "bram36": round(self.bram36 * 2) / 2, "uram": round(self.uram)}


# Per-primitive costs on UltraScale+ (250 MHz, fully pipelined). Floating-point operators: typical
# figures of AMD's Floating-Point Operator (PG060) as Vitis HLS instantiates it (full DSP use for
# multipliers, fabric adders for fp16), rounded; fabric logic from the CLB's structure (UG574:
# one LUT and one carry bit per adder bit, a LUT6 as 32 x 2 bits of LUTRAM).
PRIMITIVES = {
    "hmul": (Cost(lut=40, ff=60, dsp=1), "PG060-class fp16 multiply, 1 DSP48E2"),
    "hadd": (Cost(lut=150, ff=180), "PG060-class fp16 add/subtract in fabric"),
    "hexp": (Cost(lut=450, ff=550, dsp=3), "PG060-class fp16 exponential"),
    "hdiv": (Cost(lut=350, ff=450), "PG060-class fp16 divide (fabric)"),
    "fmul": (Cost(lut=90, ff=180, dsp=3), "PG060-class fp32 multiply, full DSP use"),
    "fadd": (Cost(lut=230, ff=380, dsp=2), "PG060-class fp32 add, full DSP use"),
    "fconv": (Cost(lut=110, ff=160), "PG060-class int/fp16/fp32 conversion"),
    "frsqrt": (Cost(lut=800, ff=1100, dsp=9), "PG060-class fp32 reciprocal square root"),
    "add_bit": (Cost(lut=1, ff=1), "UG574: one LUT and one carry-chain bit per adder bit, registered"),
    "reg_bit": (Cost(ff=1), "a pipeline register bit"),
    "lutram_2bit": (Cost(lut=1), "UG574: a SLICEM LUT6 as 32 x 2 bits, one read port"),
    "mux_bit": (Cost(lut=1), "UG574: a LUT6 selects 1 of 4 (a 3-weight select-negate: ~3 LUTs per result bit)"),
    "simd_dsp": (Cost(dsp=1, ff=48), "DSP48E2 in FOUR12 SIMD mode: four 12-bit adds per slice   [C]"),
    "m_axi": (Cost(lut=1500, ff=2200, bram36=4), "Vitis HLS m_axi adapter, 256-bit, read and write: 16 "
              "outstanding bursts of 16 words buffered each way (2 x 64 Kb)"),
    "m_axi_r": (Cost(lut=900, ff=1300, bram36=2), "the same, read only"),
    "axi_port": (Cost(lut=1500, ff=2500), "SmartConnect path and PS HP port width conversion per master"),
    "control": (Cost(lut=900, ff=1300), "s_axilite control, dataflow handshakes and FIFOs per region"),
}


def p(name: str) -> Cost:
    return PRIMITIVES[name][0]


TABLE_VARIANTS = ("naive", "partial", "full")


def tlmm_tables(d: Design, variant: str) -> Cost:
    """The lookup side of TLMM: what the Q rows read T times per cycle, in each of the paper's
    three designs: naive select logic (no table), 13 entries + sign, the full 27-entry table."""
    e = d.entry_bits
    readers = d.T * d.Q
    if variant == "naive":  # per row and group: three activations selected/negated, added
        per = 3 * 8 * 3 * p("mux_bit") + 2 * (e + 1) * p("add_bit")
        return readers * per
    storage = readers * math.ceil(e / 2) * p("lutram_2bit")  # 16 or 27 entries: both within 32 deep
    if variant == "partial":
        storage = storage + readers * e * p("add_bit")         # conditional negation on every read
    return storage + readers * e * p("reg_bit")


def tlmm(c: ModelConfig, d: Design, variant: str = "full") -> Cost:
    tree_bits = sum((d.T >> (lvl + 1)) * (d.entry_bits + lvl + 1) for lvl in range(math.ceil(math.log2(d.T))))
    per_row = tree_bits * p("add_bit") + d.acc_bits * p("add_bit")
    build = ceil_div(13 * d.T, 4) * p("simd_dsp") + d.T * 13 * d.entry_bits * p("reg_bit")
    rows_max = max(c.intermediate, c.hidden, c.heads * c.head_dim)
    acc_store = Cost(bram36=d.Q * max(0.5, math.ceil(ceil_div(rows_max, d.Q) * d.acc_bits / 36864 * 2) / 2))
    dequant = d.Q * (p("fconv") * 2 + p("fmul"))                  # int -> fp32, * scale, -> fp16
    epilogue = d.Q * (2 * p("hmul") + 2 * p("hadd"))               # RoPE / residual / SiLU(gate) * up
    quant = p("fmul") + p("fconv") + p("hdiv")                     # one activation per cycle; 127 / max per token
    return (tlmm_tables(d, variant) + d.Q * per_row + build + acc_store + dequant + epilogue + quant
            + 2 * p("m_axi") + p("control"))


def wbmu(c: ModelConfig, d: Design) -> Cost:
    """The weight buffer: the paper's URAM equation per slot, and the beat splitter."""
    per_bank = ceil_div(d.slot_rows, d.Q // 2) * d.slot_blocks
    uram = d.slots * ceil_div(per_bank, 4096) * d.c_uram * (d.Q // 2)
    beat = d.axi_ports * d.axi_bits
    return Cost(uram=uram) + beat * 2 * p("reg_bit") + beat * p("mux_bit") + d.axi_ports * p("m_axi_r") + p("control")


def rpa(c: ModelConfig, d: Design) -> Cost:
    width = c.heads * c.head_dim
    dot = d.dot_lanes * p("hmul") + (d.dot_lanes - 1) * p("hadd") + 2 * p("hadd") + p("hmul")
    softmax = 2 * p("hexp") + 2 * p("hadd") + 2 * p("hmul") + p("hdiv")
    update = d.rpa_update_lanes * (2 * p("hmul") + p("hadd"))
    o_buf = Cost(uram=ceil_div(width * 16, 72 * 4096))             # each PE's running output, fp16
    q_buf = Cost(bram36=max(1, ceil_div(width * 16, 36864)))       # each PE's query
    kv_lines = Cost(bram36=2 * d.dot_lanes / 2)                    # K and V rows, 16 banks of BRAM18
    return d.N_pe * (dot + softmax + update + o_buf + q_buf) + kv_lines + 2 * p("m_axi") + p("control")


def da(c: ModelConfig, d: Design) -> Cost:
    width = c.heads * c.head_dim
    dot = d.dot_lanes * p("hmul") + (d.dot_lanes - 1) * p("hadd") + 2 * p("hadd") + p("hmul")
    softmax = 2 * p("hexp") + 2 * p("hadd") + p("hdiv") + p("hmul")
    accumulate = d.dot_lanes * (p("hmul") + 2 * p("hadd"))        # two alternating banks
    fifo = Cost(uram=ceil_div(c.heads * 16, 72) * ceil_div(d.score_fifo, 4096))
    bufs = Cost(bram36=3 * d.dot_lanes / 2)                         # q and the two banks, 16 BRAM18 each
    del width
    return dot + softmax + accumulate + fifo + bufs + 2 * p("m_axi") + p("control")


def rms_max(c: ModelConfig, d: Design) -> Cost:
    lanes = d.dot_lanes
    squares = lanes * (p("fconv") + p("fmul")) + (lanes - 1) * p("fadd")       # and the two partial sums
    scale = lanes * 2 * p("hmul") + p("frsqrt") + lanes * 16 * p("add_bit")   # and the running max
    buf = Cost(bram36=2 * max(1, ceil_div(c.intermediate * 16, 36864)))     # the token, ping-pong
    return squares + scale + buf + p("m_axi") + p("control")


def estimate(c: ModelConfig, d: Design = TELLME_V2, variant: str = "full") -> dict:
    units = {"tlmm": tlmm(c, d, variant), "wbmu": wbmu(c, d), "rpa": rpa(c, d), "da": da(c, d),
             "rms_max": rms_max(c, d), "platform": 4 * p("axi_port") + p("control")}
    total = Cost()
    for u in units.values():
        total = total + u
    return {"total": total.as_dict(), "units": {k: v.as_dict() for k, v in units.items()},
            "_total": total}


def tlmm_variants(c: ModelConfig, d: Design = TELLME_V2) -> dict:
    return {v: tlmm_tables(d, v).as_dict() | {"tlmm_unit_lut": round(tlmm(c, d, v).lut)} for v in TABLE_VARIANTS}
