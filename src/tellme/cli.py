"""Command line: `tellme ...` / `python -m tellme ...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _model_args(p) -> None:
    p.add_argument("-m", "--model", default="default",
                   help="Hugging Face checkpoint directory, GGUF file, a file written by `tellme convert`, or "
                        "'default' (the small Shakespeare model shipped with tellme; the default)")
    p.add_argument("--threads", type=int, help="native threads (default: physical cores)")
    p.add_argument("--context", type=int, help="KV cache length in tokens (default: the model's)")
    p.add_argument("--head", choices=("int8", "fp32"), default="int8", help="embedding/LM head precision")


def _sampling_args(p) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def _sampling(args) -> dict:
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                repetition_penalty=args.repetition_penalty, seed=args.seed)


def _load(args):
    from .model.model import load
    return load(args.model, threads=args.threads, context=args.context, head=args.head)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tellme", description="Ternary LLM inference on CPUs.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="CPU features, kernel levels and threads; with MODEL, the model too")
    info.add_argument("model", nargs="?", help="a model path, or 'default'")

    gen = sub.add_parser("generate", help="generate text from a prompt")
    _model_args(gen)
    gen.add_argument("prompt", help="prompt text ('-' reads standard input)")
    _sampling_args(gen)
    gen.add_argument("--stats", action="store_true", help="print prefill/decode speed to stderr")
    gen.add_argument("--no-echo", action="store_true", help="print only the generated text, not the prompt first")

    chat = sub.add_parser("chat", help="interactive chat (streams replies; Ctrl-D or Ctrl-C ends)")
    _model_args(chat)
    chat.add_argument("--system", help="system message")
    _sampling_args(chat)
    chat.set_defaults(max_tokens=512)

    ppl = sub.add_parser("perplexity", help="sliding-window perplexity of a text file")
    _model_args(ppl)
    ppl.add_argument("file")
    ppl.add_argument("--window", type=int, help="tokens per window (default: the context)")
    ppl.add_argument("--stride", type=int, help="new tokens per window (default: window / 2)")

    conv = sub.add_parser("convert", help="pack a checkpoint into one ready-to-mmap file, or write it as GGUF")
    conv.add_argument("src", help="Hugging Face checkpoint directory or GGUF file")
    conv.add_argument("dst", help="output file: .safetensors (tellme's packed layout) or .gguf")
    conv.add_argument("--type", choices=("tq2_0", "tq1_0", "i2_s"),
                      help="ternary weight type of a .gguf output (default tq2_0; i2_s is bitnet.cpp's)")
    conv.add_argument("--head", choices=("int8", "fp32"), default="int8", help="LM head of a .safetensors output")
    conv.add_argument("--kernel", choices=("auto", "tlmm", "i2"), default="auto",
                      help="kernel layout of a .safetensors output")

    from . import train
    train.add_arguments(sub.add_parser("train", help="BitNet b1.58 quantization-aware training of a small model "
                                                     "(needs the train extra)"))

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    from .bench import e2e, kernels
    kernels.add_arguments(bench_sub.add_parser("kernels", help="kernel throughput against the machine's limits"))
    e2e.add_arguments(bench_sub.add_parser("e2e", help="prefill/decode speed of whole models"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader went away (`tellme generate ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as e:  # FormatError is a ValueError; messages name the culprit
        print(f"tellme: error: {e}", file=sys.stderr)
        return 1


def cmd_info(args) -> int:
    from .runtime import cpu_info
    out = cpu_info()
    if args.model:
        from .model.model import load
        m = load(args.model, progress=False)
        out["model"] = {"path": args.model, "config": json.loads(m.config.to_json()),
                        "packed_weight_bytes": m.weight_bytes, "head": m.head,
                        "kv_cache_bytes_at_full_context": m._engine.cache_bytes,
                        "tokenizer": m.tokenizer is not None,
                        "chat_template": bool(m.tokenizer and m.tokenizer.chat_template)}
    print(json.dumps(out, indent=2))
    return 0


def cmd_generate(args) -> int:
    model = _load(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not args.no_echo:
        print(prompt, end="", flush=True)
    start, first, count = time.perf_counter(), None, 0
    for piece in model.stream(prompt, args.max_tokens, args.stop, **_sampling(args)):
        if first is None:
            first = time.perf_counter()
        count += 1
        print(piece, end="", flush=True)
    print()
    if args.stats and first is not None:
        end = time.perf_counter()
        print(f"[time to first text {first - start:.3f} s, {count} pieces in {end - start:.2f} s]", file=sys.stderr)
    return 0


def cmd_chat(args) -> int:
    model = _load(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    try:
        while True:
            try:
                user = input("> ")
            except EOFError:
                print()
                return 0
            if not user.strip():
                continue
            messages.append({"role": "user", "content": user})
            reply = []
            for piece in model.chat(messages, args.max_tokens, stream=True, stop=args.stop or None, **_sampling(args)):
                reply.append(piece)
                print(piece, end="", flush=True)
            print()
            messages.append({"role": "assistant", "content": "".join(reply)})
    except KeyboardInterrupt:
        print()
        return 0


def cmd_perplexity(args) -> int:
    model = _load(args)
    text = Path(args.file).read_text(encoding="utf-8")
    r = model.perplexity(text, window=args.window, stride=args.stride)
    print(json.dumps({"file": args.file, **r}, indent=2))
    return 0


def cmd_convert(args) -> int:
    from .formats import packed
    from .model.model import open_checkpoint, progress_bar
    from .model.weights import pack_checkpoint

    src, dst = Path(args.src), Path(args.dst)
    to_gguf = dst.suffix.lower() == ".gguf"
    if args.type and not to_gguf:
        raise ValueError(f"--type applies to .gguf outputs, not {dst.name}")
    ckpt, tokenizer = open_checkpoint(src)
    start = time.perf_counter()
    if to_gguf:
        from .formats.gguf_export import write_gguf
        write_gguf(ckpt, tokenizer, dst, args.type or "tq2_0", progress_bar("converting", True))
    else:
        tensors = pack_checkpoint(ckpt, args.head, args.kernel, progress_bar("converting", True))
        packed.save(dst, ckpt.config, tensors, tokenizer)
    size = dst.stat().st_size
    print(f"wrote {dst}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    from . import train
    return train.run(args)


def cmd_bench(args) -> int:
    from .bench import e2e, kernels
    return {"kernels": kernels.run, "e2e": e2e.run}[args.what](args)


COMMANDS = {"info": cmd_info, "generate": cmd_generate, "chat": cmd_chat, "perplexity": cmd_perplexity,
            "convert": cmd_convert, "train": cmd_train, "bench": cmd_bench}


if __name__ == "__main__":
    sys.exit(main())
