"""Every number the accelerator model uses, named, with its source (gem5's and Timeloop's habit).

Sources: [P] the TeLLMe v2 paper (arXiv 2510.15926), [C] the authors' released HLS and host code
(as summarised in ../shared/TELLME-HARDWARE.md), [DS] AMD's device and board data sheets,
[D] derived here from those, [F] a free parameter, fitted or assumed (at most three; docs/accel.md
says which headline figure fits each). Boards and models are data: add a row to add one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..config import ModelConfig
from ..errors import UsageError


@dataclass(frozen=True)
class Design:
    """One accelerator instance: the released TeLLMe v2 by default."""

    G: int = 3               # weights per TLMM group (27 patterns, a 5-bit index)   [P]
    T: int = 28              # TLMM tables per step (84 activations per block)   [C]
    Q: int = 16              # output rows per cycle (each reads one T x 5-bit index vector)   [P], [C]
    N_pe: int = 8            # RPA query PEs   [P], [C]
    clock_mhz: float = 250.0  # [P]
    c_uram: int = 2          # URAMs cascaded in width for one index vector (T*5 = 140 <= 2*72 bits)   [C]
    index_bits: int = 5      # [P]
    entry_bits: int = 10     # table entry: 8-bit activation + ceil(log2 3)   [P]
    acc_bits: int = 24       # TLMM accumulator   [C]
    dot_lanes: int = 16      # fp16 lanes of an attention dot product per PE per cycle (one 256-bit vector)   [P], [C]
    rpa_update_lanes: int = 1  # fp16 values of the RPA online-softmax output update per PE per cycle   [D]
    axi_ports: int = 3       # 256-bit weight masters (HP0, HP1, HP3): one 768-bit beat   [C]
    axi_bits: int = 256      # [C]
    rows_per_beat: int = 5   # index vectors per 768-bit beat (5 x 140 = 700 bits)   [C]
    slots: int = 3           # URAM weight slots of [blocks][rows_per_slot] index vectors   [C]
    slot_rows: int = 1536    # output rows per slot   [C]
    slot_blocks: int = 19    # 84-activation blocks per slot   [C]
    score_fifo: int = 1024   # decode attention's score FIFO: the decode context limit   [P], [C]
    kv_positions: int = 3000  # KV cache positions in DDR   [C]
    table_write_cycles: int = 27  # a block's 27 table entries written one per cycle into LUTRAM   [D]
    sweep_depth: int = 12    # row-sweep pipeline depth: URAM read (3), 28-input adder tree (5), accumulate (1), control   [D]
    activation_bytes: int = 2  # fp16 activations in DDR   [C]

    @property
    def block(self) -> int:
        return self.G * self.T

    @property
    def hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def index_vector_bits(self) -> int:
        return self.T * self.index_bits

    @property
    def beat_bytes(self) -> int:
        return self.axi_ports * self.axi_bits // 8

    def with_c_uram(self, c_uram: int) -> "Design":
        """The paper's sizing: T = floor(72 c_URAM / 5) tables fill c_URAM cascaded URAMs, and a
        beat carries as many index vectors as fit beside its norm weight."""
        t = 72 * c_uram // self.index_bits
        beat = self.axi_ports * self.axi_bits - 16
        return replace(self, c_uram=c_uram, T=t, rows_per_beat=beat // max(1, t * self.index_bits))

    def check(self) -> None:
        if self.index_vector_bits > 72 * self.c_uram:
            raise UsageError(f"an index vector of T={self.T} tables is {self.index_vector_bits} bits; "
                             f"{self.c_uram} cascaded URAMs hold {72 * self.c_uram}")
        if self.rows_per_beat * self.index_vector_bits + 16 > self.axi_ports * self.axi_bits:
            raise UsageError("a beat cannot carry the index vectors and a norm weight")
        for name in ("T", "Q", "N_pe", "c_uram", "clock_mhz"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive")


TELLME_V2 = Design()
LINEARS = ("q", "k", "v", "o", "up", "gate", "down")  # in the order a layer loads and runs them   [C]


@dataclass(frozen=True)
class Host:
    cores: int = 4           # Cortex-A53   [DS] (K26 SOM)
    ghz: float = 1.333       # [DS]


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    lut: int
    ff: int
    dsp: int
    bram36: float
    uram: int
    ddr_gbs: float           # peak DDR bandwidth the PL reaches, GB/s
    source: str
    power_w: float | None = None  # measured board power running the design, where published
    host: Host = field(default_factory=Host)


BOARDS = {b.name: b for b in [
    Board("kv260", "XCK26 (Kria K26 SOM)", 117_120, 234_240, 1_248, 144, 64, 17.1,
          "[DS] Kria K26 SOM data sheet DS987 (PL resources); [P] Table 1 (17.1 GB/s DDR4, 4.8 W)", power_w=4.8),
    Board("zcu104", "XCZU7EV", 230_400, 460_800, 1_728, 312, 96, 19.2,
          "[DS] Zynq UltraScale+ product selection guide (ZU7EV); PS DDR4-2400 x64 = 19.2 GB/s"),
    Board("zcu102", "XCZU9EG", 274_080, 548_160, 2_520, 912, 0, 21.3,
          "[DS] Zynq UltraScale+ product selection guide (ZU9EG: no URAM); PS DDR4-2666 x64 = 21.3 GB/s"),
    Board("vck190", "XCVC1902", 899_840, 1_799_680, 1_968, 967, 463, 25.6,
          "[DS] Versal AI Core data sheet DS950 (VC1902; DSP58); one DDR4-3200 x64 controller = 25.6 GB/s"),
]}


@dataclass(frozen=True)
class Fitted:
    """The free parameters [F]: at most three (docs/accel.md, "Free parameters")."""

    ddr_efficiency: float = 0.80   # share of peak DDR bandwidth reached by long bursts: assumed, not fitted
    ddr_latency_ns: float = 417.05  # PL read round trip of each new read request (cycles.py): fitted to TTFT(64) = 0.45 s
    host_call_us: float = 64.893   # host overhead per accelerator call (PYNQ register writes, start, wait): fitted to decode 25 tok/s


FITTED = Fitted()


def _cfg(arch, hidden, inter, layers, heads, kv, hd, vocab, act, sub, tied, theta, ctx=4096) -> ModelConfig:
    return ModelConfig(architecture=arch, hidden=hidden, intermediate=inter, layers=layers, heads=heads,
                       kv_heads=kv, head_dim=hd, vocab=vocab, context=ctx, eps=1e-5, activation=act,
                       sub_norms=sub, tied_embeddings=tied, rope_theta=theta, source="accel model table")


MODELS = {  # name -> (config, group size of its scales or 0, source)
    "0.73B": (_cfg("bitnet-1bitllm", 1536, 4096, 24, 16, 16, 96, 32002, "silu", True, False, 10000.0, 2048), 0,
              "1bitLLM/bitnet_b1_58-large config.json (the paper's model)"),
    "3B": (_cfg("bitnet-1bitllm", 3200, 8640, 26, 32, 32, 100, 32002, "silu", True, False, 10000.0, 2048), 0,
           "1bitLLM/bitnet_b1_58-3B config.json"),
    "2B-4T": (_cfg("bitnet-2b4t", 2560, 6912, 30, 20, 5, 128, 128256, "relu2", True, True, 500000.0), 0,
              "microsoft/bitnet-b1.58-2B-4T config.json"),
    "llama3-8b": (_cfg("llama-bitnet", 4096, 14336, 32, 32, 8, 128, 128256, "silu", False, False, 500000.0), 0,
                  "HF1BitLLM/Llama3-8B-1.58-100B-tokens config.json"),
    "falcon3-3b": (_cfg("llama-bitnet", 3072, 9216, 22, 12, 4, 256, 131072, "silu", False, False, 1000042.0), 0,
                   "tiiuae/Falcon3-3B-Instruct-1.58bit config.json"),
    "bonsai-8b": (_cfg("qwen3", 4096, 12288, 36, 32, 8, 128, 151936, "silu", False, False, 1000000.0), 128,
                  "Qwen3-8B shape (PrismML Ternary Bonsai 8B: ternary weights, one scale per 128)"),
}


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise UsageError(f"unknown board {name!r}: one of {', '.join(BOARDS)}") from None


def with_changes(design: Design, **changes) -> Design:
    d = replace(design, **changes)
    d.check()
    return d


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
