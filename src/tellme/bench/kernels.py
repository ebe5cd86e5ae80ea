"""`tellme bench kernels`: every kernel variant on real model shapes, measured against this
machine's own limits measured in the same run (memory read bandwidth and int8 multiply-add peak).

GEMV (1 token) streams weights from memory the way decoding does: it rotates through enough
distinct copies of each matrix that together they exceed 4x the last-level cache. GEMM (many
tokens) reuses one copy, as prefill does.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from .. import _core
from ..kernels import KERNELS, TernaryWeights
from ..runtime import available_isas, get_isa, set_isa, set_num_threads, thread_setting

# what `--kernel` measures: the two layouts, and i2 with a scale per 128 weights (Ternary Bonsai)
VARIANTS = (*KERNELS, "i2-g128")
# (out, in) of bitnet_b1_58-large (0.73B) and BitNet b1.58 2B-4T linears
SHAPES = {
    "0.73B": [(1536, 1536), (4096, 1536), (1536, 4096)],
    "2B-4T": [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)],
}


def add_arguments(p) -> None:
    p.add_argument("--json", metavar="PATH", help="write one record per measurement to PATH")
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 128], help="token counts (default: 1 128)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    p.add_argument("--isa", nargs="+", help="ISAs to measure (default: every ISA that runs here)")
    p.add_argument("--kernel", nargs="+", choices=VARIANTS, default=list(KERNELS),
                   help="tlmm, i2, i2-g128 (i2 with a scale per 128 weights; default: tlmm i2)")
    p.add_argument("--model", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per measurement")


def last_level_cache_bytes() -> int:
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = index.joinpath("size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * mult)
    return max(sizes, default=32 << 20)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_bandwidth_gb_s(buffer: np.ndarray, repeats: int = 5) -> float:
    _core.stream_read(buffer)  # warm up: page in, wake threads
    best = min(_timed(lambda: _core.stream_read(buffer)) for _ in range(repeats))
    return buffer.nbytes / best / 1e9


def _peak(loop, seconds: float, repeats: int) -> float:
    """Best of `repeats` runs of a native register loop on every thread, in G operations/s."""
    iterations = 1 << 16
    while _timed(lambda: loop(iterations)) < seconds:
        iterations *= 2
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ops = loop(iterations)
        best = min(best, time.perf_counter() - start)
    return ops / best / 1e9


def int8_peak_gops(seconds: float = 0.1, repeats: int = 5) -> float:
    """The int8 multiply-add loop on every thread, in GMAC/s."""
    return _peak(_core.int8_madd_loop, seconds, repeats)


def fp32_peak_gflops(seconds: float = 0.1, repeats: int = 5) -> float:
    """The fp32 FMA loop on every thread, in GFLOP/s (an FMA is two)."""
    return 2 * _peak(_core.fp32_fma_loop, seconds, repeats)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_kernel(packed: TernaryWeights, copies: int, q: np.ndarray, min_time: float) -> float:
    datas = [packed.data] + [packed.data.copy() for _ in range(copies - 1)]
    scales = [] if packed.group_scale is None else [packed.group_scale] + [packed.group_scale.copy()
                                                                           for _ in range(copies - 1)]
    neg = packed.neg_count if packed.neg_count is not None else np.zeros(1, np.int32)
    args = (packed.kernel, datas, neg, packed.out_features, packed.in_features, q)
    once = _core.time_matmul(*args, 1, scales, packed.group)  # warm-up, and a first estimate
    repeats = max(1, int(min_time / (once * len(datas))))
    return _core.time_matmul(*args, repeats, scales, packed.group)


def pack_variant(w: np.ndarray, variant: str, rng) -> TernaryWeights:
    if variant == "i2-g128":
        return TernaryWeights.pack(w, rng.uniform(0.01, 0.1, (w.shape[0], w.shape[1] // 128)).astype(np.float32), "i2")
    return TernaryWeights.pack(w, 1.0, variant)


def run(args) -> int:
    isas = args.isa or available_isas()
    for isa in isas:
        if isa not in available_isas():
            raise SystemExit(f"tellme bench kernels: ISA {isa!r} cannot run here (available: {', '.join(available_isas())})")
    saved_isa, saved_threads = get_isa(), thread_setting()
    llc = last_level_cache_bytes()
    rng = np.random.default_rng(0)

    # The machine's limits, per thread count, with the best native ISA.
    bandwidth, peak = {}, {}
    buffer = np.ones(max(8 * llc, 256 << 20), dtype=np.uint8)
    for n in args.threads:
        set_num_threads(n)
        bandwidth[n] = read_bandwidth_gb_s(buffer)
        peak[n] = int8_peak_gops()
    del buffer
    top = max(args.threads)
    machine = {"kind": "machine", "cpu": cpu_name(), "isa": saved_isa, "llc_bytes": llc,
               "read_gb_s": bandwidth[top], "int8_peak_gops": peak[top],
               "read_gb_s_by_threads": bandwidth, "int8_peak_gops_by_threads": peak}
    print(f"machine: {machine['cpu']}, LLC {llc >> 20} MiB, best ISA {saved_isa}")
    for n in args.threads:
        print(f"  {n} thread(s): read bandwidth {bandwidth[n]:.1f} GB/s, int8 multiply-add peak {peak[n]:.0f} GMAC/s")
    print("GEMV: % of the weight-streaming limit (packed bytes / time / read bandwidth); "
          "GEMM: % of the int8 peak (out*in*tokens / time / peak); both at the same thread count\n")

    records = [machine]
    variants = [(k, isa) for isa in isas for k in args.kernel]
    header = f"{'model':6} {'out x in':>11} {'tok':>4} {'thr':>3} | " + " | ".join(f"{k}/{lv:>6}" .rjust(16) for k, lv in variants)
    print(header)
    print("-" * len(header))
    for model in args.model:
        for out_f, in_f in SHAPES[model]:
            w = rng.integers(-1, 2, size=(out_f, in_f), dtype=np.int8)
            packed = {k: pack_variant(w, k, rng) for k in args.kernel}
            for tokens in args.tokens:
                q = rng.integers(-127, 128, size=(tokens, in_f), dtype=np.int8)
                for n in args.threads:
                    set_num_threads(n)
                    cells = []
                    for kernel, isa in variants:
                        set_isa(isa)
                        p = packed[kernel]
                        copies = 1 if tokens > 1 else -(-4 * llc // p.nbytes) + 1
                        seconds = time_kernel(p, copies, q, args.min_time)
                        rec = {"kind": "kernel", "model": model, "kernel": kernel, "isa": isa,
                               "out": out_f, "in": in_f, "tokens": tokens, "threads": n,
                               "seconds": seconds, "bits_per_weight": p.bits_per_weight,
                               "weight_bytes": p.nbytes, "weight_copies": copies}
                        if tokens == 1:
                            rec["gb_s"] = p.nbytes / seconds / 1e9
                            rec["pct_of_read_bw"] = 100 * rec["gb_s"] / bandwidth[n]
                            cells.append(f"{seconds * 1e6:7.0f}us {rec['pct_of_read_bw']:5.1f}%")
                        else:
                            rec["gops"] = out_f * in_f * tokens / seconds / 1e9
                            rec["pct_of_int8_peak"] = 100 * rec["gops"] / peak[n]
                            cells.append(f"{seconds * 1e3:7.2f}ms {rec['pct_of_int8_peak']:5.1f}%")
                        records.append(rec)
                    print(f"{model:6} {out_f:>5}x{in_f:<5} {tokens:>4} {n:>3} | " + " | ".join(c.rjust(16) for c in cells),
                          flush=True)
    set_isa(saved_isa)
    set_num_threads(saved_threads)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
        print(f"\nwrote {len(records)} records to {args.json}")
    return 0
