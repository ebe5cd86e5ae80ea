"""`tellme bench busy`: what threads do on a busy machine. Decode and prefill tokens/s of the
synthetic real-shape models with 1 thread, with every physical core, and with automatic threads
(the default), on a quiet machine and then with another program spinning on one core; the ratios
to 1 thread are measured in the same run, settings alternating."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from ..errors import UsageError
from ..runtime import physical_cores, set_num_threads, thread_setting
from .e2e import SHAPES, decode_s, prefill_s, synthetic_model

SPINNER = "import time\nend = time.time() + 600\nwhile time.time() < end: pass"  # stops by itself


def add_arguments(p) -> None:
    p.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--layers", type=int, default=6, help="layers of each synthetic model (default 6)")
    p.add_argument("--repeats", type=int, default=5, help="alternations of the three settings (default 5)")
    p.add_argument("--decode-tokens", type=int, default=48)


def measure(model, cache, decode_tokens: int) -> dict:
    """Prefill of 128 tokens, then decode steps after them, on `cache` (rewritten from position 0)."""
    ids = np.arange(128 + decode_tokens, dtype=np.int32) % model.config.vocab
    return {"prefill": 128 / prefill_s(model, cache, ids[:128]),
            "decode": decode_tokens / decode_s(model, cache, ids[128:], 128)}


def rounds(model, settings, repeats: int, decode_tokens: int) -> dict:
    got: dict = {}
    seq = model.sequences.acquire()
    try:
        for r in range(repeats):
            for s in settings if r % 2 == 0 else settings[::-1]:
                set_num_threads(s)
                for phase, v in measure(model, seq.cache, decode_tokens).items():
                    got.setdefault((phase, s), []).append(v)
    finally:
        model.sequences.release(seq)
    return {k: float(np.median(v)) for k, v in got.items()}


def run(args) -> int:
    if args.repeats < 1 or args.decode_tokens < 1 or args.layers < 1:
        raise UsageError("--repeats, --decode-tokens and --layers must be at least 1")
    cores = physical_cores()
    if cores < 2:
        raise UsageError("this machine has one physical core: there is no team to compare")
    saved, settings = thread_setting(), (1, cores, "auto")
    print(f"threads 1, {cores} and auto; {args.layers} layers; medians of {args.repeats} alternations")
    try:
        for shape in args.shape:
            model = synthetic_model(shape, args.layers, context=256, max_sequences=1)
            for label in ("quiet", "one core spinning"):
                spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if label != "quiet" else None
                try:
                    if spinner:
                        time.sleep(0.5)
                    r = rounds(model, settings, args.repeats, args.decode_tokens)
                finally:
                    if spinner:
                        spinner.kill()
                        spinner.wait()
                for phase in ("prefill", "decode"):
                    one = r[phase, 1]
                    print(f"  {shape:6s} {label:18s} {phase:7s} 1 thread {one:8.1f} tokens/s | "
                          + " | ".join(f"{s}: {r[phase, s]:8.1f} ({r[phase, s] / one:.2f}x)" for s in settings[1:]))
    finally:
        set_num_threads(saved)
    return 0
