"""The command line on the shipped model (no torch): info, bench kernels (structure only; no timing
asserts), generate, chat, convert, train, model ids from the Hugging Face cache."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

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
    isas = tellme.runtime.available_isas()
    assert len(kernels) == 3 * 2 * 2 * len(isas)   # shapes x tokens x kernels x ISAs
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


def test_bench_rejects_an_unavailable_isa():
    out = tellme_cli("bench", "kernels", "--isa", "avx512", "--model", "0.73B")
    if "avx512" not in tellme.runtime.available_isas():
        assert out.returncode != 0 and "cannot run here" in out.stderr


# ---- generate, chat, convert, train on the shipped model (no torch needed) ----

def run(*args, stdin=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "tellme", *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=timeout, env={**os.environ, **(env or {})})


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"tellme {tellme.__version__}"


def test_stats_and_a_printed_random_seed():
    out = run("generate", "ROMEO:", "-n", "12", "--seed", "-1", "--stats")
    assert out.returncode == 0, out.stderr
    seed = int(re.search(r"seed: (\d+)", out.stderr).group(1))
    stats = re.search(r"\[load ([\d.]+) s \| prompt (\d+) tokens \(0 cached\), prefill ([\d.]+) tokens/s \| "
                      r"generated (\d+) tokens, decode ([\d.]+) tokens/s\]", out.stderr)
    assert stats, out.stderr
    assert float(stats[1]) > 0 and int(stats[2]) >= 2 and float(stats[3]) > 0 and 1 <= int(stats[4]) <= 12
    again = run("generate", "ROMEO:", "-n", "12", "--seed", seed)
    assert again.stdout == out.stdout and "seed:" not in again.stderr


def test_sampling_arguments_are_checked_before_anything_is_printed():
    for bad, word, status in ((["--top-p", "0"], "top_p", 1), (["--min-p", "2"], "min_p", 1),
                              (["--temperature", "-1"], "temperature", 1), (["--stop", ""], "--stop", 1),
                              (["-n", "-1"], "max-tokens", 2), (["--context", "0"], "context", 2),
                              (["--kv", "q4"], "--kv", 2)):  # 2: argparse's
        out = run("generate", "ROMEO:", *bad)
        assert out.returncode == status and out.stdout == "" and word in out.stderr and "Traceback" not in out.stderr


def test_kv_cache_format_on_the_command_line():
    """--kv q8 generates (greedy: the shipped model's first tokens hardly move); --numerics other
    than native keeps its own fp16 cache and says so."""
    out = run("generate", "ROMEO:", "-n", "8", "--temperature", "0", "--kv", "q8")
    assert out.returncode == 0 and out.stdout.startswith("ROMEO:"), out.stderr
    out = run("generate", "ROMEO:", "-n", "2", "--kv", "q8", "--numerics", "tellme-v2")
    assert out.returncode == 1 and "needs numerics='native'" in out.stderr


def test_generation_says_when_the_context_is_full():
    out = run("generate", "ROMEO:", "-n", "500", "--context", "24", "--temperature", "0", "--stop", "@@@")
    assert out.returncode == 0, out.stderr
    assert "the context of 24 tokens is full" in out.stderr
    assert "is full" not in run("generate", "ROMEO:", "-n", "4", "--temperature", "0").stderr


def test_chat_drops_the_oldest_turns_when_the_context_fills():
    lines = "".join(f"Good morrow, sweet friend number {i}\n" for i in range(12))
    out = run("chat", "--context", "96", "-n", "24", "--temperature", "0", stdin=lines)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("> ") == 13  # every message answered, then end of input
    assert "oldest" in out.stderr and "dropped" in out.stderr


def test_chat_without_a_template_says_so_first(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tellme.default_model_path(), model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    out = run("chat", "-m", model, stdin="Hello\n")
    assert out.returncode == 1 and "no chat template" in out.stderr and "tellme generate" in out.stderr
    assert "> " not in out.stdout


def test_chat_ctrl_c_stops_the_reply_and_keeps_the_session():
    proc = subprocess.Popen([sys.executable, "-m", "tellme", "chat", "--context", "4096", "-n", "4000", "--stop", "@@@",
                             "--seed", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120

    def read_until(marker):
        seen = ""
        while not seen.endswith(marker):
            assert time.time() < deadline and proc.poll() is None, seen
            seen += proc.stdout.read(1)
        return seen

    read_until("> ")
    for line in ("Good morrow\n", "Farewell\n"):
        proc.stdin.write(line)
        proc.stdin.flush()
        proc.stdout.read(1)  # the reply has begun
        proc.send_signal(signal.SIGINT)
        assert read_until("> ").endswith("[stopped]\n> ")  # the reply ended, the session goes on
    proc.stdin.close()  # Ctrl-D
    assert proc.wait(timeout=60) == 0 and "Traceback" not in proc.stderr.read()


def hf_cache(root, repo, files):
    """A Hugging Face hub cache holding one snapshot of `repo` (as `hf download` leaves it)."""
    base = root / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = base / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abcd")
    for name, src in files.items():
        shutil.copy(src, snapshot / name) if src else (snapshot / name).write_bytes(b"")
    return snapshot


def test_model_ids_resolve_from_the_local_hugging_face_cache(tmp_path):
    shipped = tellme.default_model_path()
    hf_cache(tmp_path, "someone/shakespeare", {p.name: p for p in shipped.iterdir()})
    env = {"HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")}
    ours = run("generate", "-m", "someone/shakespeare", "ROMEO:", "-n", "8", "--temperature", "0", env=env)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == run("generate", "ROMEO:", "-n", "8", "--temperature", "0").stdout
    absent = run("generate", "-m", "someone/absent", "hi", env=env)
    assert absent.returncode == 1 and "not in the Hugging Face cache" in absent.stderr
    assert "tellme pull" in absent.stderr and "Traceback" not in absent.stderr
    hf_cache(tmp_path, "someone/two-ggufs", {"a.gguf": None, "b.gguf": None})
    two = run("generate", "-m", "someone/two-ggufs", "hi", env=env)
    assert two.returncode == 1 and "several GGUF files" in two.stderr


def test_convert_takes_default_too(tmp_path):
    out = run("convert", "default", tmp_path / "d.safetensors")
    assert out.returncode == 0, out.stderr
    ours = run("generate", "-m", tmp_path / "d.safetensors", "ROMEO:", "-n", "8", "--temperature", "0")
    assert ours.stdout == run("generate", "ROMEO:", "-n", "8", "--temperature", "0").stdout


def test_train_names_what_it_needs():
    out = run("train")
    assert out.returncode == 2 and "required: text" in out.stderr


def test_bench_e2e_at_depths_writes_records(tmp_path):
    """--depth: prefill and decode at each depth, with attention's shares of the machine's limits."""
    path = tmp_path / "depth.json"
    out = run("bench", "e2e", "--depth", "0", "150", "--shape", "0.73B", "--layers", "1", "--threads", "1",
              "--decode-tokens", "3", "--kv", "q8", "--json", path)
    assert out.returncode == 0, out.stderr
    recs = [r for r in json.loads(path.read_text()) if r.get("kind") != "machine"]
    assert [(r["depth"], r["kv"]) for r in recs] == [(0, "q8"), (150, "q8")]
    assert "prefill_tokens_per_s" not in recs[0] and recs[1]["prefill_tokens_per_s"] > 0
    for r in recs:
        assert r["decode_tokens_per_s"] > 0 and r["read_bw_gb_s"] > 0 and r["fp32_peak_gflops"] > 0
    assert recs[1]["decode_attention_pct_of_read_bw"] > 0 and recs[1]["prefill_attention_pct_of_fp32_peak"] > 0
    assert run("bench", "e2e", "--depth", "-1").returncode != 0


def test_bench_serve_writes_records(tmp_path):
    path = tmp_path / "serve.json"
    out = run("bench", "serve", "--shape", "0.73B", "--layers", "1", "--concurrency", "1", "3", "--decode-tokens", "6",
              "--threads", "1", "--json", path)
    assert out.returncode == 0, out.stderr
    recs = [r for r in json.loads(path.read_text()) if r.get("kind") != "machine"]
    assert [r["concurrency"] for r in recs] == [1, 3]
    for r in recs:
        assert r["tokens"] == 6 * r["concurrency"] and r["tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert 0 < r["ttft_p50_s"] <= r["ttft_p99_s"] and 0 < r["itl_p50_s"] <= r["itl_p99_s"]
    assert recs[0]["decode_vs_single_stream"] == 1.0
    # the machine's bound: no more than c times one stream's, never below it
    # (c / s_c) / (1 / s_1) with s_c >= s_1: at most c, up to the rounding of the division
    assert recs[0]["bound_vs_single_stream"] == 1.0 and 1.0 <= recs[1]["bound_vs_single_stream"] <= 3.0 * (1 + 1e-12)
    assert all(r["decode_bound_tokens_per_s"] > 0 and r["read_gb_s"] > 0 and r["int8_peak_gops"] > 0 for r in recs)


def test_bench_load_writes_records(tmp_path):
    path = tmp_path / "load.json"
    out = run("bench", "load", "--shape", "0.73B", "--layers", "1", "--vocab", "512", "--repeats", "1",
              "--dir", tmp_path / "models", "--json", path)
    assert out.returncode == 0, out.stderr
    recs = [r for r in json.loads(path.read_text()) if r.get("kind") != "machine"]
    assert sorted({r["format"] for r in recs}) == sorted(["converted", "hf", "i2_s", "i2_s-bf16", "i2_s-f32", "tq1_0",
                                                          "tq2_0", "tq2_0-bf16"])
    assert {r["cache"] for r in recs} == {"warm", "cold"}
    for r in recs:
        assert r["load_s_median"] > 0 and r["peak_rss_bytes"] > 0 and r["first_forward_s_median"] > 0
        assert r["file_bytes"] > 0 and r["packed_bytes"] > 0
    i2s = next(r for r in recs if r["format"] == "i2_s")
    assert "in place (I2_S, memory-mapped)" in i2s["load_paths"]["linear"]
    tq1 = next(r for r in recs if r["format"] == "tq1_0")
    assert any("decoded (TQ1_0 trits to codes)" in how for how in tq1["load_paths"]["linear"])


def test_bench_serve_constrained_writes_records(tmp_path):
    path = tmp_path / "constrained.json"
    out = run("bench", "serve", "--constrained", "--shape", "0.73B", "--layers", "1", "--concurrency", "2",
              "--decode-tokens", "6", "--threads", "1", "--json", path)
    assert out.returncode == 0, out.stderr
    [rec] = [r for r in json.loads(path.read_text()) if r.get("kind") != "machine"]
    assert rec["vocab"] == 32002 and rec["concurrency"] == 2
    held = rec["constrained"]
    assert held["tokens"] == rec["free"]["tokens"] == 12  # the schema is long: no reply ends early
    assert held["constrained_tokens"] == 12 and held["mask_s"] > 0 and held["mask_wait_s"] >= 0
    assert rec["overhead"] == pytest.approx(rec["free"]["decode_tokens_per_s"] / held["decode_tokens_per_s"] - 1)


def test_generate_constrained_on_the_command_line(tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
                                                                         "maximum": 9}},
                                  "required": ["n"], "additionalProperties": False}))
    out = run("generate", "ROMEO:", "--json-schema", schema, "--no-echo", "--temperature", "1.5", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] in range(10)
    out = run("generate", "ROMEO:", "--regex", "(yes|no), my lord", "--no-echo")
    assert out.returncode == 0 and out.stdout.strip() in ("yes, my lord", "no, my lord")
    schema.write_text('{"not": {}}')
    out = run("generate", "ROMEO:", "--json-schema", schema)
    assert out.returncode == 1 and "Unimplemented keys" in out.stderr and "Traceback" not in out.stderr
    out = run("generate", "ROMEO:", "--grammar", tmp_path / "missing.lark")
    assert out.returncode == 1 and "cannot read it" in out.stderr
