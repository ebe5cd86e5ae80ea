"""llguidance against xgrammar on what constrained decoding costs here: building the tokenizer
view, compiling a schema, and computing one token mask (128,256-token byte-level BPE, the schema of
`tellme bench serve --constrained`). Both walk the same kind of path: at each step a random
allowed token is taken, until the grammar ends or 400 steps. One thread, no model running.

    pip install xgrammar   # not a tellme dependency: it needs torch, transformers and triton
    python tools/mask_libraries.py
"""

from __future__ import annotations

import json
import time

import numpy as np

from tellme.bench.constrained import SCHEMA, train_tokenizer

STEPS = 1500


def walk(new, fill, allowed, consume, rng) -> np.ndarray:
    times, steps = [], 0
    while steps < STEPS:
        m = new()
        for _ in range(400):
            t = time.perf_counter()
            mask = fill(m)
            times.append(time.perf_counter() - t)
            ok = allowed(mask)
            if ok.size == 0:
                break
            token = int(rng.choice(ok))
            if not consume(m, token):
                break
            steps += 1
    return np.array(times)


def bits(mask: np.ndarray, n: int) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little")[:n])


def main() -> None:
    tok = train_tokenizer(128256)
    n, eos = tok.vocab_size, 128001
    rows = []

    import llguidance as llg
    import llguidance.numpy as lnp

    t = time.perf_counter()
    lt = llg.LLTokenizer(tok.json, n_vocab=n, eos_token=eos)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    grammar = llg.LLMatcher.grammar_from_json_schema(SCHEMA, defaults={"whitespace_flexible": False})
    llg.LLMatcher(lt, grammar)
    compile_s = time.perf_counter() - t
    buf = lnp.allocate_token_bitmask(1, n)

    def fill(m):
        lnp.fill_next_token_bitmask(m, buf)
        return buf[0]
    ts = walk(lambda: llg.LLMatcher(lt, grammar, log_level=0), fill, lambda b: bits(b, n),
              lambda m, tk: tk != eos and m.consume_token(tk), np.random.default_rng(0))
    rows.append(("llguidance", setup, compile_s, ts))

    try:
        import torch
        import xgrammar as xgr
        from transformers import PreTrainedTokenizerFast
    except ImportError as e:
        print(f"xgrammar not measured: {e}")
    else:
        hf = PreTrainedTokenizerFast(tokenizer_object=tok._tok, eos_token="<|end_of_text|>")
        t = time.perf_counter()
        info = xgr.TokenizerInfo.from_huggingface(hf, vocab_size=n)
        compiler = xgr.GrammarCompiler(info, max_threads=1)
        setup = time.perf_counter() - t
        t = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
        compile_s = time.perf_counter() - t
        xbuf = xgr.allocate_token_bitmask(1, n)

        def xfill(m):
            m.fill_next_token_bitmask(xbuf)
            return xbuf[0].numpy()
        ts = walk(lambda: xgr.GrammarMatcher(compiled), xfill, lambda b: bits(b, n),
                  lambda m, tk: tk != eos and m.accept_token(tk), np.random.default_rng(0))
        rows.append(("xgrammar", setup, compile_s, ts))
        del torch

    print(f"{'library':>11} {'tokenizer':>10} {'compile':>9} {'mask mean':>10} {'p50':>7} {'p99':>8} {'max':>8}")
    for name, setup, compile_s, ts in rows:
        print(f"{name:>11} {setup:>9.2f}s {compile_s * 1e3:>7.1f}ms {ts.mean() * 1e6:>8.0f}us "
              f"{np.median(ts) * 1e6:>5.0f}us {np.percentile(ts, 99) * 1e6:>6.0f}us {ts.max() * 1e6:>6.0f}us")


if __name__ == "__main__":
    main()
