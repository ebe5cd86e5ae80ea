"""`tellme accel compare`: the TeLLMe v2 board's predicted figures for a model beside tellme's
measured on this machine, on the same model shape: TTFT at the prompt, decode tokens/s at that
context, and tokens per joule (the board's published 4.8 W; the CPU's power as the user gives it).
The CPU side is `bench e2e`'s synthetic model of that shape (random ternary weights, no download)."""

from __future__ import annotations

import time

import numpy as np

from ..accel import design as ds
from ..accel.explore import tiled_model
from ..errors import UsageError
from ..runtime import cpu_info, get_num_threads, physical_cores, set_num_threads, thread_setting
from .e2e import SHAPES, decode_s, prefill_s, synthetic_model


def measure_cpu(shape: str, prompt: int, decode_tokens: int, threads: int | None, layers: int | None) -> dict:
    """TTFT (best of 3) and decode tokens/s after the prompt, on this CPU; with `layers`, a model of
    that many layers whose times are scaled to the full depth."""
    full = SHAPES[shape]["layers"]
    model = synthetic_model(shape, layers, context=prompt + decode_tokens + 1, max_sequences=1)
    saved = thread_setting()
    set_num_threads(threads or physical_cores())
    try:
        cache = model.sequences.acquire().cache
        ids = np.random.default_rng(0).integers(0, model.config.vocab, prompt + decode_tokens, dtype=np.int32)
        model.engine.forward(cache, ids[:8], 0, False)  # warm-up
        ttft = prefill_s(model, cache, ids[:prompt], repeats=3)
        step = decode_s(model, cache, ids[prompt:], prompt) / decode_tokens
        used = get_num_threads()
    finally:
        set_num_threads(saved)
    k = full / model.config.layers  # the head and embedding are not per layer: a small overestimate
    return {"ttft_s": ttft * k, "decode_tokens_per_s": 1 / (step * k), "threads": used,
            "layers_measured": model.config.layers}


def compare(model: str, board: ds.Board, prompt: int, decode_tokens: int, threads: int | None,
            layers: int | None, cpu_watts: float | None) -> list[dict]:
    if model not in SHAPES:
        raise UsageError(f"compare measures bench e2e's synthetic shapes: one of {', '.join(SHAPES)}")
    config = ds.MODELS[model][0]
    m = tiled_model(config, board)  # as the design would run it: linears that do not fit are tiled
    pre, dec = m.prefill(prompt), m.decode(prompt)
    cpu = measure_cpu(model, prompt, decode_tokens, threads, layers)
    info = cpu_info()
    isa = next((b["name"] for b in info.get("isas", []) if b.get("runnable")), "?")
    rows = [{"system": f"TeLLMe v2 on {board.name} (predicted)", "ttft_s": pre["ttft_s"],
             "prefill_tokens_per_s": pre["prefill_tokens_per_s"], "decode_tokens_per_s": dec["decode_tokens_per_s"],
             "watts": board.power_w},
            {"system": f"tellme on this CPU ({isa}, {cpu['threads']} threads, measured)", "ttft_s": cpu["ttft_s"],
             "prefill_tokens_per_s": prompt / cpu["ttft_s"], "decode_tokens_per_s": cpu["decode_tokens_per_s"],
             "watts": cpu_watts, "layers_measured": cpu["layers_measured"]}]
    for r in rows:
        w = r["watts"]
        r["prefill_tokens_per_j"] = r["prefill_tokens_per_s"] / w if w else None
        r["decode_tokens_per_j"] = r["decode_tokens_per_s"] / w if w else None
        r.update(model=model, prompt=prompt, context=prompt)
    return rows


def print_table(rows: list[dict]) -> None:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "n/a"

    print(f"{rows[0]['model']}, prompt {rows[0]['prompt']} tokens, decode at context {rows[0]['context']}")
    print(f"  {'system':52s} {'TTFT s':>8s} {'prefill t/s':>12s} {'decode t/s':>11s} {'W':>6s} "
          f"{'prefill t/J':>12s} {'decode t/J':>11s}")
    for r in rows:
        print(f"  {r['system']:52s} {r['ttft_s']:8.3f} {r['prefill_tokens_per_s']:12.1f} {r['decode_tokens_per_s']:11.1f} "
              f"{f(r['watts'], '6.1f'):>6s} {f(r['prefill_tokens_per_j'], '12.2f'):>12s} {f(r['decode_tokens_per_j'], '11.2f'):>11s}")
    board, cpu = rows
    print(f"  this CPU against the board: {board['ttft_s'] / cpu['ttft_s']:.2f}x the prefill speed, "
          f"{cpu['decode_tokens_per_s'] / board['decode_tokens_per_s']:.2f}x the decode speed"
          + (f"; the board {board['prefill_tokens_per_j'] / cpu['prefill_tokens_per_j']:.1f}x (prefill) and "
             f"{board['decode_tokens_per_j'] / cpu['decode_tokens_per_j']:.1f}x (decode) the tokens per joule"
             if cpu["watts"] and board["watts"] else ""))


def numerics_cost(model, ids: list[int], window: int, progress=None) -> list[dict]:
    """Perplexity of `ids` through the TeLLMe v2 datapath with all of its approximations, without
    any (IDEAL), and with each alone; and each variant's mean KL divergence from IDEAL per token."""
    from ..accel import numerics as nm
    from ..model import Model

    variants = {"ideal (none)": nm.IDEAL, **{f"{k} alone": v for k, v in nm.APPROXIMATIONS.items()},
                "all (the design)": nm.HARDWARE}
    results, reference = [], None
    for name, numerics in variants.items():
        m = Model(model.packed, model.tokenizer, context=window, numerics=numerics)
        start = time.perf_counter()
        logps, targets = [], []
        for rows, t in m.scored_windows(ids, window, window // 2):  # Model.perplexity's windows
            top = rows.max(1, keepdims=True)
            logps.append(rows - (top + np.log(np.exp(rows - top).sum(1, keepdims=True))))
            targets.append(t)
        lp, targets = np.concatenate(logps), np.concatenate(targets)
        nll = -lp[np.arange(len(lp)), targets].mean()
        if reference is None:
            reference = lp
        kl = float((np.exp(reference) * (reference - lp)).sum(1).mean())
        results.append({"numerics": name, "perplexity": float(np.exp(nll)), "kl_from_ideal": kl,
                        "tokens": int(len(lp)), "seconds": time.perf_counter() - start})
        if progress:
            progress(results[-1])
    return results


def synthetic_073b(layers: int | None = None):
    """The 0.73B shape (bitnet_b1_58-large) with random ternary weights, an int8 head, and the
    shipped model's tokenizer (vocabulary 2048), for measuring numerics at that width and depth."""
    from ..loading import default_model_path
    from ..model import Model
    from ..packed import PackedModel
    from ..tokenizer import Tokenizer
    from .e2e import SyntheticReader, shape_config

    c = shape_config("0.73B", layers, context=4096, vocab=2048)
    reader = SyntheticReader(c)
    head = reader.embedding() / np.float32(np.sqrt(c.hidden))  # logits of order 1 from a unit-RMS hidden state
    reader.lm_head = lambda: head
    return Model(PackedModel.pack(reader, head="int8"), Tokenizer.from_dir(default_model_path()))
