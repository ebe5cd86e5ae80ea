"""Process-wide native settings: the instruction set (ISA) the kernels use, and the thread count.

Both are read once from the environment at import (`TELLME_ISA`, `TELLME_NUM_THREADS`) and can
be changed later with `set_isa` / `set_num_threads`. Threads are "auto" unless set: up to the
physical cores, each parallel loop using the cores other programs leave free (measured every 100
ms), so that a busy machine does not make every loop wait for a descheduled thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import _core
from .errors import UsageError

ISAS = ("avx512", "avx2", "i8mm", "dotprod", "neon", "scalar")  # x86-64 and AArch64 levels, best first


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def set_num_threads(n: int | str) -> None:
    """Threads used by every native kernel: a count, or "auto" (up to the physical cores, as many
    as other programs leave free). Results are identical for any count."""
    if n == "auto":
        _core.set_num_threads(physical_cores())
        _core.set_auto_threads(True)
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"number of threads must be a positive integer or 'auto', got {n!r}")
    _core.set_auto_threads(False)
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The thread count set, or with "auto" the most it uses (the physical cores)."""
    return _core.get_num_threads()


def threads_auto() -> bool:
    return _core.team()[0]


def thread_setting() -> int | str:
    """What set_num_threads was given: "auto" or a count (to restore it after a benchmark)."""
    return "auto" if threads_auto() else get_num_threads()


def set_isa(name: str) -> None:
    """Use ISA `name` (one of ISAS that this machine can run) for every kernel."""
    if name not in ISAS:
        raise UsageError(f"unknown instruction set {name!r}; expected one of {', '.join(ISAS)}")
    _core.set_isa(name)


def get_isa() -> str:
    return _core.get_isa()


def available_isas() -> list[str]:
    """ISAs that can run here, best first (an emulated AVX-512 build included)."""
    return [b["name"] for b in _core.isas() if b["runnable"]]


def cpu_info() -> dict:
    """What the CPU offers, which ISAs the kernels were built for and can run, and what is in use."""
    return {
        "features": _core.cpu_features(),
        "isas": _core.isas(),
        "isa": get_isa(),
        "threads": "auto" if threads_auto() else get_num_threads(),
        "threads_now": _core.team()[1],  # the team a loop would use now
        "others_cores": round(_core.team()[2], 2),  # cores other programs used (auto threads' last look)
        "physical_cores": physical_cores(),
    }


def _configure_from_environment() -> None:
    """Applies TELLME_NUM_THREADS and TELLME_ISA. A bad value is reported and ignored: it must not
    make `import tellme` (and so `tellme --help`) fail."""
    threads, isa = os.environ.get("TELLME_NUM_THREADS"), os.environ.get("TELLME_ISA")
    try:
        set_num_threads(threads if threads == "auto" else int(threads))
    except (TypeError, ValueError):
        if threads:
            _warn(f"TELLME_NUM_THREADS={threads!r} ignored: expected a positive integer or 'auto'")
        set_num_threads("auto")
    if isa:
        try:
            set_isa(isa)
        except ValueError as e:
            _warn(f"TELLME_ISA={isa!r} ignored: {e}; available here: {', '.join(available_isas())}")


def _warn(message: str) -> None:
    import sys
    print(f"tellme: warning: {message}", file=sys.stderr)


_configure_from_environment()
