"""Several models in one `tellme serve`: listed, picked by a request's `model`, loaded on first
use, and the least recently used unloaded when the memory budget is tight, under concurrent load,
with no failed request, greedy replies equal to each model run alone, and resident memory within
the budget."""

from __future__ import annotations

import signal
import time

import pytest

import tellme
from tests.helpers import failures_in_threads, write_small_gguf
from tests.test_server import KEY, metric, start

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
PROMPTS = ["ROMEO:", "JULIET:\nO Romeo", "Nurse:", "To be"]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    d = tmp_path_factory.mktemp("two")
    tok = tellme.load().tokenizer
    for i, name in enumerate(("alpha", "beta")):
        write_small_gguf(d / f"{name}.gguf", tok, hidden=1024, layers=12, seed=i + 1)
    return d


def test_two_models_interleaved_within_a_tight_budget(two):
    from tellme.server.models import model_bytes

    want, sizes = {}, []
    for name in ("alpha", "beta"):
        m = tellme.load(two / f"{name}.gguf", context=128, max_sequences=4)
        want[name] = {p: m.generate(p, 12, temperature=0) for p in PROMPTS}
        sizes.append(model_bytes(m))
        del m
    budget = int(max(sizes) * 1.2)  # one model fits, two do not
    proc, url = start("-m", two / "alpha.gguf", "-m", two / "beta.gguf", "--max-memory", f"{budget / 2**30:.6f}",
                      "--context", "128", "--max-batch", "4", "--api-key", KEY)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["alpha.gguf", "beta.gguf"]
        assert httpx.get(url + "/health").json()["models"] == {"alpha.gguf": "available", "beta.gguf": "available"}
        for name in ("alpha", "beta"):  # warm: the server's own first-request allocations, one model loaded
            client.completions.create(model=f"{name}.gguf", prompt="x", max_tokens=1)
        baseline = metric(url, "process_resident_memory_bytes")
        rss, stop_at = [], time.time() + 12

        def worker(k):
            i = k
            while time.time() < stop_at:
                name, p = ("alpha", "beta")[i % 2], PROMPTS[i % len(PROMPTS)]
                i += 1
                if i % 3:
                    text = client.completions.create(model=f"{name}.gguf", prompt=p, max_tokens=12,
                                                     temperature=0).choices[0].text
                else:
                    text = "".join(c.choices[0].text for c in client.completions.create(
                        model=f"{name}.gguf", prompt=p, max_tokens=12, temperature=0, stream=True))
                assert text == want[name][p], (name, p, text)
                rss.append(metric(url, "process_resident_memory_bytes"))

        errors = failures_in_threads(worker, 6)
        assert not errors, errors[:3]
        loads, unloads = metric(url, "tellme_model_loads_total"), metric(url, "tellme_model_unloads_total")
        assert unloads >= 1 and loads >= 3, (loads, unloads)  # evicted and loaded again
        grown = max(rss) - baseline
        print(f"budget {budget >> 20} MiB, models {[s >> 20 for s in sizes]} MiB, RSS grew {int(grown) >> 20} MiB, "
              f"{int(loads)} loads, {int(unloads)} unloads")
        assert grown <= budget, (grown, budget)  # and no growth over dozens of loads and unloads
        r = httpx.post(url + "/tokenize", json={"model": "beta.gguf", "content": "ROMEO:"},
                       headers={"Authorization": f"Bearer {KEY}"})
        assert r.json()["tokens"] == tellme.load().encode("ROMEO:", add_special_tokens=False)
        missing = httpx.post(url + "/v1/completions", json={"model": "gamma", "prompt": "x"},
                             headers={"Authorization": f"Bearer {KEY}"})
        assert missing.status_code == 404 and "alpha.gguf" in missing.json()["error"]["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


def test_a_model_over_the_budget_is_refused_clearly(two):
    proc, url = start("-m", two / "alpha.gguf", "-m", "default", "--max-memory", "0.001", "--context", "128")
    try:
        r = httpx.post(url + "/v1/completions", json={"model": "alpha.gguf", "prompt": "x"}, timeout=60)
        assert r.status_code == 503 and "--max-memory" in r.json()["error"]["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


def test_a_models_dir_and_the_cache(two, tmp_path):
    from tests.test_cli import hf_cache

    proc, url = start("--models-dir", two, "--context", "128")
    try:
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["alpha.gguf", "beta.gguf"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    # no -m: the shipped model and every runnable model in the Hugging Face cache
    hf_cache(tmp_path, "someone/tiny", {"tiny.gguf": two / "beta.gguf"})
    hf_cache(tmp_path, "someone/broken", {"config.json": None})
    env = {"HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc, url = start("--context", "128", env=env)
    try:
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["default", "someone/tiny"]
        r = httpx.post(url + "/v1/completions", json={"model": "someone/tiny", "prompt": "ROMEO:", "max_tokens": 4,
                                                       "temperature": 0}, timeout=60)
        want = tellme.load(two / "beta.gguf", context=128).generate("ROMEO:", 4, temperature=0)
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == want
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
