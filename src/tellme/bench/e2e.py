"""`tellme bench e2e`: whole-model prefill and decode speed, time to first token, memory and load
time, on synthetic models of real shapes (random ternary weights built in memory, no download)
or on a real checkpoint (`--model PATH`). Decode bytes/s is reported against the memory read
bandwidth measured in the same run at the same thread count.

Each model runs in its own process so that its peak RSS is its own. `--against llama.cpp` times
llama.cpp and tellme side by side on the same files instead (bench/against.py).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import resource
import time

import numpy as np

from ..config import DEFAULT_KV, KV_FORMATS
from ..errors import UsageError
from ..runtime import get_isa, get_num_threads, set_num_threads, thread_setting

SHAPES = {  # name: (config fields, real checkpoint it mirrors)
    "0.73B": dict(architecture="bitnet-1bitllm", hidden=1536, intermediate=4096, layers=24, heads=16, kv_heads=16,
                  vocab=32002, activation="silu", tied_embeddings=False),   # 1bitLLM/bitnet_b1_58-large
    "2B-4T": dict(architecture="bitnet-2b4t", hidden=2560, intermediate=6912, layers=30, heads=20, kv_heads=5,
                  vocab=128256, activation="relu2", tied_embeddings=True),  # microsoft/bitnet-b1.58-2B-4T
}


def add_arguments(p) -> None:
    p.add_argument("--model", help="measure this checkpoint instead of the synthetic shapes")
    p.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--layers", type=int, help="override the layer count (quick runs)")
    p.add_argument("--json", metavar="PATH", help="write one record per (model, threads)")
    p.add_argument("--isa", help="instruction set, ISA (default: the best that runs here)")
    p.add_argument("--against", choices=["llama.cpp"],
                   help="time llama.cpp (llama-cpp-python: the bench extra) and tellme on the same TQ2_0 files")
    p.add_argument("--repeats", type=int, default=3, help="with --against: alternations per thread count")
    p.add_argument("--allow-busy", action="store_true", help="with --against: report even if other processes ran")
    p.add_argument("--kv", choices=KV_FORMATS, default=DEFAULT_KV, help=f"KV cache format (default {DEFAULT_KV})")
    p.add_argument("--depth", type=int, nargs="+", metavar="D",
                   help="prefill a D-token prompt and decode after it, for each D, with the shares of the machine's "
                        "limits that attention reaches there (bench/depth.py); with --against, llama.cpp's too")


def shape_config(name: str, layers: int | None = None, context: int = 1024, rope_theta: float = 10000.0,
                 **overrides):
    """The ModelConfig of synthetic shape `name`, its fields overridden by `overrides`."""
    from ..config import ModelConfig

    f = {**SHAPES[name], **overrides}
    if layers:
        f["layers"] = layers
    return ModelConfig(head_dim=f["hidden"] // f["heads"], context=context, eps=1e-5, sub_norms=True,
                       rope_theta=rope_theta, **f)


class SyntheticReader:
    """A format reader (formats/__init__.py) of `config`: random ternary linears times `scale`, an
    fp16-exact random table, norms of ones; for the benches that write synthetic files."""

    def __init__(self, config, scale: float = 0.02):
        self.config, self.scale, self.rng = config, scale, np.random.default_rng(0)

    def linear(self, i, name):
        return self.rng.integers(-1, 2, size=self.config.linear_shape(name), dtype=np.int8), self.scale

    def norm(self, i, name):
        if name.endswith("sub_norm") and not self.config.sub_norms:
            return None
        return np.ones(self.config.norm_dim(name), np.float32)

    def embedding(self):
        c = self.config
        return self.rng.standard_normal((c.vocab, c.hidden), dtype=np.float32).astype(np.float16).astype(np.float32)

    def lm_head(self):
        return None if self.config.tied_embeddings else self.embedding()

    def final_norm(self):
        return np.ones(self.config.hidden, np.float32)


def synthetic_model(name: str, layers: int | None = None, context: int = 1024, max_sequences: int | None = None,
                    kv: str = DEFAULT_KV):
    from ..config import LINEAR_NAMES
    from ..kernels import TernaryWeights, layout
    from ..model import Model
    from ..packed import DEFAULT_HEAD, PackedModel, Rows

    c = shape_config(name, layers, context)
    rng = np.random.default_rng(0)
    # pack one random matrix per linear, then give every layer its own copy: decode must stream
    # every layer's weights from memory, as with a real model
    protos = {n: TernaryWeights.pack(rng.integers(-1, 2, size=c.linear_shape(n), dtype=np.int8), 0.02)
              for n in LINEAR_NAMES}
    m = PackedModel(c, source=f"synthetic {name}")
    for i in range(c.layers):
        for n, w in protos.items():
            m.set_linear(i, n, dataclasses.replace(w, data=w.data.copy()))
        for n in c.norm_names():
            m.set_norm(i, n, np.ones(c.norm_dim(n), np.float32))
    del protos
    for table in ("embedding",) if c.tied_embeddings else ("embedding", "lm_head"):  # the default head, built directly
        scale = np.full(c.vocab, 0.01, np.float32)
        if DEFAULT_HEAD == "int6":  # random bytes: every byte is a valid 6-bit row
            rows = Rows(q6=rng.integers(0, 256, size=(c.vocab, layout.int6_row_bytes(c.hidden)), dtype=np.uint8),
                        row_scale=scale, hidden=c.hidden)
        else:
            rows = Rows(q=rng.integers(-127, 128, size=(c.vocab, c.hidden), dtype=np.int8), row_scale=scale)
        m.set_rows(table, rows)
    m.set_final_norm(np.ones(c.hidden, np.float32))
    return Model(m, None, context, max_sequences, kv=kv)


def prefill_s(model, cache, ids: np.ndarray, repeats: int = 1) -> float:
    """Best seconds of a prefill of `ids` from position 0 into `cache`, its first token chosen
    (time to first token)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        int(np.argmax(model.engine.forward(cache, ids, 0, False)[0]))
        best = min(best, time.perf_counter() - start)
    return best


def decode_s(model, cache, ids: np.ndarray, position: int) -> float:
    """Seconds for decode steps of the tokens `ids`, one at a time from `position`, each chosen."""
    start = time.perf_counter()
    for j in range(len(ids)):
        int(np.argmax(model.engine.forward(cache, ids[j:j + 1], position + j, False)[0]))
    return time.perf_counter() - start


def measure(model, threads: int, decode_tokens: int) -> dict:
    set_num_threads(threads)
    vocab, cache = model.config.vocab, model.sequences.acquire().cache

    def forward(ids, position):
        return model.engine.forward(cache, ids, position, False)

    rng = np.random.default_rng(1)
    tokens = rng.integers(0, vocab, size=512, dtype=np.int32)
    forward(tokens[:16], 0)  # warm-up: page in weights, start threads
    t128, t512 = prefill_s(model, cache, tokens[:128], 3), prefill_s(model, cache, tokens[:512], 2)
    forward(tokens[:128], 0)
    native = 0.0
    start = time.perf_counter()
    token, pos = int(tokens[127]), 128
    for _ in range(decode_tokens):  # what Model.stream_tokens does per step, greedy
        s = time.perf_counter()
        logits = forward(np.array([token], dtype=np.int32), pos)
        native += time.perf_counter() - s
        token, pos = int(np.argmax(logits[0])), pos + 1
    decode_total = time.perf_counter() - start
    step_bytes = model.packed.decode_step_bytes()
    tps = decode_tokens / decode_total
    return {"threads": threads, "prefill_128_tokens_per_s": 128 / t128, "prefill_512_tokens_per_s": 512 / t512,
            "ttft_128_s": t128, "decode_tokens_per_s": tps, "decode_bytes_per_token": step_bytes,
            "decode_gb_s": step_bytes * tps / 1e9, "python_overhead_pct": 100 * (decode_total - native) / decode_total}


def add_bandwidth(records: list[dict]) -> None:
    """Read bandwidth at each record's thread count (after the RSS reading: the buffer is 256 MiB)."""
    from .kernels import read_bandwidth_gb_s

    buffer = np.ones(256 << 20, np.uint8)
    for r in records:
        set_num_threads(r["threads"])
        r["read_bw_gb_s"] = read_bandwidth_gb_s(buffer)
        r["decode_pct_of_read_bw"] = 100 * r["decode_gb_s"] / r["read_bw_gb_s"]


def _reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM), so that it covers inference only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(spec: dict, out) -> None:
    try:
        start = time.perf_counter()
        if spec["path"]:
            from ..loading import load
            model = load(spec["path"], context=1024, progress=False, kv=spec["kv"])
            name = spec["path"]
        else:
            model = synthetic_model(spec["shape"], spec["layers"], kv=spec["kv"])
            name = spec["shape"]
        load_s = time.perf_counter() - start
        load_rss = _peak_rss_mb()
        since_load = _reset_peak_rss()
        records = []
        for threads in spec["threads"]:
            r = {"model": name, "load_s": load_s, **measure(model, threads, spec["decode_tokens"])}
            records.append(r)
        kv_used = model.engine.cache_bytes_per_position * 512  # positions written
        for r in records:
            r.update(peak_rss_mb=_peak_rss_mb(), peak_rss_covers="inference" if since_load else "load and inference",
                     load_peak_rss_mb=load_rss, packed_weights_mb=model.packed.nbytes / 2**20,
                     kv_cache_used_mb=kv_used / 2**20)
        add_bandwidth(records)
        out.put(records)
    except Exception as e:  # report, do not hang the parent
        out.put(e)


def in_child(child, spec: dict) -> list[dict]:
    """child(spec, queue) in a spawned process of its own (its peak RSS its own): the records it puts."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(spec, q))
    p.start()
    result = q.get()
    p.join()
    if isinstance(result, Exception):
        raise result
    return result


def run(args) -> int:
    from .kernels import cpu_name

    if args.isa:
        from ..runtime import set_isa
        set_isa(args.isa)  # inherited by the spawned child through TELLME_ISA below
        import os
        os.environ["TELLME_ISA"] = args.isa
    if args.depth and min(args.depth) < 0:
        raise UsageError(f"--depth must be 0 or more, got {min(args.depth)}")
    if args.against:
        from . import against
        return against.run(args)
    specs = ([{"path": args.model, "shape": None}] if args.model else [{"path": None, "shape": s} for s in args.shape])
    if args.depth:
        from . import depth
        print(f"machine: {cpu_name()}, ISA {get_isa()}")
        records = depth.run(args, specs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"kind": "machine", "cpu": cpu_name(), "isa": get_isa()}] + records, f, indent=2)
        return 0
    records, saved = [], thread_setting()
    print(f"machine: {cpu_name()}")
    print(f"{'model':>8} {'thr':>3} {'load s':>7} {'pf128 t/s':>10} {'pf512 t/s':>10} {'ttft128 s':>9} "
          f"{'decode t/s':>10} {'%read bw':>8} {'py %':>5} {'RSS MB':>7} {'w+kv MB':>7}")
    for spec in specs:
        spec.update(threads=args.threads, decode_tokens=args.decode_tokens, layers=args.layers, kv=args.kv)
        result = in_child(_child, spec)
        for r in result:
            print(f"{str(r['model'])[-8:]:>8} {r['threads']:>3} {r['load_s']:>7.2f} {r['prefill_128_tokens_per_s']:>10.1f} "
                  f"{r['prefill_512_tokens_per_s']:>10.1f} {r['ttft_128_s']:>9.3f} {r['decode_tokens_per_s']:>10.1f} "
                  f"{r['decode_pct_of_read_bw']:>8.1f} {r['python_overhead_pct']:>5.1f} {r['peak_rss_mb']:>7.0f} "
                  f"{r['packed_weights_mb'] + r['kv_cache_used_mb']:>7.0f}")
        records += result
    set_num_threads(saved)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"kind": "machine", "cpu": cpu_name()}] + records, f, indent=2)
    return 0
