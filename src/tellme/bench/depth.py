"""`tellme bench e2e --depth D ...`: prefill of a D-token prompt and decode after it, with the share
of what the machine allows that attention reaches there.

Per (shape, threads, depth D):
- prefill of D tokens (tokens/s) and decode of one token at a time from position D (tokens/s);
- decode against the read bandwidth, counting the bytes a step reads: the weights plus the K/V rows
  of every position before it;
- decode attention: the K/V bytes a step reads over the time the engine spent in attention
  (Engine.attention_seconds), as a share of the read bandwidth;
- prefill attention: the attention's FLOPs (q.k and p.v over the causal triangle: 4 * head_dim *
  D * (D + 1) / 2 per head and layer) over the time spent in attention, as a share of the fp32 FMA
  peak (kernels.fp32_peak_gflops: the vector width attention runs at, every thread).
Both machine limits are measured in the same run at the same thread count.
"""

from __future__ import annotations

import numpy as np

from ..runtime import set_num_threads, thread_setting
from .e2e import decode_s, in_child, prefill_s, synthetic_model


def attention_flops(config, depth: int) -> float:
    """FLOPs (multiply and add each count) of the causal attention of a `depth`-token prompt."""
    c = config
    return 4.0 * c.layers * c.heads * c.head_dim * depth * (depth + 1) / 2


def measure(model, threads: int, depths: list[int], decode_tokens: int) -> list[dict]:
    set_num_threads(threads)
    cache = model.sequences.acquire().cache
    tokens = np.random.default_rng(1).integers(0, model.config.vocab, size=max(depths) + decode_tokens,
                                               dtype=np.int32)
    engine = model.engine
    prefill_s(model, cache, tokens[:16])  # warm-up: page in the weights, start the threads
    decode_s(model, cache, tokens[16:16 + decode_tokens], 16)
    weights, per_position = model.packed.decode_step_bytes(), engine.cache_bytes_per_position
    records = []
    for d in depths:
        r = {"threads": threads, "depth": d, "kv": engine.kv}
        start = max(d, 1)  # decode needs a first token in the cache
        before = engine.attention_seconds
        s = prefill_s(model, cache, tokens[:start])
        if d:
            r.update(prefill_tokens_per_s=d / s, prefill_attention_s=engine.attention_seconds - before,
                     prefill_attention_flops=attention_flops(model.config, d))
        before = engine.attention_seconds
        step = decode_s(model, cache, tokens[start:start + decode_tokens], start) / decode_tokens
        kv_bytes = per_position * (start + (decode_tokens + 1) / 2)  # positions a step reads, on average
        r.update(decode_tokens_per_s=1 / step, decode_bytes_per_token=weights + kv_bytes, decode_kv_bytes=kv_bytes,
                 decode_attention_s=(engine.attention_seconds - before) / decode_tokens)
        records.append(r)
    return records


def add_limits(records: list[dict]) -> None:
    """The read bandwidth and fp32 FMA peak at each record's thread count, and the shares of them."""
    from .kernels import fp32_peak_gflops, read_bandwidth_gb_s

    buffer = np.ones(256 << 20, np.uint8)
    limits = {}
    for r in records:
        if r["threads"] not in limits:
            set_num_threads(r["threads"])
            limits[r["threads"]] = read_bandwidth_gb_s(buffer), fp32_peak_gflops()
        bw, peak = limits[r["threads"]]
        r.update(read_bw_gb_s=bw, fp32_peak_gflops=peak,
                 decode_pct_of_read_bw=100 * r["decode_bytes_per_token"] * r["decode_tokens_per_s"] / 1e9 / bw)
        if r["depth"] and r["decode_attention_s"] > 0:
            r["decode_attention_pct_of_read_bw"] = 100 * r["decode_kv_bytes"] / r["decode_attention_s"] / 1e9 / bw
        if r["depth"] and r.get("prefill_attention_s", 0) > 0:
            r["prefill_attention_pct_of_fp32_peak"] = (100 * r["prefill_attention_flops"] / r["prefill_attention_s"]
                                                       / 1e9 / peak)


def _child(spec: dict, out) -> None:
    try:
        context = max(spec["depths"]) + spec["decode_tokens"] + 1
        if spec["path"]:
            from ..loading import load
            model, name = load(spec["path"], context=context, progress=False, kv=spec["kv"]), spec["path"]
        else:
            model, name = synthetic_model(spec["shape"], spec["layers"], context, kv=spec["kv"]), spec["shape"]
        records = []
        for t in spec["threads"]:
            records += [{"model": name, **r} for r in measure(model, t, spec["depths"], spec["decode_tokens"])]
        add_limits(records)
        out.put(records)
    except Exception as e:  # report, do not hang the parent
        out.put(e)


def _pct(r: dict, key: str) -> str:
    return f"{r[key]:.0f}" if key in r else "-"


def run(args, specs: list[dict]) -> list[dict]:
    """One child process per model; prints the table, returns the records."""
    saved, records = thread_setting(), []
    print(f"{'model':>8} {'thr':>3} {'kv':>3} {'depth':>5} {'prefill t/s':>11} {'decode t/s':>10} {'%read bw':>8} "
          f"{'attn decode %bw':>15} {'attn prefill %fp32':>18}")
    for spec in specs:
        spec.update(threads=args.threads, depths=args.depth, decode_tokens=args.decode_tokens, layers=args.layers,
                    kv=args.kv)
        result = in_child(_child, spec)
        for r in result:
            prefill = f"{r['prefill_tokens_per_s']:.1f}" if "prefill_tokens_per_s" in r else "-"
            print(f"{str(r['model'])[-8:]:>8} {r['threads']:>3} {r['kv']:>3} {r['depth']:>5} {prefill:>11} "
                  f"{r['decode_tokens_per_s']:>10.1f} {r['decode_pct_of_read_bw']:>8.0f} "
                  f"{_pct(r, 'decode_attention_pct_of_read_bw'):>15} {_pct(r, 'prefill_attention_pct_of_fp32_peak'):>18}")
        records += result
    set_num_threads(saved)
    return records
