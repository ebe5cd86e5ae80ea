"""`tellme bench load`: how long a model takes to open, the process's peak memory while it opens
and runs its first forward pass, and that first pass's latency, per source format, on synthetic
models of the real shapes (random weights; written once into --dir): GGUF I2_S, TQ2_0 and TQ1_0
with their float tables as the peers' converters write them (F16, as the official 2B-4T I2_S
file and llama.cpp's converter do; BF16; F32), tellme's converted file, and a Hugging Face
directory of bf16 masters. The 0.73B shape has an untied LM head, so its files carry a head table
too.

Each measurement is a fresh Python process (so its peak resident memory is the load's alone):
it imports tellme, notes its resident memory, loads, runs an 8-token prompt, and reports the
seconds and VmHWM. "warm" runs find the file in the page cache (a first, unreported run puts it
there); "cold" runs first evict the file with posix_fadvise(DONTNEED), which drops its clean
pages from the cache without privileges (no other process may map it meanwhile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# format: (GGUF weight type, table type), or a non-GGUF layout
GGUF_LAYOUTS = {"i2_s": ("i2_s", "f16"), "i2_s-bf16": ("i2_s", "bf16"), "i2_s-f32": ("i2_s", "f32"),
                "tq2_0": ("tq2_0", "f16"), "tq2_0-bf16": ("tq2_0", "bf16"), "tq1_0": ("tq1_0", "f16")}
FORMATS = (*GGUF_LAYOUTS, "converted", "hf")
PROBE = r"""
import json, sys, time
import tellme
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = status("VmRSS:")
t0 = time.perf_counter()
m = tellme.load(sys.argv[1], threads=int(sys.argv[2]), progress=False, max_sequences=1, context=64)
t1 = time.perf_counter()
m.logits(list(range(1, 9)))
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "first_forward_s": t2 - t1, "rss_before": before, "peak_rss": status("VmHWM:"),
                  "rss_after": status("VmRSS:"), "packed_bytes": m.packed.nbytes, "load_paths": m.packed.load_paths}))
"""


def add_arguments(p) -> None:
    from .e2e import SHAPES

    p.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--format", nargs="+", choices=FORMATS, default=list(FORMATS))
    p.add_argument("--dir", help="where the model files are written and kept (default: a temporary directory)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cold", action="store_true", help="warm runs only")
    p.add_argument("--layers", type=int, help="override the layer count (quick runs)")
    p.add_argument("--vocab", type=int, help="override the vocabulary size (quick runs)")
    p.add_argument("--json", metavar="PATH", help="write one record per (shape, format, cache state)")


def model_file(shape: str, fmt: str, directory: Path, overrides: dict | None = None) -> Path:
    """The synthetic model of `shape` in format `fmt` (fields overridden by `overrides`), written
    unless already there."""
    from .e2e import SyntheticReader, shape_config

    stem = "-".join([shape] + [f"{k}{v}" for k, v in sorted((overrides or {}).items())])
    config = shape_config(shape, context=4096, rope_theta=500000.0, **(overrides or {}))
    path = directory / (f"{stem}-{fmt}.gguf" if fmt in GGUF_LAYOUTS else
                        {"converted": f"{stem}.safetensors", "hf": f"{stem}-hf"}[fmt])
    if path.exists():
        return path
    from ..formats.gguf_export import write_gguf

    print(f"writing {path} ...", file=sys.stderr, flush=True)
    if fmt in GGUF_LAYOUTS:
        qtype, table = GGUF_LAYOUTS[fmt]
        write_gguf(SyntheticReader(config), None, path, qtype, embedding_type=table)
    elif fmt == "hf":
        write_hf_bf16(config, path)
    else:  # tellme's converted file, from the I2_S one
        from ..loading import read_packed
        packed, tokenizer = read_packed(model_file(shape, "i2_s", directory, overrides))
        packed.save(path, tokenizer)
    return path


def write_hf_bf16(c, directory: Path) -> None:
    """A Hugging Face directory of bf16 masters (quantized with absmean at load), one shard per
    layer: model_type bitnet, or BitnetForCausalLM for the 1bitLLM architecture."""
    from ..formats.hf import LINEARS, NORMS, SUB_NORMS
    from ..formats.safetensors import write

    tmp = directory.with_name(directory.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def bf16(shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).view(np.uint32) >> 16

    def shard(name, tensors):
        write(tmp / f"{name}.safetensors", {k: np.ascontiguousarray(v.astype(np.uint16)) for k, v in tensors.items()},
              {"format": "pt"}, bf16=frozenset(tensors))

    config = {"hidden_size": c.hidden, "intermediate_size": c.intermediate, "num_hidden_layers": c.layers,
              "num_attention_heads": c.heads, "num_key_value_heads": c.kv_heads, "vocab_size": c.vocab,
              "max_position_embeddings": c.context, "rms_norm_eps": c.eps, "rope_theta": c.rope_theta,
              "tie_word_embeddings": c.tied_embeddings, "hidden_act": c.activation}
    config.update({"model_type": "bitnet"} if c.architecture == "bitnet-2b4t" else
                  {"model_type": "llama", "architectures": ["BitnetForCausalLM"]})
    (tmp / "config.json").write_text(json.dumps(config))
    for i in range(c.layers):
        t = {f"model.layers.{i}.{LINEARS[n]}.weight": bf16(c.linear_shape(n)) for n in LINEARS}
        for n, module in {**NORMS, **SUB_NORMS[c.architecture]}.items():
            t[f"model.layers.{i}.{module}.weight"] = bf16((c.norm_dim(n),), 0) + 0x3F80  # 1.0
        shard(f"layer-{i:03d}", t)
    tables = {"model.embed_tokens.weight": bf16((c.vocab, c.hidden), 1.0), "model.norm.weight": bf16((c.hidden,), 0) + 0x3F80}
    if not c.tied_embeddings:
        tables["lm_head.weight"] = bf16((c.vocab, c.hidden), 1.0)
    shard("tables", tables)
    tmp.rename(directory)


def evict(path: Path) -> None:
    """Drops the file's (or a directory's files') clean pages from the page cache."""
    for p in sorted(path.iterdir()) if path.is_dir() else [path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def probe(path: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(threads)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"tellme bench load: loading {path} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> int:
    from .kernels import cpu_name
    from ..runtime import get_isa

    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="tellme-bench-load-"))
    directory.mkdir(parents=True, exist_ok=True)
    states = ["warm"] + ([] if args.no_cold else ["cold"])
    print(f"machine: {cpu_name()}, ISA {get_isa()}, {args.threads} threads; load: tellme.load; first forward: "
          "an 8-token prompt; peak: the process's VmHWM less its memory before loading, also less the file's size "
          "and the packed model's")
    print(f"{'shape':>6} {'format':>9} {'file MB':>8} {'cache':>5} {'load s (range)':>18} {'peak MB':>8} {'x file':>6} "
          f"{'- file MB':>9} {'- packed MB':>11} {'1st fwd s':>9}")
    records = []
    try:
        for shape in args.shape:
            for fmt in args.format:
                overrides = {k: v for k, v in (("layers", args.layers), ("vocab", args.vocab)) if v}
                path = model_file(shape, fmt, directory, overrides)
                size = size_of(path)
                probe(path, args.threads)  # into the page cache; pages in the library too
                for state in states:
                    runs = []
                    for _ in range(args.repeats):
                        if state == "cold":
                            evict(path)
                        runs.append(probe(path, args.threads))
                    load = [r["load_s"] for r in runs]
                    peak = max(r["peak_rss"] - r["rss_before"] for r in runs)
                    rec = {"shape": shape, "format": fmt, "cache": state, "file_bytes": size, "threads": args.threads,
                           "isa": get_isa(), "load_s_median": float(np.median(load)), "load_s_min": min(load),
                           "load_s_max": max(load), "peak_rss_bytes": peak, "peak_over_file_bytes": peak - size,
                           "first_forward_s_median": float(np.median([r["first_forward_s"] for r in runs])),
                           "packed_bytes": runs[0]["packed_bytes"], "load_paths": runs[0]["load_paths"]}
                    records.append(rec)
                    spread = f"{rec['load_s_median']:.2f} ({min(load):.2f}-{max(load):.2f})"
                    print(f"{shape:>6} {fmt:>9} {size / 1e6:>8.0f} {state:>5} {spread:>18} {peak / 1e6:>8.0f} "
                          f"{peak / size:>6.2f} {(peak - size) / 1e6:>9.0f} {(peak - rec['packed_bytes']) / 1e6:>11.0f} "
                          f"{rec['first_forward_s_median']:>9.3f}")
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"kind": "machine", "cpu": cpu_name(), "isa": get_isa()}] + records, f, indent=2)
    return 0
