"""`tellme bench e2e --against llama.cpp`: the TQ2_0 file tellme writes runs in the real llama.cpp
(llama-cpp-python, built from source by the test extra) and gives tellme's logits; the side-by-side
timing alternates the engines and reports ratios of medians; a busy machine is refused."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tellme.bench import against
from tellme.errors import UsageError


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("against") / "small.gguf"
    against.write_synthetic_gguf("0.73B", path, layers=2)
    return path


def test_llama_cpp_runs_the_file_tellme_wrote(gguf):
    """Same file, same tokens: llama.cpp (Q8_K activation blocks) and tellme (int8 per token) agree
    up to activation rounding, and pick the same next tokens."""
    tokens = np.random.default_rng(0).integers(0, 32002, size=24, dtype=np.int32)
    mine, theirs = against.TellmeRunner(str(gguf)), against.LlamaRunner(str(gguf))
    assert "llama.cpp" in theirs.describe()
    for n in (1, 7, 24):
        a, b = mine.logits(tokens[:n]), theirs.logits(tokens[:n])
        assert a.shape == b.shape == (32002,)
        cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert cos > 0.995, (n, cos)
        assert np.argmax(a) == np.argmax(b)
    # and the greedy continuations, one token per eval, stay together
    ta, tb = mine.next_token(tokens, 0), theirs.next_token(tokens, 0)
    for i in range(8):
        assert ta == tb, i
        ta = mine.next_token(np.array([ta], np.int32), 24 + i)
        tb = theirs.next_token(np.array([tb], np.int32), 24 + i)


def test_compare_alternates_and_reports_ratios(gguf):
    records = against.compare(gguf, "0.73B", 32002, threads=[1, 2], repeats=2, decode_tokens=3,
                              allow_busy=True, log=lambda *_: None)
    assert [(r["threads"], r["phase"]) for r in records] == [
        (1, "prefill_128"), (1, "decode"), (2, "prefill_128"), (2, "decode")]
    for r in records:
        for e in ("tellme", "llama_cpp"):
            lo, hi = r[f"{e}_range"]
            assert 0 < lo <= r[f"{e}_tokens_per_s"] <= hi
        assert r["ratio"] == pytest.approx(r["tellme_tokens_per_s"] / r["llama_cpp_tokens_per_s"])


def test_compare_at_depths(gguf):
    """--depth: a prompt of D tokens, then decode after it (past the default context), with tellme's q8 cache."""
    records = against.compare(gguf, "0.73B", 32002, threads=[1], repeats=1, decode_tokens=2, allow_busy=True,
                              log=lambda *_: None, depths=[0, 600], kv="q8")
    assert [r["phase"] for r in records] == ["decode_0", "prefill_600", "decode_600"]
    assert "q8 KV cache" in records[0]["engines"]["tellme"]
    assert all(r["tellme_tokens_per_s"] > 0 and r["llama_cpp_tokens_per_s"] > 0 for r in records)


def test_busy_machine_is_measured():
    """Others' cores = (the machine's busy seconds - our own) / wall seconds, from exact sources: a
    test that no other load on the machine can change."""
    now = {"wall": 0.0, "machine": 100.0, "own": 5.0}
    meter = against.BusyMeter([], clock=lambda: now["wall"], machine=lambda: now["machine"], own=lambda: now["own"])
    now.update(wall=2.0, machine=103.0, own=6.0)   # 3 busy seconds in 2, one of them ours
    assert meter.others_cores() == pytest.approx(1.0)
    meter.reset()
    now.update(wall=3.0, machine=104.0, own=7.0)   # all of it ours
    assert meter.others_cores() == 0.0
    assert against.BusyMeter([], machine=lambda: None).others_cores() is None  # no /proc/stat


def test_machine_busy_seconds_count_our_own_work():
    """/proc/stat is read right: our own spinning shows in it (others' work can only add to it)."""
    before = against.machine_busy_s()
    if before is None:
        pytest.skip("no /proc/stat")
    start = time.process_time()
    while time.process_time() - start < 0.5:
        pass
    assert against.machine_busy_s() - before >= 0.4


def test_cli_prints_and_writes_json(tmp_path):
    out = tmp_path / "against.json"
    p = subprocess.run([sys.executable, "-m", "tellme", "bench", "e2e", "--against", "llama.cpp", "--shape", "0.73B",
                        "--layers", "1", "--threads", "1", "--repeats", "1", "--decode-tokens", "2", "--allow-busy",
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "llama.cpp" in p.stdout and "ratio" in p.stdout
    records = json.loads(out.read_text())
    assert records[0]["kind"] == "machine" and "llama.cpp" in records[0]["engines"]["llama.cpp"]
    assert {r["phase"] for r in records[1:]} == {"prefill_128", "decode"}


def test_refusals():
    def args(**fields):
        return type("A", (), {**dict(model=None, repeats=3, decode_tokens=8, threads=[1, 2], depth=None, kv="f16"),
                              **fields})()

    with pytest.raises(UsageError, match="takes no --model"):
        against.run(args(model="x.gguf"))
    for bad in (dict(repeats=0), dict(decode_tokens=0), dict(threads=[2, 0])):
        with pytest.raises(UsageError, match="must be at least 1"):
            against.run(args(**bad))
    with pytest.raises(UsageError, match=r"busy: other processes used 0.50 cores on average while x"):
        against.refuse_if_busy(0.5, False, "while x")
    against.refuse_if_busy(0.5, True, "while x")   # --allow-busy
    against.refuse_if_busy(None, False, "while x")  # no /proc/stat: nothing to judge by
    against.refuse_if_busy(against.BUSY_LIMIT, False, "while x")
    with pytest.raises(UsageError, match="embedding type"):
        from tellme.formats.gguf_export import write_gguf
        write_gguf(None, None, "x.gguf", "tq2_0", embedding_type="q4_0")
