"""`tellme accel predict | explore | compare | cost`: the TeLLMe v2 accelerator model from the
command line (the model itself is tellme/accel; docs/accel.md)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from .accel import design as ds
from .accel import explore as ex
from .accel import predict as pr
from .errors import UsageError


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="what", required=True)
    boards, models = ", ".join(ds.BOARDS), ", ".join(ds.MODELS)

    def common(q, prompt_default, multi=True):
        q.add_argument("--board", default="kv260", help=f"one of {boards} (default kv260)")
        q.add_argument("--model", default="0.73B", help=f"one of {models}, or a model path (default 0.73B)")
        q.add_argument("--json", metavar="FILE", help="write the result as JSON")
        q.add_argument("--prompt", type=int, nargs="+" if multi else None, default=prompt_default,
                       help="prompt length(s) in tokens")

    q = sub.add_parser("predict", help="TTFT, prefill and decode rates, DDR traffic and resources on a board")
    common(q, [64, 128])
    q.add_argument("--context", type=int, nargs="+", default=[1, 256, 512, 1024], help="decode context(s)")
    for name, kind, what in [("clock", float, "clock in MHz"), ("q", int, "rows per cycle Q"),
                             ("n-pe", int, "RPA PEs N_pe"), ("c-uram", int, "URAMs per index vector (sets T)")]:
        q.add_argument(f"--{name}", type=kind, help=f"what if: {what} (default: the released design's)")
    e = sub.add_parser("explore", help="design points within a board's resources and their Pareto front")
    common(e, 64, multi=False)
    e.add_argument("--context", type=int, default=1, help="decode context of the decode figure (default 1)")
    e.add_argument("--all", action="store_true", help="print every point, not only the Pareto front")
    c = sub.add_parser("compare", help="the board's predicted figures beside tellme measured on this CPU")
    common(c, 64, multi=False)
    c.add_argument("--cpu-watts", type=float, help="this CPU's power while running, for tokens per joule")
    c.add_argument("--threads", type=int, help="tellme threads (default: physical cores)")
    c.add_argument("--decode-tokens", type=int, default=32)
    c.add_argument("--layers", type=int, help="measure a model with fewer layers and scale (quick runs)")
    n = sub.add_parser("cost", help="what the design's approximations cost: perplexity with all, none and each alone")
    n.add_argument("file", help="held-out text")
    n.add_argument("-m", "--model", default="default", help="a model tellme loads, or 0.73B-synthetic (the 0.73B "
                   "shape with random ternary weights and the shipped tokenizer); default: the shipped model")
    n.add_argument("--tokens", type=int, default=1024, help="tokens of FILE to score (default 1024)")
    n.add_argument("--window", type=int, default=128, help="tokens per window, half of them new (default 128)")
    n.add_argument("--layers", type=int, help="with 0.73B-synthetic: fewer layers than 24")
    n.add_argument("--json", metavar="FILE", help="write the result as JSON")


def _model(name: str):
    """(config, weights per group scale or 0, source) of a model of accel's table, or of any model
    tellme loads ('default', a path, a cached model id): only its configuration and first linear
    are read (a converted file is mapped, not read)."""
    if name in ds.MODELS:
        return ds.MODELS[name]
    from .loading import open_checkpoint, resolve
    from .packed import PackedModel
    try:
        path = resolve(name)
    except FileNotFoundError:
        raise UsageError(f"unknown model {name!r}: one of {', '.join(ds.MODELS)}, or a model path") from None
    if path.is_file() and PackedModel.is_converted_file(path):
        packed, _ = PackedModel.open(path)
        return packed.config, packed.linear(0, "q").group, str(path)
    reader = open_checkpoint(path)
    scale = reader.linear(0, "q")[1]
    return reader.config, reader.config.hidden // scale.shape[1] if np.ndim(scale) == 2 else 0, str(path)


def _positive(values, name):
    for v in values:
        if v < 1:
            raise UsageError(f"--{name} takes positive token counts, got {v}")


def _what_if(args) -> ds.Design:
    d = ds.TELLME_V2
    changes = {k: v for k, v in [("clock_mhz", args.clock), ("Q", args.q), ("N_pe", args.n_pe)] if v is not None}
    if args.c_uram is not None:
        changes["c_uram"] = args.c_uram
    for k, v in changes.items():
        if v <= 0:
            raise UsageError(f"{k} must be positive, got {v}")
    if args.c_uram is not None:
        d = d.with_c_uram(args.c_uram)
    return replace(d, **changes) if changes else d


def _tiling(config, tiles: dict[str, int]) -> str:
    return ", ".join(f"{n} into {t} tiles of {ds.ceil_div(config.linear_shape(n)[0], t)} rows"
                     for n, t in tiles.items())


def _write_json(path, obj) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
        print(f"wrote {path}", file=sys.stderr)


def _units_line(units: dict) -> str:
    return ", ".join(f"{n} {u['seconds'] * 1e3:.1f} ms" for n, u in units.items() if u["seconds"] > 0)


def cmd_predict(args) -> int:
    _positive(args.prompt, "prompt")
    _positive(args.context, "context")
    board, (config, group, _) = ds.board(args.board), _model(args.model)
    d = _what_if(args)
    out = pr.predict(config, board, args.prompt, args.context, d, model_name=args.model)
    if group:
        out["notes"] = [f"scales per group of {group}: costed as one scale per linear (a per-group dequantizer "
                        "is not modelled)"]
        print(f"note: {out['notes'][0]}")
    print(f"TeLLMe v2 on {board.name} ({board.part}), {args.model}, {d.clock_mhz:g} MHz, T={d.T} Q={d.Q} "
          f"N_pe={d.N_pe}")
    for r in out["prefill"]:
        print(f"  prompt {r['prompt']:5d}: TTFT {r['ttft_s']:.3f} s, prefill {r['prefill_tokens_per_s']:.1f} tokens/s, "
              f"bound {r['bound']} ({_units_line(r['units'])})" + "".join(f"; {n}" for n in r["notes"]))
    for r in out["decode"]:
        print(f"  context {r['context']:4d}: decode {r['decode_tokens_per_s']:.1f} tokens/s, bound {r['bound']} "
              f"({_units_line(r['units'])})" + "".join(f"; {n}" for n in r["notes"]))
    tiled = {n: t for n, t in out["tiles"].items() if t > 1}
    if tiled:
        print(f"  linears that do not fit the weight buffer run in row tiles: {_tiling(config, tiled)}")
    peak = out["prefill_peak"]
    print(f"  peak prefill {peak['prefill_tokens_per_s']:.1f} tokens/s at {peak['prompt']} tokens")
    t = out["resources"]["total"]
    print(f"  resources: {t['lut']:,} LUT, {t['ff']:,} FF, {t['dsp']} DSP, {t['bram36']} BRAM36, {t['uram']} URAM "
          f"(board: {board.lut:,}, {board.ff:,}, {board.dsp}, {board.bram36:g}, {board.uram})")
    print("  TLMM tables: " + ", ".join(f"{k} {v['lut']:,} LUT" for k, v in out["tlmm_variants"].items()))
    if board.name == "kv260" and args.model == "0.73B" and d == ds.TELLME_V2:
        out["validation"] = pr.validation(config, board)
        print("  against the paper:")
        for r in out["validation"]:
            print(f"    {r['figure']:31s} published {r['published']:>10g}  predicted {r['predicted']:>12.4g}  "
                  f"error {100 * r['error']:+6.1f}%" + ("  (fitted)" if r["fitted"] else ""))
    _write_json(args.json, out)
    return 0


def cmd_explore(args) -> int:
    _positive([args.prompt, args.context], "prompt")
    board, (config, _, _) = ds.board(args.board), _model(args.model)
    r = ex.explore(config, board, args.prompt, args.context)
    rel = r["released"]
    print(f"{args.model} on {board.name}: {sum(p.feasible for p in r['points'])} of {len(r['points'])} design "
          f"points fit; prompt {args.prompt}, decode at context {args.context}")
    tiled = {n: t for n, t in rel.tiles.items() if t > 1}
    print(f"  the released parameters (T=28 Q=16 N_pe=8, 250 MHz): {'fits' if rel.feasible else 'does not fit'}"
          + (f" ({'; '.join(rel.why)})" if rel.why else "")
          + (f", tiling {_tiling(config, tiled)}" if tiled else ", no tiling")
          + f": TTFT {rel.ttft_s:.3f} s, decode {rel.decode_tokens_per_s:.1f} tokens/s")
    reasons: dict[str, int] = {}
    for p in r["points"]:
        for w in p.why:
            key = w.split()[0] if w[0].isupper() else w
            reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        print("  points that do not fit, by what they exceed: " + ", ".join(f"{k} {n}" for k, n in reasons.items())
              + ("" if args.all else " (--all lists them)"))
    shown = r["points"] if args.all else r["front"]
    print(f"  {'all points' if args.all else 'Pareto front (TTFT, decode, LUT)'}:")
    print("    T   Q  N_pe   MHz  c_URAM   TTFT s  decode t/s      LUT  tiles / why")
    for p in sorted(shown, key=lambda p: (not p.feasible, p.ttft_s)):
        d = p.design
        tiles = ",".join(f"{n}x{t}" for n, t in p.tiles.items() if t > 1) or "-"
        print(f"   {d.T:2d} {d.Q:3d} {d.N_pe:5d} {d.clock_mhz:5.0f} {d.c_uram:7d} {p.ttft_s:8.3f} {p.decode_tokens_per_s:11.1f} "
              f"{p.resources['lut']:8,} {tiles if p.feasible else 'infeasible: ' + '; '.join(p.why)}")
    _write_json(args.json, {"board": board.name, "model": args.model, "prompt": args.prompt,
                            "context": args.context, "released": rel.as_dict(),
                            "front": [p.as_dict() for p in r["front"]], "points": [p.as_dict() for p in r["points"]]})
    return 0


def cmd_compare(args) -> int:
    from .bench import accel as bench_accel
    _positive([args.prompt, args.decode_tokens], "prompt")
    if args.cpu_watts is not None and args.cpu_watts <= 0:
        raise UsageError(f"--cpu-watts must be positive, got {args.cpu_watts}")
    rows = bench_accel.compare(args.model, ds.board(args.board), args.prompt, args.decode_tokens, args.threads,
                               args.layers, args.cpu_watts)
    bench_accel.print_table(rows)
    _write_json(args.json, rows)
    return 0


def cmd_cost(args) -> int:
    from .bench import accel as bench_accel
    from .loading import load

    _positive([args.tokens], "tokens")
    if args.window < 2:
        raise UsageError(f"--window must be at least 2 tokens, got {args.window}")
    if args.model == "0.73B-synthetic":
        model = bench_accel.synthetic_073b(args.layers)
    else:
        model = load(args.model, head="int8", progress=False)
    text = Path(args.file).read_text(encoding="utf-8")
    ids = model.encode(text)[:args.tokens]
    if len(ids) < 2:
        raise UsageError(f"{args.file} has fewer than 2 tokens")
    print(f"{args.model}: {len(ids)} tokens of {args.file}, windows of {args.window}")
    print(f"  {'numerics':20s} {'perplexity':>10s} {'vs ideal':>9s} {'KL nats':>9s} {'seconds':>8s}")
    first = []

    def show(r):
        first.append(r["perplexity"])
        print(f"  {r['numerics']:20s} {r['perplexity']:10.3f} {100 * (r['perplexity'] / first[0] - 1):+8.2f}% "
              f"{r['kl_from_ideal']:9.5f} {r['seconds']:8.1f}", flush=True)

    rows = bench_accel.numerics_cost(model, ids, args.window, show)
    _write_json(args.json, {"model": args.model, "file": args.file, "window": args.window, "results": rows})
    return 0


def run(args) -> int:
    return {"predict": cmd_predict, "explore": cmd_explore, "compare": cmd_compare, "cost": cmd_cost}[args.what](args)



