"""The command line: `tellme info` and `tellme bench kernels` (structure only; no timing asserts)."""

import json
import subprocess
import sys

import tellme


def tellme_cli(*args):
    return subprocess.run([sys.executable, "-m", "tellme", *args], capture_output=True, text=True)


def test_info():
    out = tellme_cli("info")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["isa"] == tellme.get_isa()


def test_bench_kernels_writes_records(tmp_path):
    path = tmp_path / "bench.json"
    out = tellme_cli("bench", "kernels", "--model", "0.73B", "--tokens", "1", "2", "--threads", "1",
                     "--min-time", "0.001", "--json", str(path))
    assert out.returncode == 0, out.stderr
    records = json.loads(path.read_text())
    machine = [r for r in records if r["kind"] == "machine"]
    assert len(machine) == 1 and machine[0]["read_gb_s"] > 0 and machine[0]["int8_peak_gops"] > 0
    kernels = [r for r in records if r["kind"] == "kernel"]
    levels = tellme.runtime.available_isas()
    assert len(kernels) == 3 * 2 * 2 * len(levels)   # shapes x tokens x kernels x levels
    for r in kernels:
        assert {"kernel", "isa", "out", "in", "tokens", "threads", "seconds", "bits_per_weight"} <= set(r)
        assert r["seconds"] > 0
        if r["tokens"] == 1:
            assert r["pct_of_read_bw"] > 0
            # streamed weights exceed 4x the last-level cache
            assert r["weight_bytes"] * r["weight_copies"] > 4 * machine[0]["llc_bytes"]
        else:
            assert r["pct_of_int8_peak"] > 0
    assert {r["kernel"] for r in kernels} == {"tlmm", "i2"}
    assert "% of" in out.stdout


def test_bench_rejects_unavailable_level():
    out = tellme_cli("bench", "kernels", "--isa", "avx512", "--model", "0.73B")
    if "avx512" not in tellme.runtime.available_isas():
        assert out.returncode != 0 and "cannot run here" in out.stderr
