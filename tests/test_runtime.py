"""CPU detection, ISA forcing and thread settings, including from the environment."""

import json
import os
import subprocess
import sys

import pytest

import tellme


def run_python(code, **env):
    """`code` in a fresh interpreter, with no TELLME_* setting of this one's (the suite runs under
    TELLME_ISA=avx2 or scalar too) and the given ones."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TELLME_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env})


def test_cpu_info_reports_detection_and_choice():
    info = tellme.cpu_info()
    assert set(info) >= {"features", "isas", "isa", "threads", "physical_cores"}
    assert info["isa"] in [b["name"] for b in info["isas"] if b["runnable"]]
    assert [b["name"] for b in info["isas"]][-1] == "scalar"
    native = [b["name"] for b in info["isas"] if not b["emulated"]]
    runnable = {b["name"] for b in info["isas"] if b["runnable"] and not b["emulated"]}
    f = info["features"]
    # each level compiled in runs exactly when the CPU (and the OS) report what it needs
    needs = {"avx512": ["avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512vnni"],
             "avx2": ["avx2", "fma", "f16c"], "i8mm": ["neon", "dotprod", "i8mm"], "dotprod": ["neon", "dotprod"], "neon": ["neon"], "scalar": []}
    for level in native:
        assert (level in runnable) == all(f[name] for name in needs[level]), level
    # the default is the best native level
    best = next(b["name"] for b in info["isas"] if b["runnable"] and not b["emulated"])
    assert run_python("import tellme; print(tellme.get_isa())").stdout.strip() == best


def test_default_threads_are_auto_up_to_physical_cores():
    code = "import tellme; i = tellme.cpu_info(); print(tellme.get_num_threads(), i['threads'])"
    for env in ("", "auto"):
        out = run_python(code, TELLME_NUM_THREADS=env)
        assert out.stdout.split() == [str(tellme.runtime.physical_cores()), "auto"], out.stderr


def test_set_num_threads_auto_and_fixed():
    before = tellme.runtime.thread_setting()
    try:
        tellme.set_num_threads("auto")
        assert tellme.runtime.threads_auto() and tellme.cpu_info()["threads"] == "auto"
        assert tellme.get_num_threads() == tellme.runtime.physical_cores()
        tellme.set_num_threads(1)
        assert not tellme.runtime.threads_auto() and tellme.cpu_info()["threads"] == 1
        for bad in ("many", 0, 1.5, True):
            with pytest.raises(tellme.errors.UsageError, match="positive integer or 'auto'"):
                tellme.set_num_threads(bad)
    finally:
        tellme.set_num_threads(before)


def test_environment_forces_isa_and_threads():
    out = run_python("import json, tellme; print(json.dumps([tellme.get_isa(), tellme.get_num_threads()]))",
                     TELLME_ISA="scalar", TELLME_NUM_THREADS="3")
    assert json.loads(out.stdout) == ["scalar", 3]


@pytest.mark.parametrize("env, message", [
    ({"TELLME_ISA": "sse2"}, "TELLME_ISA='sse2'"),
    ({"TELLME_NUM_THREADS": "lots"}, "TELLME_NUM_THREADS='lots'"),
])
def test_bad_environment_is_named_and_ignored(env, message):
    out = run_python("import tellme; print(tellme.get_isa(), tellme.get_num_threads())", **env)
    assert out.returncode == 0 and message in out.stderr and "ignored" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.split() == run_python("import tellme; print(tellme.get_isa(), tellme.get_num_threads())").stdout.split()
    help_ = run_python("from tellme.cli import main; main(['--help'])", **env)
    assert help_.returncode == 0 and "usage: tellme" in help_.stdout
