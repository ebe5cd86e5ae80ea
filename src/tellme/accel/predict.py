"""`tellme accel predict`: the board's TTFT, prefill and decode rates, DDR traffic and resources
for a model, from cycles.py and resources.py; the free parameters' fit; the validation against
the paper's headline figures."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from ..config import ModelConfig
from . import resources
from .cycles import CycleModel
from .design import FITTED, TELLME_V2, Board, Design, Fitted
from .explore import tiled_model

# The paper's figures (KV260, bitnet_b1_58-large, 250 MHz)   [P]
PUBLISHED = {"ttft_64_s": 0.45, "ttft_128_s": 0.96, "prefill_peak_tokens_per_s": 143.0,
             "decode_peak_tokens_per_s": 25.0}
TABLE1 = {"lut": 98_303, "ff": 136_721, "dsp": 610, "bram36": 98.5, "uram": 60}
FITTED_TO = ("ttft_64_s", "decode_peak_tokens_per_s")  # the two figures the free parameters are fitted to
PEAK_GRID = range(8, 513, 8)  # prompts searched for the peak prefill rate


def prefill_peak(m: CycleModel) -> dict:
    best = max((m.prefill(n) for n in PEAK_GRID), key=lambda r: r["prefill_tokens_per_s"])
    return {"prompt": best["prompt"], "prefill_tokens_per_s": best["prefill_tokens_per_s"]}


def figures(m: CycleModel) -> dict:
    """The model's values of the published figures."""
    return {"ttft_64_s": m.prefill(64)["ttft_s"], "ttft_128_s": m.prefill(128)["ttft_s"],
            "prefill_peak_tokens_per_s": prefill_peak(m)["prefill_tokens_per_s"],
            "decode_peak_tokens_per_s": m.decode(1)["decode_tokens_per_s"]}


def fit(c: ModelConfig, board: Board, design: Design = TELLME_V2, base: Fitted = FITTED) -> Fitted:
    """The DDR latency and the host's per-call overhead that give TTFT(64) = 0.45 s and decode =
    25 tokens/s exactly (both figures are linear in both parameters); the DDR efficiency stays
    as assumed."""
    def f(lat, call):
        m = CycleModel(c, board, design, replace(base, ddr_latency_ns=lat, host_call_us=call))
        return np.array([m.prefill(64)["ttft_s"], m.decode(1)["seconds"]])

    want = np.array([PUBLISHED["ttft_64_s"], 1 / PUBLISHED["decode_peak_tokens_per_s"]])
    f0 = f(0.0, 0.0)
    a = np.stack([f(1.0, 0.0) - f0, f(0.0, 1.0) - f0], axis=1)
    lat, call = np.linalg.solve(a, want - f0)
    return replace(base, ddr_latency_ns=float(lat), host_call_us=float(call))


RPA_PUBLISHED_MS = {"rpa_128_ms_per_layer": 7.6, "rpa_128_unordered_ms_per_layer": 14.3}  # [P] its ablation


def rpa_ms(m: CycleModel, n: int = 128) -> dict:
    """One layer's RPA at n tokens, and the same with every query block sweeping all n keys."""
    per_step = (m.rpa(n)[0] - m.latency) / m.rpa_key_steps(n)
    full_steps = (n // m.d.N_pe) * n
    return {"rpa_128_ms_per_layer": (m.rpa(n)[0] - m.latency) / m.hz * 1e3,
            "rpa_128_unordered_ms_per_layer": full_steps * per_step / m.hz * 1e3}


def validation(c: ModelConfig, board: Board, design: Design = TELLME_V2, fitted: Fitted = FITTED) -> list[dict]:
    m = CycleModel(c, board, design, fitted)
    got = figures(m) | rpa_ms(m)
    rows = [{"figure": k, "published": v, "predicted": got[k], "error": got[k] / v - 1, "fitted": k in FITTED_TO}
            for k, v in (PUBLISHED | RPA_PUBLISHED_MS).items()]
    res = resources.estimate(c, design)["total"]
    rows += [{"figure": k, "published": v, "predicted": res[k], "error": res[k] / v - 1, "fitted": False}
             for k, v in TABLE1.items()]
    return rows


def predict(c: ModelConfig, board: Board, prompts, contexts, design: Design = TELLME_V2,
            fitted: Fitted = FITTED, model_name: str = "") -> dict:
    m = tiled_model(c, board, design, fitted)
    res = resources.estimate(c, design)
    res.pop("_total")
    return {"board": board.name, "model": model_name, "clock_mhz": design.clock_mhz,
            "design": asdict(design), "fitted": asdict(fitted), "tiles": m.tiles,
            "prefill": [m.prefill(n) for n in prompts],
            "decode": [m.decode(L) for L in contexts],
            "prefill_peak": prefill_peak(m),
            "resources": res, "tlmm_variants": resources.tlmm_variants(c, design),
            "energy": {"board_w": board.power_w} if board.power_w else {}}
