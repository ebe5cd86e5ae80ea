"""Instruction counts of the ARM kernels' innermost loops, read from the cross-compiled objects.

No ARM machine is at hand to time them, so docs/kernels.md gives instructions per weight instead:
    bash tools/test-arm.sh        # builds build/arm-test/wheel-build
    python tools/arm_loops.py     # the loops below, per backend file and function
A loop is a backward branch; only innermost loops that do the kernel's arithmetic are printed.
"""

import collections
import re
import subprocess
import sys
from pathlib import Path

ARITHMETIC = {"smlal", "smlal2", "smull", "smull2", "sdot", "smmla", "tbl"}


def functions(obj: Path) -> dict[str, list[tuple[int, str]]]:
    text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", "-C", str(obj)],
                          capture_output=True, text=True, check=True).stdout
    out, name = {}, None
    for line in text.splitlines():
        if m := re.match(r"^[0-9a-f]+ <(.*)>:$", line):
            name = m.group(1)
            out[name] = []
        elif name and (m := re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)):
            out[name].append((int(m.group(1), 16), m.group(2), m.group(3)))
    return out


def innermost_loops(body):
    index = {addr: i for i, (addr, _, _) in enumerate(body)}
    loops = []
    for i, (addr, op, args) in enumerate(body):
        m = re.search(r"\b([0-9a-f]+) <", args)
        if (op.startswith("b") or op in ("cbz", "cbnz", "tbz", "tbnz")) and m and int(m.group(1), 16) < addr:
            loops.append((index[int(m.group(1), 16)], i))
    return [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]


def main(build: str = "build/arm-test/wheel-build") -> None:
    for obj in sorted(Path(build).glob("**/backend_*.cpp.o")):
        if not any(arch in obj.name for arch in ("neon", "dotprod", "i8mm")):
            continue
        for name, body in functions(obj).items():
            for a, b in innermost_loops(body):
                ops = collections.Counter(op for _, op, _ in body[a:b + 1])
                if ARITHMETIC & set(ops) and "ldrsb" not in ops:  # not the scalar tails
                    mix = ", ".join(f"{n} {op}" for op, n in ops.most_common(8))
                    print(f"{obj.name.removesuffix('.cpp.o')}  {name.replace('(anonymous namespace)::', '').split('(')[0]}: {b - a + 1} instructions ({mix})")


if __name__ == "__main__":
    main(*sys.argv[1:])
