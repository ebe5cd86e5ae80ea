"""`tellme bench serve --constrained`: what a JSON-schema constraint costs a decode step. Each
concurrency runs through the scheduler free and with every request constrained (greedy both),
alternated three times, and the ratio of the best decode rates is the overhead per step. Beside it, the time spent
computing masks per constrained token, and the part of it the step waited for after its forward
pass (the rest was hidden behind the forward pass: constrain.py, scheduler.py).

The synthetic shapes have no tokenizer, so one is trained here: byte-level BPE with Llama 3's
split on this Python's own standard library sources (no download), to the shape's vocabulary
(128,256 for 2B-4T, as Llama 3's: 256 special tokens at the end). The schema is an array of
records (strings, bounded integers, enums, a pattern, nested arrays) long enough that no reply
ends before the run does.
"""

from __future__ import annotations

import json
import pathlib
import sysconfig
import time

from ..runtime import get_isa, set_num_threads

RECORD = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "email": {"type": "string", "pattern": "^[a-z]{1,12}@[a-z]{1,12}\\.(com|org)$"},
    "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 4},
    "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 30},
                                                 "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street", "zip"], "additionalProperties": False},
    "active": {"type": "boolean"}},
    "required": ["name", "age", "email", "tags", "address", "active"], "additionalProperties": False}
SCHEMA = {"type": "array", "items": RECORD, "minItems": 64}
SPECIALS = 256
REPEATS = 3
TEXT_BYTES = 40e6


def train_tokenizer(vocab: int):
    """A byte-level BPE tokenizer of exactly `vocab` tokens, trained on the standard library."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    from ..formats.gguf_tokenizer import LLAMA3_SPLIT
    from ..tokenizer import Tokenizer

    files = sorted(pathlib.Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))

    def texts():
        seen = 0
        for f in files:
            text = f.read_text(encoding="utf-8", errors="replace")
            seen += len(text)
            yield text
            if seen > TEXT_BYTES:
                return

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_{i}|>" for i in range(SPECIALS - 2)]
    tok.train_from_iterator(texts(), trainers.BpeTrainer(vocab_size=vocab - SPECIALS, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(specials)
    if tok.get_vocab_size() != vocab:
        raise RuntimeError(f"the training text gave {tok.get_vocab_size()} tokens, not {vocab}")
    return Tokenizer(tok.to_str(), {"bos_token": specials[0], "eos_token": specials[1]}, "bench tokenizer")


def run(args) -> int:
    from ..constrain import Constraint, compile_grammar
    from .e2e import SHAPES, synthetic_model
    from .kernels import cpu_name
    from .serve import measure

    set_num_threads(args.threads)
    concurrency = args.concurrency if args.concurrency != [1, 2, 4, 8, 16] else [1, 8]
    print(f"machine: {cpu_name()}, {args.threads} threads, ISA {get_isa()}")
    print("decode tokens/s free and with every request held to a JSON schema (greedy); overhead: the constrained "
          "step's extra time; mask: per constrained token, computed / waited for after the forward pass")
    print(f"{'model':>8} {'conc':>4} {'free':>8} {'schema':>8} {'overhead':>9} {'mask':>9} {'waited':>9} "
          f"{'itl p50 free/schema':>20}")
    grammar = compile_grammar(json_schema=SCHEMA)
    records = []
    for name in args.shape:
        start = time.perf_counter()
        tokenizer = train_tokenizer(SHAPES[name]["vocab"])
        model = synthetic_model(name, args.layers, context=args.prompt_tokens + args.decode_tokens + 1,
                                max_sequences=max(concurrency))
        model.tokenizer = tokenizer
        vocabulary = model.vocabulary
        print(f"{name}: tokenizer of {tokenizer.vocab_size} tokens trained and read by llguidance in "
              f"{time.perf_counter() - start:.1f} s")
        measure(model, name, 1, args.prompt_tokens, 4)  # warm-up: page in the weights, start threads
        for c in concurrency:
            runs = {"free": [], "held": []}
            for _ in range(REPEATS):  # alternated, the best of each kept: the machine may be shared
                runs["free"].append(measure(model, name, c, args.prompt_tokens, args.decode_tokens))
                runs["held"].append(measure(model, name, c, args.prompt_tokens, args.decode_tokens,
                                            lambda: Constraint(vocabulary, grammar)))
            free, held = (max(runs[k], key=lambda r: r["decode_tokens_per_s"]) for k in ("free", "held"))
            overhead = free["decode_tokens_per_s"] / held["decode_tokens_per_s"] - 1
            n = max(held["constrained_tokens"], 1)
            r = {"model": name, "concurrency": c, "threads": args.threads, "isa": get_isa(),
                 "vocab": tokenizer.vocab_size, "free": free, "constrained": held, "overhead": overhead,
                 "mask_us_per_token": held["mask_s"] / n * 1e6, "mask_wait_us_per_token": held["mask_wait_s"] / n * 1e6}
            records.append(r)
            print(f"{name:>8} {c:>4} {free['decode_tokens_per_s']:>8.1f} {held['decode_tokens_per_s']:>8.1f} "
                  f"{overhead * 100:>8.1f}% {r['mask_us_per_token']:>7.0f}us {r['mask_wait_us_per_token']:>7.0f}us "
                  f"{free['itl_p50_s'] * 1e3:>9.1f} / {held['itl_p50_s'] * 1e3:.1f} ms")
        del model
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"kind": "machine", "cpu": cpu_name(), "isa": get_isa()}] + records, f, indent=2)
    return 0
