"""Command line: `tellme ...` / `python -m tellme ...`."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

from .config import DEFAULT_KV, KV_FORMATS
from .errors import UsageError

MODEL_HELP = ("Hugging Face checkpoint directory, GGUF file, file written by `tellme convert`, Hugging Face "
              "model id in the local cache (e.g. microsoft/bitnet-b1.58-2B-4T; downloaded only with --pull or "
              "`tellme pull`), or 'default' "
              "(the small Shakespeare model shipped with tellme)")


def _count(low: int):
    """argparse type: an integer >= low (0 for --context is a mistake, not "the default")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _threads(text: str):
    """argparse type of --threads: a count >= 1, or auto."""
    if text == "auto":
        return text
    try:
        return _count(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}") from None


def _model_args(p, many: bool = False) -> None:
    if many:
        p.add_argument("-m", "--model", action="append", help="a model to serve (repeatable; " + MODEL_HELP +
                       "); default: the shipped model and every runnable model in the Hugging Face cache")
    else:
        p.add_argument("-m", "--model", default="default", help=MODEL_HELP + "; default: default")
    p.add_argument("--threads", type=_threads, help="native threads, or auto: up to the physical cores, as many "
                   "as other programs leave free (default: auto)")
    p.add_argument("--context", type=_count(1), help="KV cache length in tokens (default: the model's)")
    p.add_argument("--head", choices=("int8", "int6", "fp32"),
                   help="embedding/LM head precision (default: int6, or a converted file's own)")
    p.add_argument("--kv", choices=KV_FORMATS, help=f"KV cache format: f16, or q8 (int8 with a scale per head "
                   f"and position: half the bytes; docs/kernels.md) (default: {DEFAULT_KV})")
    p.add_argument("--pull", action="store_true", help="download the model id from the Hub first if it is not "
                                                       "cached (as `tellme pull`)")


def _numerics_arg(p) -> None:
    p.add_argument("--numerics", choices=("native", "tellme-v2", "tellme-v2-ideal"), default="native",
                   help="tellme-v2: run the TeLLMe v2 accelerator's datapath bit for bit (fp16, 24-bit TLMM "
                        "accumulators, SiLU table; NumPy, slow: docs/accel.md); tellme-v2-ideal: its dataflow "
                        "without the approximations (default: native)")


def _sampling_args(p) -> None:
    p.add_argument("-n", "--max-tokens", type=_count(0), default=128)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=40, help="0 = off")
    p.add_argument("--top-p", type=float, default=0.95, help="1 = off")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below this times the top probability")
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, help="sampling seed; -1: a random one, printed (default: random)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--stats", action="store_true",
                   help="print load time, prefill and decode speed to stderr after each reply")


def _sampling(args) -> dict:
    """The sampling arguments, validated (before anything is loaded or echoed)."""
    from .sampling import SamplingParams

    if any(not s for s in args.stop):
        raise UsageError("--stop needs a non-empty string")
    if args.seed == -1:
        args.seed = secrets.randbelow(2**31)
        print(f"seed: {args.seed}", file=sys.stderr)
    p = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
             repetition_penalty=args.repetition_penalty, seed=args.seed)
    SamplingParams(**p)
    return p


def _load(args, path=None, pull=None, **kwargs):
    """The model at `path` (default: -m), pulled first with --pull (or `pull`)."""
    from .loading import load
    path = path or args.model
    pull = getattr(args, "pull", False) if pull is None else pull
    if pull and path != "default" and not Path(path).exists():
        from .hub import pull
        pull(path)
    start = time.perf_counter()
    kwargs.setdefault("numerics", getattr(args, "numerics", "native"))
    model = load(path, threads=args.threads, context=args.context, head=args.head, kv=args.kv, **kwargs)
    args.load_s = time.perf_counter() - start
    return model


def _print_stats(args, stats) -> None:
    """The figures of llama.cpp's timing lines."""
    print(f"[load {args.load_s:.2f} s | prompt {stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
          f"prefill {stats.prefill_tokens_per_s:.1f} tokens/s | generated {stats.generated_tokens} tokens, "
          f"decode {stats.decode_tokens_per_s:.1f} tokens/s]", file=sys.stderr)


def _stop_notice(model, stats) -> None:
    if stats.stop_reason == "context":
        print(f"[stopped: the context of {model.context} tokens is full (--context sets it)]", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="tellme", description="Ternary (BitNet b1.58) LLM inference on CPUs.")
    parser.add_argument("--version", action="version", version=f"tellme {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="CPU features, ISAs and threads; with MODEL, the model too")
    info.add_argument("model", nargs="?", help=MODEL_HELP)

    gen = sub.add_parser("generate", help="generate text from a prompt")
    _model_args(gen)
    gen.add_argument("prompt", help="prompt text ('-' reads standard input)")
    _sampling_args(gen)
    gen.add_argument("--no-echo", action="store_true", help="print only the generated text, not the prompt first")
    shape = gen.add_mutually_exclusive_group()
    shape.add_argument("--json-schema", metavar="FILE", help="constrain the output to JSON matching this schema file")
    shape.add_argument("--regex", help="constrain the output to match this regular expression")
    shape.add_argument("--grammar", metavar="FILE", help="constrain the output to this Lark or GBNF grammar file")
    _numerics_arg(gen)

    chat = sub.add_parser("chat", help="interactive chat (Ctrl-C stops a reply; Ctrl-D ends the chat)")
    _model_args(chat)
    chat.add_argument("--system", help="system message")
    _sampling_args(chat)
    chat.set_defaults(max_tokens=512)

    ppl = sub.add_parser("perplexity", help="sliding-window perplexity of a text file")
    _model_args(ppl)
    ppl.add_argument("file")
    ppl.add_argument("--window", type=_count(2), help="tokens per window (default: the context)")
    ppl.add_argument("--stride", type=_count(1), help="new tokens per window (default: window / 2)")
    _numerics_arg(ppl)

    conv = sub.add_parser("convert", help="pack a checkpoint into one ready-to-mmap file, or write it as GGUF")
    conv.add_argument("src", help=MODEL_HELP.replace("file written by `tellme convert`, ", ""))
    conv.add_argument("dst", help="output file: .safetensors (tellme's packed layout) or .gguf; a directory "
                                  "with --type tellme-v2")
    conv.add_argument("--type", choices=("tq2_0", "tq1_0", "i2_s", "q2_0", "tellme-v2"),
                      help="ternary weight type of a .gguf output (default tq2_0; i2_s is bitnet.cpp's; q2_0, "
                           "with a scale per block of 128, Ternary Bonsai's); tellme-v2: the TeLLMe v2 board's "
                           "DDR weight image and host tables, written into the directory DST (docs/accel.md)")
    conv.add_argument("--pad-ffn", action="store_true",
                      help="write a .gguf whose FFN width is not whole blocks even though the model has an FFN "
                           "sub-norm, which padding changes slightly (docs/gguf.md)")
    conv.add_argument("--head", choices=("int8", "int6", "fp32"), default="int6", help="LM head of a .safetensors output")
    conv.add_argument("--kernel", choices=("auto", "tlmm", "i2"), default="auto",
                      help="kernel layout of a .safetensors output")
    conv.add_argument("--force", action="store_true", help="overwrite DST if it exists")

    pl = sub.add_parser("pull", help="download a model from the Hugging Face Hub into its cache, verified")
    pl.add_argument("ref", metavar="REPO[:FILE or :QUANT]",
                    help="a model id, e.g. microsoft/bitnet-b1.58-2B-4T-gguf:i2_s (one GGUF of several, by file "
                         "name or weight type)")
    pl.add_argument("--revision", help="a branch, tag or commit (default: main)")
    pl.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the Hub (default 30)")
    sub.add_parser("list", help="the cached models tellme can run")
    rm = sub.add_parser("rm", help="remove a cached model")
    rm.add_argument("id", help="a model id as `tellme list` shows it")

    srv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (needs the serve extra)")
    _model_args(srv, many=True)
    srv.add_argument("--models-dir", help="serve every model (GGUF, converted file, checkpoint directory) in DIR")
    srv.add_argument("--max-memory", type=float, metavar="GIB",
                     help="memory for the models loaded at once, weights and KV caches (default: 3/4 of what is "
                          "available); the least recently used is unloaded to make room")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    srv.add_argument("--port", type=_count(0), default=8080)
    srv.add_argument("--max-batch", type=_count(1), help="sequences generated at once (default: 8, or what "
                                                         "memory allows)")
    srv.add_argument("--max-queue", type=_count(0), default=64, help="requests that may wait for a sequence")
    srv.add_argument("--api-key", default=os.environ.get("TELLME_API_KEY"),
                     help="require 'Authorization: Bearer KEY' (default: $TELLME_API_KEY, else none)")
    srv.add_argument("--name", help="the model id clients use (default: the model's file or directory name)")

    from . import train
    train.add_arguments(sub.add_parser("train", help="BitNet b1.58 quantization-aware training of a small model "
                                                     "(needs the train extra)"))

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    from .bench import busy, e2e, kernels, load, serve
    kernels.add_arguments(bench_sub.add_parser("kernels", help="kernel throughput against the machine's limits"))
    e2e.add_arguments(bench_sub.add_parser("e2e", help="prefill/decode speed of whole models"))
    serve.add_arguments(bench_sub.add_parser("serve", help="many streams at once through the batching scheduler"))
    load.add_arguments(bench_sub.add_parser("load", help="load time, peak memory and first forward per file format"))
    busy.add_arguments(bench_sub.add_parser("busy", help="1 thread, all cores and auto threads, quiet and with "
                                                         "one core taken by another program"))
    from . import cli_accel
    cli_accel.add_arguments(sub.add_parser("accel", help="the TeLLMe v2 FPGA accelerator: predicted speed and "
                                                         "resources on a board, design space (docs/accel.md)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (`tellme generate ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # every TellmeError is a ValueError; messages name the culprit
        print(f"tellme: error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print("tellme: error: out of memory (a smaller --context needs less)", file=sys.stderr)
        return 1


def cmd_info(args) -> int:
    from .runtime import cpu_info
    out = cpu_info()
    if args.model:
        from .loading import load
        m = load(args.model, progress=False)
        out["model"] = {"path": args.model, "source": m.source, "config": json.loads(m.config.to_json()),
                        "packed_weight_bytes": m.packed.nbytes, "head": m.packed.head,
                        "load_paths": m.packed.load_paths,
                        "kv_cache_bytes_per_sequence": m.engine.cache_bytes_per_position * m.context,
                        "max_sequences": m.max_sequences,
                        "tokenizer": m.tokenizer is not None,
                        "chat_template": bool(m.tokenizer and m.tokenizer.chat_template)}
    print(json.dumps(out, indent=2))
    return 0


def _constraint_args(args) -> dict:
    """--json-schema, --regex or --grammar, read and checked before the model is loaded."""
    from .constrain import compile_grammar

    given = {}
    for key, path in (("json_schema", args.json_schema), ("grammar", args.grammar)):
        if path is not None:
            try:
                given[key] = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f"--{key.replace('_', '-')} {path}: cannot read it ({e})") from None
    if args.regex is not None:
        given["regex"] = args.regex
    if given:
        compile_grammar(**given)
    return given


def cmd_generate(args) -> int:
    from .model import GenerationStats

    sampling = _sampling(args)
    constrained = _constraint_args(args)
    sampling.update(constrained)
    prompt = args.prompt
    if prompt == "-":
        try:
            prompt = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsageError(f"standard input is not UTF-8 text ({e})") from None
    model = _load(args)
    if not args.no_echo:
        print(prompt, end="", flush=True)
    stats = GenerationStats()
    for piece in model.stream(prompt, args.max_tokens, args.stop, stats, **sampling):
        print(piece, end="", flush=True)
    print()
    _stop_notice(model, stats)
    if constrained and stats.stop_reason in ("length", "context"):
        print("[the output stopped before its grammar was complete: it may not match]", file=sys.stderr)
    if args.stats:
        _print_stats(args, stats)
    return 0


def _fit_context(model, messages: list[dict], reserve: int) -> list[int]:
    """The prompt ids of `messages`, dropping the oldest turns (never a system message, never the
    last message) until `reserve` positions are left for the reply."""
    ids = model.encode_chat(messages)
    dropped = 0
    while len(ids) + reserve > model.context:
        first = next((i for i, m in enumerate(messages[:-1]) if m["role"] != "system"), None)
        if first is None:
            raise UsageError(f"the message is {len(ids)} tokens; with {reserve} kept for the reply it does not fit "
                             f"the context of {model.context} tokens (--context sets it)")
        del messages[first]
        dropped += 1
        ids = model.encode_chat(messages)
    if dropped:
        print(f"[context full: the oldest {dropped} message(s) were dropped]", file=sys.stderr)
    return ids


def cmd_chat(args) -> int:
    from .model import GenerationStats

    sampling = _sampling(args)
    model = _load(args)
    if model.tokenizer is None or not model.tokenizer.chat_template:
        raise UsageError(f"{args.model} has no chat template (tokenizer_config.json chat_template); "
                         "use `tellme generate` to continue text instead")
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    stop = args.stop or model.config.stop_strings
    reserve = max(1, min(args.max_tokens, model.context // 2))
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("[Ctrl-C stops a reply; Ctrl-D, or Ctrl-C at the prompt, ends the chat]", file=sys.stderr)
    while True:
        try:
            user = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not user.strip():
            continue
        messages.append({"role": "user", "content": user})
        try:
            ids = _fit_context(model, messages, reserve)
        except ValueError as e:
            print(f"tellme: {e}", file=sys.stderr)
            messages.pop()
            continue
        reply, stats = [], GenerationStats()
        try:
            for piece in model.stream_ids(ids, args.max_tokens, stop, stats, **sampling):
                reply.append(piece)
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})
        _stop_notice(model, stats)
        if args.stats:
            _print_stats(args, stats)


def cmd_perplexity(args) -> int:
    model = _load(args)
    text = Path(args.file).read_text(encoding="utf-8")
    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm
        bar = tqdm(desc="perplexity", unit="tok", leave=False)

    def progress(done, total, ppl):
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix(ppl=f"{ppl:.3f}")

    try:
        r = model.perplexity(text, window=args.window, stride=args.stride, progress=progress if bar else None)
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps({"file": args.file, **r}, indent=2))
    return 0


def cmd_convert(args) -> int:
    from .loading import open_checkpoint, progress_bar, resolve
    from .packed import PackedModel

    src, dst = resolve(args.src), Path(args.dst)
    if args.type == "tellme-v2":
        return _convert_accel_image(src, dst, args.force)
    to_gguf = dst.suffix.lower() == ".gguf"
    if (args.type or args.pad_ffn) and not to_gguf:
        raise UsageError(f"--{'type' if args.type else 'pad-ffn'} applies to .gguf outputs, not {dst.name}")
    check_output_file(dst, args.force)
    reader = open_checkpoint(src)
    start = time.perf_counter()
    if to_gguf:
        from .formats.gguf_export import write_gguf
        write_gguf(reader, reader.tokenizer, dst, args.type or "tq2_0", progress_bar("converting", True),
                   args.pad_ffn)
    else:
        PackedModel.pack(reader, args.head, args.kernel, progress_bar("converting", True)).save(dst, reader.tokenizer)
    size = dst.stat().st_size
    print(f"wrote {dst}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def _convert_accel_image(src: Path, dst: Path, force: bool) -> int:
    import shutil

    from .accel import image
    from .loading import progress_bar, read_packed
    from .packed import PackedModel

    if dst.exists() and not (force and dst.is_dir()):
        raise UsageError(f"{dst} exists; pass --force to replace the image directory" if dst.is_dir()
                         else f"{dst} exists and is not a directory")
    if not dst.parent.is_dir():
        raise UsageError(f"{dst.parent} does not exist")
    start = time.perf_counter()
    converted = src.is_file() and PackedModel.is_converted_file(src)  # its own head, requantized to int8 rows
    packed, _ = read_packed(src, None if converted else "int8", "i2", progress=False)
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        image.write(packed, tmp, progress=progress_bar("writing image", True))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no partial image left behind
        raise
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    size = sum(f.stat().st_size for f in dst.iterdir())
    print(f"wrote {dst}/: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def check_output_file(dst: Path, force: bool) -> None:
    """Before a long job: refuse to replace a file without --force, or to write where it cannot."""
    if dst.is_dir():
        raise UsageError(f"{dst} is a directory; name the output file")
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; pass --force to overwrite it")
    if not dst.parent.is_dir():
        raise UsageError(f"{dst.parent} does not exist")
    if not os.access(dst.parent, os.W_OK):
        raise UsageError(f"cannot write to {dst.parent}")


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("tellme serve needs the serve extra: pip install 'tellme[serve]'") from None
    from .server import serve
    from .server.models import Registry

    entries = _served_models(args)
    if len(entries) == 1:  # one model: loaded now, so that a bad one stops the server at once
        only = entries[0]
        model = only.load()
        if model.tokenizer is None:
            raise UsageError(f"{only.name} has no tokenizer; the server takes text")
        registry = Registry.of(model, only.name, args.max_batch, args.max_queue)
        what = f"{only.name} ({model.max_sequences} sequences of {model.context} tokens)"
    else:
        budget = int(args.max_memory * 2**30) if args.max_memory else _default_budget()
        registry = Registry(entries, budget, args.max_batch, args.max_queue)
        what = f"{len(entries)} models, loaded on first use within {budget / 2**30:.1f} GiB: " + \
               ", ".join(e.name for e in entries)
    print(f"tellme: serving {what} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    serve(registry, args.host, args.port, args.api_key)
    return 0


def _served_models(args):
    """The models `tellme serve` offers: each -m, every model in --models-dir, or with neither the
    shipped model and every runnable model in the Hugging Face cache."""
    from .loading import resolve
    from .server.models import Entry, files_bytes

    refs = list(args.model or ())
    if args.models_dir:
        d = Path(args.models_dir)
        if not d.is_dir():
            raise UsageError(f"--models-dir {d}: not a directory")
        refs += sorted(str(p) for p in d.iterdir() if p.suffix in (".gguf", ".safetensors") or
                       (p / "config.json").exists())
    if not refs:
        from .hub import cached_models
        refs = ["default"] + [m.id for m in cached_models()]
    if args.name and len(refs) != 1:
        raise UsageError("--name names one model; with several, each is known by its id or file name")
    entries, seen = [], set()
    for ref in refs:
        if args.pull and ref != "default" and not Path(ref).exists():
            from .hub import pull
            pull(ref)
        path = resolve(ref)  # a missing model is reported now, not at its first request
        name = args.name or (ref if ref == "default" or not Path(ref).exists() else Path(ref).resolve().name)
        if name in seen:
            raise UsageError(f"two models would both be called {name!r}")
        seen.add(name)
        entries.append(Entry(name, lambda ref=ref: _load(args, path=ref, pull=False, max_sequences=args.max_batch),
                             files_bytes(path)))  # pulled above
    return entries


def _default_budget() -> int:
    """Three quarters of the memory available now."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        from .model import physical_memory_bytes
        available = physical_memory_bytes()
    return available * 3 // 4


def cmd_pull(args) -> int:
    from .hub import pull
    path = pull(args.ref, args.revision, args.timeout)
    print(f"{args.ref}: ready ({path})")
    return 0


def cmd_list(args) -> int:
    from datetime import datetime

    from .hub import cached_models
    from .loading import hf_cache_dir

    rows = cached_models()
    if not rows:
        print(f"no models tellme can run in {hf_cache_dir()} (`tellme pull REPO` fetches one)")
        return 0

    def size(n: float) -> str:
        return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"

    def count(n: float) -> str:
        return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"

    print(f"{'ID':<48} {'FORMAT':<6} {'SIZE':>10} {'PARAMS':>8} {'WEIGHTS':<14} LAST USED")
    for m in rows:
        print(f"{m.id:<48} {m.format:<6} {size(m.size_bytes):>10} {count(m.parameters):>8} {m.quant or '?':<14} "
              f"{datetime.fromtimestamp(m.last_used):%Y-%m-%d %H:%M}")
    return 0


def cmd_rm(args) -> int:
    from .hub import remove
    freed = remove(args.id)
    print(f"{args.id}: removed ({freed / 2**20:.1f} MB freed)")
    return 0


def cmd_train(args) -> int:
    from . import train
    return train.run(args)


def cmd_bench(args) -> int:
    from .bench import busy, e2e, kernels, load, serve
    return {"kernels": kernels.run, "e2e": e2e.run, "serve": serve.run, "load": load.run,
            "busy": busy.run}[args.what](args)


def cmd_accel(args) -> int:
    from . import cli_accel
    return cli_accel.run(args)


COMMANDS = {"accel": cmd_accel, "info": cmd_info, "generate": cmd_generate, "chat": cmd_chat, "perplexity": cmd_perplexity,
            "convert": cmd_convert, "serve": cmd_serve, "pull": cmd_pull, "list": cmd_list, "rm": cmd_rm, "train": cmd_train, "bench": cmd_bench}


if __name__ == "__main__":
    sys.exit(main())
