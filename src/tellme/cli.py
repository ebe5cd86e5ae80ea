"""Command line: `tellme ...` / `python -m tellme ...`."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tellme", description="Ternary LLM inference on CPUs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show CPU features, kernel levels and threads")
    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    from .bench.kernels import add_arguments
    add_arguments(bench_sub.add_parser("kernels", help="kernel throughput against the machine's limits"))
    args = parser.parse_args(argv)

    if args.command == "info":
        from .runtime import cpu_info
        print(json.dumps(cpu_info(), indent=2))
        return 0
    if args.command == "bench" and args.what == "kernels":
        from .bench.kernels import run
        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
