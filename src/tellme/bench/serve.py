"""`tellme bench serve`: many streams on one model through the continuous-batching scheduler (the
one `tellme serve` runs, without HTTP), on the synthetic real-shape models of `bench e2e` or on a
model (`--model`). Every request at a concurrency is submitted at once. Per concurrency: generated
tokens/s over the whole run (prefill included), aggregate decode tokens/s while every stream is
decoding, and its ratio to one stream's, time to first token and inter-token latency (p50, p99).

Beside each, the machine's bound measured in the same run: a decode step of c streams takes at
least max(weight bytes / read bandwidth, c * multiply-adds per token / int8 peak) (KV-cache reads
left out, so the bound is optimistic). Its ratio at c to its value at 1 is the most batching can
give here: once c tokens' multiply-adds outweigh one read of the weights, more streams cannot
raise the aggregate rate.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from ..config import LINEAR_NAMES
from ..runtime import get_isa, set_num_threads


def add_arguments(p) -> None:
    from .e2e import SHAPES

    p.add_argument("--model", help="measure this model instead of the synthetic shapes")
    p.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--decode-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--layers", type=int, help="override the layer count (quick runs)")
    p.add_argument("--json", metavar="PATH", help="write one record per (model, concurrency)")
    p.add_argument("--constrained", action="store_true",
                   help="the cost of a JSON-schema constraint: each concurrency run free and constrained, with a "
                        "byte-level BPE tokenizer of the shape's vocabulary (bench/constrained.py)")


def measure(model, name: str, concurrency: int, prompt_tokens: int, decode_tokens: int, constraint=None) -> dict:
    """One run at `concurrency`; `constraint()`, when given, makes each request's grammar state."""
    from ..sampling import SamplingParams
    from ..scheduler import Request, Scheduler

    rng = np.random.default_rng(concurrency)
    scheduler = Scheduler(model, max_batch=concurrency, max_queue=concurrency)
    times = [[] for _ in range(concurrency)]
    finished = threading.Semaphore(0)

    def emitter(i):
        def emit(kind, value):
            if kind == "token":
                times[i].append(time.perf_counter())
            else:
                finished.release()
        return emit

    start = time.perf_counter()
    for i in range(concurrency):
        prompt = [int(t) for t in rng.integers(0, model.config.vocab, prompt_tokens)]
        scheduler.submit(Request(prompt, decode_tokens, SamplingParams(temperature=0), emitter(i),
                                 constraint=constraint() if constraint else None))
    for _ in range(concurrency):
        finished.acquire()
    wall = time.perf_counter() - start
    scheduler.close()
    m = scheduler.metrics
    ttft = [t[0] - start for t in times]
    itl = np.concatenate([np.diff(t) for t in times]) if decode_tokens > 1 else np.zeros(1)
    tokens = sum(len(t) for t in times)
    # steady decode: the window in which every stream has started and none has finished
    lo, hi = max(t[0] for t in times), min(t[-1] for t in times)
    inside = sum(int(np.sum((np.asarray(t) > lo) & (np.asarray(t) <= hi))) for t in times)
    return {"model": name, "concurrency": concurrency, "tokens": tokens, "seconds": wall,
            "tokens_per_s": tokens / wall, "decode_tokens_per_s": inside / (hi - lo) if hi > lo else float("nan"), "ttft_p50_s": float(np.percentile(ttft, 50)),
            "ttft_p99_s": float(np.percentile(ttft, 99)), "itl_p50_s": float(np.percentile(itl, 50)),
            "itl_p99_s": float(np.percentile(itl, 99)), "constrained_tokens": m["constrained_tokens"],
            "mask_s": m["mask_seconds"], "mask_wait_s": m["mask_wait_seconds"]}


def decode_bound(packed, c: int, read_gb_s: float, peak_gops: float) -> float:
    """Aggregate decode tokens/s of c streams at the machine's limits (see the module docstring)."""
    cfg = packed.config
    macs = sum(cfg.linear_shape(n)[0] * cfg.linear_shape(n)[1] for n in LINEAR_NAMES) * cfg.layers
    macs += cfg.vocab * cfg.hidden
    seconds = max(packed.decode_step_bytes() / (read_gb_s * 1e9), c * macs / (peak_gops * 1e9))
    return c / seconds


def run(args) -> int:
    from .e2e import synthetic_model
    from .kernels import cpu_name, int8_peak_gops, last_level_cache_bytes, read_bandwidth_gb_s

    if args.constrained:
        from . import constrained
        return constrained.run(args)
    set_num_threads(args.threads)
    most = max(args.concurrency)
    if args.model:
        from ..loading import load
        models = [(args.model, lambda: load(args.model, context=args.prompt_tokens + args.decode_tokens + 1,
                                            max_sequences=most, progress=False))]
    else:
        models = [(s, lambda s=s: synthetic_model(s, args.layers, context=args.prompt_tokens + args.decode_tokens + 1,
                                                  max_sequences=most)) for s in args.shape]
    buffer = np.ones(max(8 * last_level_cache_bytes(), 256 << 20), dtype=np.uint8)
    read_gb_s, peak = read_bandwidth_gb_s(buffer), int8_peak_gops()
    del buffer
    print(f"machine: {cpu_name()}, {args.threads} threads, ISA {get_isa()}: read bandwidth {read_gb_s:.1f} GB/s, "
          f"int8 peak {peak:.0f} GMAC/s")
    print("bound: decode tokens/s at those limits; x single: the ratio to one stream, measured (and the bound's)")
    print(f"{'model':>8} {'conc':>4} {'tok/s':>8} {'decode':>8} {'bound':>8} {'x single':>14} {'ttft p50':>9} "
          f"{'ttft p99':>9} {'itl p50':>8} {'itl p99':>8}")
    records = []
    for name, make in models:
        model = make()
        measure(model, name, 1, args.prompt_tokens, 4)  # warm-up: page in the weights, start threads
        single = None
        for c in args.concurrency:
            r = measure(model, name, c, args.prompt_tokens, args.decode_tokens)
            single = single or (r["decode_tokens_per_s"] if c == 1 else None)
            bound = decode_bound(model.packed, c, read_gb_s, peak)
            r.update(threads=args.threads, isa=get_isa(), read_gb_s=read_gb_s, int8_peak_gops=peak,
                     decode_bound_tokens_per_s=bound,
                     decode_vs_single_stream=r["decode_tokens_per_s"] / single if single else None,
                     bound_vs_single_stream=bound / decode_bound(model.packed, 1, read_gb_s, peak))
            records.append(r)
            ratio = (f"{r['decode_vs_single_stream']:>6.2f} ({r['bound_vs_single_stream']:.2f})" if single
                     else f"{'':>14}")
            print(f"{str(name)[-8:]:>8} {c:>4} {r['tokens_per_s']:>8.1f} {r['decode_tokens_per_s']:>8.1f} "
                  f"{bound:>8.1f} {ratio} "
                  f"{r['ttft_p50_s'] * 1e3:>7.0f}ms "
                  f"{r['ttft_p99_s'] * 1e3:>7.0f}ms {r['itl_p50_s'] * 1e3:>6.1f}ms {r['itl_p99_s'] * 1e3:>6.1f}ms")
        del model
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"kind": "machine", "cpu": cpu_name(), "isa": get_isa(), "read_gb_s": read_gb_s,
                        "int8_peak_gops": peak}] + records, f, indent=2)
    return 0
