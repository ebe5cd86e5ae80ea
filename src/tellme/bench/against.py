"""`tellme bench e2e --against llama.cpp`: tellme and llama.cpp timed on the same GGUF file, in one run.

Each synthetic shape (e2e.SHAPES) is written by tellme's own GGUF writer as TQ2_0 in the form
llama.cpp's `bitnet` graph runs: sub-norms, SiLU, the head tied to the embedding. Its weights are
random ternary values; the embedding is Q8_0, so that both engines stream a head of about the same
size (tellme's int8 rows, llama.cpp's Q8_0 blocks; an F16 table would double llama.cpp's); the
tokenizer is the shipped model's, padded to the vocabulary (llama.cpp refuses a file without one).

Each engine runs in a worker process of its own, so that neither's threads compete with the
other's idle-spinning ones; the parent alternates them, and which goes first alternates too. Per
repetition and thread count: a 128-token prefill (one batched eval, then picking the first token)
and a greedy decode of one token per eval after it. With --depth D ...: a D-token prompt and the
decode after it, for each D. Reported per (shape, threads, phase): each engine's median and range,
and tellme / llama.cpp of the medians. tellme's KV cache is --kv's; llama.cpp's its default (fp16).

The machine must be quiet: the CPU time other processes take during the run is counted from
/proc/stat (all CPU time less this run's own), and the run refuses to report above 10% of a core.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import DEFAULT_KV
from ..errors import UsageError

ENGINES = ("tellme", "llama.cpp")
PROMPT = 128
BUSY_LIMIT = 0.10  # cores other processes may use, on average, while we measure
CONTEXT = 512


def write_synthetic_gguf(shape: str, path: Path, layers: int | None = None, context: int = CONTEXT) -> None:
    """`shape` as llama.cpp's `bitnet` graph runs it (sub-norms, SiLU, tied head), in TQ2_0 with a
    Q8_0 table; the scale 1/64 is exact in fp16, so it goes into the block scales."""
    from ..formats.gguf_export import write_gguf
    from ..loading import default_model_path
    from ..tokenizer import Tokenizer
    from .e2e import SyntheticReader, shape_config

    config = shape_config(shape, layers, context, architecture="bitnet-1bitllm", activation="silu",
                          tied_embeddings=True, bos_token_id=0, eos_token_ids=(0,))
    write_gguf(SyntheticReader(config, scale=1 / 64), Tokenizer.from_dir(default_model_path()), path, "tq2_0",
               embedding_type="q8_0")


# ---- the engines, each behind the same calls, each in its own process

class TellmeRunner:
    def __init__(self, path: str, context: int = CONTEXT, kv: str = DEFAULT_KV):
        from ..loading import load

        self.model = load(path, context=context, progress=False, kv=kv)
        self.cache = self.model.sequences.acquire().cache

    def describe(self) -> str:
        from ..runtime import cpu_info
        return (f"tellme, ISA {cpu_info()['isa']}, {self.model.packed.head} LM head (from the file's table), "
                f"{self.model.kv} KV cache")

    def set_threads(self, n: int) -> None:
        from ..runtime import set_num_threads
        set_num_threads(n)

    def next_token(self, tokens: np.ndarray, position: int) -> int:
        """Evaluate `tokens` from `position` in one call; the greedy next token."""
        return int(np.argmax(self.model.engine.forward(self.cache, tokens, position, False)[0]))

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        return np.array(self.model.engine.forward(self.cache, tokens, 0, False)[0])


class LlamaRunner:
    def __init__(self, path: str, context: int = CONTEXT, kv: str = DEFAULT_KV):
        try:
            import llama_cpp
        except ImportError:
            raise UsageError("--against llama.cpp needs llama-cpp-python: pip install 'tellme[bench]' "
                             "(it builds llama.cpp for this machine; see docs/benchmarks.md)") from None
        self.lib = llama_cpp
        batch = min(context, CONTEXT)  # longer prompts go in batches of 512, as llama-bench's ubatch
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=context, n_batch=batch, n_ubatch=batch,
                                   n_threads=1, n_threads_batch=1, verbose=False)

    def describe(self) -> str:
        info = self.lib.llama_print_system_info().decode()
        # "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | ...": the features it was built with
        flags = [part.split("=")[0].split()[-1] for part in info.split("|") if part.strip().endswith("= 1")]
        return f"llama.cpp (llama-cpp-python {self.lib.__version__}), {' '.join(flags)}"

    def set_threads(self, n: int) -> None:
        self.lib.llama_set_n_threads(self.llm.ctx, n, n)

    def _last_logits(self, tokens: np.ndarray, position: int) -> np.ndarray:
        if position == 0:
            self.llm.reset()
        self.llm.eval(tokens.tolist())  # one llama_decode per call (tokens fit one batch)
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))

    def next_token(self, tokens: np.ndarray, position: int) -> int:
        return int(np.argmax(self._last_logits(tokens, position)))

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        return self._last_logits(tokens, 0).copy()


def prompt_then_decode(runner, prompt: np.ndarray, steps: int) -> tuple[float, float]:
    """Seconds for the prefill of `prompt` (its first token picked), then for `steps` greedy steps
    of one token each after it."""
    start = time.perf_counter()
    token = runner.next_token(prompt, 0)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        token = runner.next_token(np.array([token], np.int32), len(prompt) + i)
    return prefill, time.perf_counter() - start


def _serve(engine: str, path: str, context: int, kv: str, conn) -> None:
    """A worker: builds its engine, then answers (function name, args) until told None."""
    try:
        runner = (TellmeRunner if engine == "tellme" else LlamaRunner)(path, context, kv)
        conn.send(("ok", runner.describe()))
        calls = {"set_threads": runner.set_threads, "prompt_then_decode": lambda *a: prompt_then_decode(runner, *a),
                 "logits": runner.logits}
        while (msg := conn.recv()) is not None:
            name, args = msg
            conn.send(("ok", calls[name](*args)))
    except Exception as e:  # the parent reports it; never hang it
        conn.send(("error", f"{engine}: {type(e).__name__}: {e}"))


class Worker:
    def __init__(self, engine: str, path: Path, context: int = CONTEXT, kv: str = DEFAULT_KV):
        self.engine = engine
        self.conn, child = mp.Pipe()
        self.process = mp.get_context("spawn").Process(target=_serve, args=(engine, str(path), context, kv, child),
                                                       daemon=True)
        self.process.start()
        self.description = self._answer()

    def _answer(self):
        if not self.conn.poll(600):
            raise UsageError(f"{self.engine} did not answer within 10 minutes")
        status, value = self.conn.recv()
        if status == "error":
            raise UsageError(value)
        return value

    def __call__(self, name: str, *args):
        self.conn.send((name, args))
        return self._answer()

    def cpu_s(self) -> float:
        """CPU seconds the worker has used so far (Linux; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (user, nice, system, irq), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:8]
        user, nice, system, _idle, _iowait, irq, softirq = map(int, fields)
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


class BusyMeter:
    """Cores others used, on average, since start (or since the last reset). The clock, the
    machine's busy seconds and our own CPU seconds can be given (tests give exact ones)."""

    def __init__(self, workers, clock=time.perf_counter, machine=machine_busy_s, own=None):
        self.workers, self.clock, self.machine = workers, clock, machine
        self.own = own or self._ours
        self.reset()

    def _ours(self) -> float:
        t = os.times()
        return t.user + t.system + sum(w.cpu_s() for w in self.workers)

    def reset(self) -> None:
        self.start, self.busy, self.ours = self.clock(), self.machine(), self.own()

    def others_cores(self) -> float | None:
        busy = self.machine()
        if busy is None or self.busy is None:
            return None
        wall = self.clock() - self.start
        return max(0.0, (busy - self.busy) - (self.own() - self.ours)) / wall


def refuse_if_busy(others: float | None, allow_busy: bool, when: str) -> None:
    if others is not None and others > BUSY_LIMIT and not allow_busy:
        raise UsageError(f"the machine is busy: other processes used {others:.2f} cores on average {when} "
                         f"(limit {BUSY_LIMIT}; load average {os.getloadavg()[0]:.2f}), so the figures would not "
                         "be comparable; run again when it is quiet (or pass --allow-busy)")


def _key(engine: str) -> str:
    return engine.replace(".", "_")


def compare(path: Path, shape: str, vocab: int, threads: list[int], repeats: int, decode_tokens: int,
            allow_busy: bool, log=print, depths: list[int] | None = None, kv: str = DEFAULT_KV) -> list[dict]:
    """Alternate the engines on `path`; one record per (threads, phase). Phases: prefill_128 and
    decode (after it), or with `depths`, prefill_D and decode_D (after it) for each depth D."""
    prompts = depths or [PROMPT]
    workers = [Worker(e, path, max(CONTEXT, max(prompts) + decode_tokens + 1), kv) for e in ENGINES]
    try:
        engines = {w.engine: w.description for w in workers}
        for w in workers:
            log(f"  {w.description}")
        meter = BusyMeter(workers)
        tokens = np.random.default_rng(1).integers(0, vocab, size=max(prompts), dtype=np.int32)
        records = []
        for t in threads:
            times = {(e, d): [] for e in ENGINES for d in prompts}  # (prefill s, decode s) per repetition
            for w in workers:
                w("set_threads", t)
                w("prompt_then_decode", tokens[:16], 2)  # warm-up: page the weights in, start the threads
            meter.reset()
            for rep in range(repeats):
                order = workers if rep % 2 == 0 else workers[::-1]
                for d in prompts:
                    for w in order:
                        times[w.engine, d].append(w("prompt_then_decode", tokens[:max(d, 1)], decode_tokens))
            others = meter.others_cores()
            refuse_if_busy(others, allow_busy, f"while {shape} ran at {t} thread(s)")
            for d in prompts:
                phases = [("decode" if not depths else f"decode_{d}", 1, decode_tokens)]
                if d:
                    phases.insert(0, (f"prefill_{d}", 0, d))
                for phase, which, n in phases:
                    rate = {e: sorted(n / s[which] for s in times[e, d]) for e in ENGINES}
                    med = {e: statistics.median(r) for e, r in rate.items()}
                    records.append({"shape": shape, "threads": t, "phase": phase, "repeats": repeats,
                                    "others_cores": others, "engines": engines,
                                    **{f"{_key(e)}_tokens_per_s": med[e] for e in ENGINES},
                                    **{f"{_key(e)}_range": [rate[e][0], rate[e][-1]] for e in ENGINES},
                                    "ratio": med["tellme"] / med["llama.cpp"]})
        return records
    finally:
        for w in workers:
            w.close()


def run(args) -> int:
    from .e2e import SHAPES
    from .kernels import cpu_name

    if args.model:
        raise UsageError("--against runs the synthetic shapes (--shape), written as TQ2_0; it takes no --model")
    for name, value in (("--repeats", args.repeats), ("--decode-tokens", args.decode_tokens),
                        ("--threads", min(args.threads))):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    meter = BusyMeter([])
    time.sleep(1.0)
    refuse_if_busy(meter.others_cores(), args.allow_busy, "in the second before the run")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs")
    records = []
    with tempfile.TemporaryDirectory(prefix="tellme-bench-") as tmp:
        for shape in args.shape:
            path = Path(tmp) / f"{shape}-tq2_0.gguf"
            start = time.perf_counter()
            write_synthetic_gguf(shape, path, args.layers, max(CONTEXT, max(args.depth or [0]) + args.decode_tokens + 1))
            print(f"{shape}: wrote {path.stat().st_size / 2**20:.0f} MiB of TQ2_0 in {time.perf_counter() - start:.0f} s")
            records += compare(path, shape, SHAPES[shape]["vocab"], args.threads, args.repeats, args.decode_tokens,
                               args.allow_busy, depths=args.depth, kv=args.kv)
            path.unlink()
    print(f"{'shape':>6} {'thr':>3} {'phase':>12} {'tellme t/s (range)':>24} {'llama.cpp t/s (range)':>24} {'ratio':>6}")
    for r in records:
        cells = [f"{r[_key(e) + '_tokens_per_s']:.1f} ({r[_key(e) + '_range'][0]:.1f}-{r[_key(e) + '_range'][1]:.1f})"
                 for e in ENGINES]
        print(f"{r['shape']:>6} {r['threads']:>3} {r['phase']:>12} {cells[0]:>24} {cells[1]:>24} {r['ratio']:>6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            machine = {"kind": "machine", "cpu": cpu_name(), "engines": records[0]["engines"] if records else {},
                       "load_average": os.getloadavg()[0]}
            json.dump([machine] + [{k: v for k, v in r.items() if k != "engines"} for r in records], f, indent=2)
    return 0
