"""`tellme serve` on the shipped model, started on a free loopback port and spoken to by the official
`openai` client (streaming and not) and by raw HTTP for the error cases; a bounded load test; a
client that goes away; SIGTERM that drains."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import tellme

httpx = pytest.importorskip("httpx")    # the test extra's; the sanitizer run has only pytest
openai = pytest.importorskip("openai")
KEY = "test-key"
PROMPTS = ["ROMEO:", "JULIET:\nO Romeo", "First Citizen:\nBefore we proceed", "KING RICHARD III:", "Nurse:",
           "MERCUTIO:\nNay, gentle Romeo", "To be", "BENVOLIO:"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args, env=None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tellme", "serve", "--port", str(port), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env} if env else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server():
    proc, url = start("--api-key", KEY, "--max-batch", "8", "--max-queue", "64")
    yield url
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=60) == 0 and "Traceback" not in proc.stderr.read()  # drained, then a clean exit


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model():
    return tellme.load()


def metric(url, name) -> float:
    """A series' value, summed over its models' labels."""
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]
    assert values, name
    return sum(values)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["default"]
    assert httpx.get(server + "/health").json() == {"status": "ok", "models": {"default": "loaded"}}


def test_completions_match_the_model_run_alone(client, model):
    r = client.completions.create(model="default", prompt="ROMEO:", max_tokens=24, temperature=0)
    want = model.generate("ROMEO:", 24, temperature=0)
    assert r.choices[0].text == want and r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(model.encode("ROMEO:")) and r.usage.completion_tokens == 24
    assert r.choices[0].logprobs is None  # not asked for: not computed
    scored = client.completions.create(model="default", prompt="ROMEO:", max_tokens=24, temperature=0, logprobs=0)
    lps = scored.choices[0].logprobs
    assert len(lps.token_logprobs) == 24 and all(lp <= 0 for lp in lps.token_logprobs)
    assert lps.top_logprobs == [{}] * 24
    streamed = client.completions.create(model="default", prompt="ROMEO:", max_tokens=24, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want
    stop = want[8:12]
    stopped = client.completions.create(model="default", prompt="ROMEO:", max_tokens=24, temperature=0, stop=[stop])
    assert stopped.choices[0].text == want[:want.index(stop)] and stopped.choices[0].finish_reason == "stop"
    seeded = [client.completions.create(model="default", prompt="ROMEO:", max_tokens=16, temperature=0.9, top_p=0.9,
                                        seed=5).choices[0].text for _ in range(2)]
    assert seeded[0] == seeded[1] == model.generate("ROMEO:", 16, temperature=0.9, top_p=0.9, top_k=0, seed=5)


def test_chat_matches_the_model_run_alone(client, model):
    messages = [{"role": "user", "content": "Good morrow, fair Juliet"}]
    want = model.chat(messages, max_tokens=40, temperature=0)
    r = client.chat.completions.create(model="default", messages=messages, max_tokens=40, temperature=0,
                                       logprobs=True, top_logprobs=3)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content == want and c.finish_reason == "stop"
    assert r.usage.completion_tokens == len(c.logprobs.content)
    first = c.logprobs.content[0]
    assert len(first.top_logprobs) == 3 and first.top_logprobs[0].logprob == pytest.approx(first.logprob)
    assert first.logprob <= 0 and [t.logprob for t in first.top_logprobs] == sorted(
        [t.logprob for t in first.top_logprobs], reverse=True)
    chunks = list(client.chat.completions.create(model="default", messages=messages, max_tokens=40, temperature=0,
                                                 stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want
    assert chunks[-1].choices[0].finish_reason == "stop"


def post(url, path, body, key=KEY, raw=None):
    headers = {"content-type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(url + path, content=raw if raw is not None else json.dumps(body), headers=headers, timeout=60)


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope", "prompt": "x"}, 404, "model"),
    ({"model": "default", "prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ({"model": "default", "prompt": "ROMEO: " * 400}, 400, "prompt"),
    ({"model": "default", "prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": "default", "prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"model": "default", "prompt": "x", "n": 0}, 400, "n"),
    ({"model": "default", "prompt": "x", "n": 17}, 400, "n"),
    ({"model": "default", "prompt": "x", "stop": [""]}, 400, "stop"),
    ({"model": "default"}, 400, "prompt"),
])
def test_completion_errors(server, body, status, param):
    r = post(server, "/v1/completions", body)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text


def test_chat_and_transport_errors(server):
    r = post(server, "/v1/chat/completions", {"model": "default", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages")
    r = post(server, "/v1/chat/completions", {"model": "default", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = post(server, "/v1/completions", None, raw=b"{not json")
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = post(server, "/v1/completions", None, raw=b'{"model": "default", "prompt": "' + b"x" * (5 << 20) + b'"}')
    assert r.status_code == 413
    r = post(server, "/v1/completions", {"model": "default", "prompt": "x"}, key=None)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = post(server, "/v1/completions", {"model": "default", "prompt": "x"}, key="wrong")
    assert r.status_code == 401


def test_a_client_that_goes_away_frees_its_sequence(server):
    body = {"model": "default", "prompt": "ROMEO:", "max_tokens": 250, "stream": True, "stop": ["@@@"]}
    cancelled = metric(server, "tellme_requests_cancelled_total")
    with httpx.stream("POST", server + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as r:
        for _ in r.iter_lines():
            break  # one event, then hang up
    deadline = time.time() + 30
    while metric(server, "tellme_running_sequences") or metric(server, "tellme_requests_cancelled_total") == cancelled:
        assert time.time() < deadline
        time.sleep(0.05)


def test_a_waiting_client_that_goes_away_frees_its_sequence(server):
    """Not streaming: the reply would come at the end, but the client hangs up before it."""
    body = json.dumps({"model": "default", "prompt": "ROMEO:", "max_tokens": 250, "stop": ["@@@"]}).encode()
    cancelled = metric(server, "tellme_requests_cancelled_total")
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:  # the request, then hang up at once
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
    deadline = time.time() + 30
    while metric(server, "tellme_running_sequences") or metric(server, "tellme_requests_cancelled_total") == cancelled:
        assert time.time() < deadline
        time.sleep(0.05)


def test_load_many_concurrent_streams(server, client, model):
    """16 streaming clients at once for a bounded time: no errors, every greedy reply as alone, and
    memory that stops growing."""
    expected = {p: model.generate(p, 48, temperature=0) for p in PROMPTS}
    errors, done, rss = [], [0], []
    stop_at = time.time() + float(os.environ.get("TELLME_LOAD_SECONDS", "12"))

    def worker(k):
        i = k
        while time.time() < stop_at:
            p = PROMPTS[i % len(PROMPTS)]
            i += 1
            try:
                s = client.completions.create(model="default", prompt=p, max_tokens=48, temperature=0, stream=True)
                text = "".join(c.choices[0].text for c in s)
                if text != expected[p]:
                    errors.append((p, text))
                done[0] += 1
            except Exception as e:  # every failure is counted
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rss.append(metric(server, "process_resident_memory_bytes"))
        time.sleep(0.5)
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert done[0] >= 16
    steady = rss[len(rss) // 3:]
    assert max(steady) - steady[0] < 32 << 20, [int(x) >> 20 for x in rss]  # MiB
    print(f"{done[0]} replies, RSS {int(rss[0]) >> 20} -> {int(rss[-1]) >> 20} MiB, "
          f"{metric(server, 'tellme_batch_tokens_per_step'):.2f} tokens per step")


def test_sigterm_finishes_open_requests_then_exits():
    proc, url = start()
    body = {"model": "default", "prompt": "ROMEO:", "max_tokens": 200, "stream": True, "stop": ["@@@"]}
    events = []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if not events:
                proc.send_signal(signal.SIGTERM)  # mid-stream
            events.append(line)
    assert events[-2] == "data: [DONE]" or events[-1] == "data: [DONE]"
    assert proc.wait(timeout=60) == 0


def test_a_full_queue_is_refused_with_503():
    proc, url = start("--max-batch", "1", "--max-queue", "0", "--context", "4096")
    try:
        long = {"model": "default", "prompt": "ROMEO:", "max_tokens": 4000, "stream": True, "stop": ["@@@"],
                "temperature": 0}
        with httpx.stream("POST", url + "/v1/completions", json=long, timeout=60) as r:
            lines = r.iter_lines()  # held: dropping the iterator would close the stream
            next(lines)  # the one sequence is busy
            busy = post(url, "/v1/completions", {"model": "default", "prompt": "x"}, key=None)
            assert busy.status_code == 503 and "busy" in busy.json()["error"]["message"]
        deadline = time.time() + 30
        while post(url, "/v1/completions", {"model": "default", "prompt": "x"}, key=None).status_code != 200:
            assert time.time() < deadline  # free again once the stream is gone
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

