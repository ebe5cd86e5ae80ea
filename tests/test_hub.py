"""`tellme pull`, `list`, `rm` and `-m ID --pull` against a fake Hub on 127.0.0.1 (tests/fakehub.py),
through huggingface_hub as users run it: the right files, resumed after an interruption, checksums
verified, clear errors for 404, 401, a Hub that hangs, and a model tellme cannot run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tellme
from tests.fakehub import FakeHub
from tests.helpers import write_small_gguf

SHIPPED = tellme.default_model_path()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    tok = tellme.load().tokenizer
    out = {}
    for kind in ("tq2_0", "tq1_0"):
        write_small_gguf(d / f"m-{kind.upper()}.gguf", tok, kind=kind)
        out[kind] = (d / f"m-{kind.upper()}.gguf").read_bytes()
    return out


@pytest.fixture()
def hub(files):
    h = FakeHub()
    h.add("org/tiny-gguf", {"m-TQ2_0.gguf": files["tq2_0"], "m-TQ1_0.gguf": files["tq1_0"], "README.md": b"# tiny"},
          revisions={"v1": {"m-TQ2_0.gguf": files["tq1_0"]}})  # a branch whose one file differs
    h.add("org/shakespeare", {**{p.name: p.read_bytes() for p in SHIPPED.iterdir() if p.is_file()},
                              "README.md": b"# a model card", "training_args.bin": b"\0" * 100})
    h.add("org/private", {"m.gguf": files["tq2_0"]}, private=True)
    h.add("org/not-a-model", {"m.gguf": b"GGUF" + b"\0" * 64})
    yield h
    h.close()


def tellme_cmd(hub, home, *args, timeout=120, **env):
    e = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(home), **env}
    if "HF_TOKEN" not in env:
        e.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "tellme", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


def downloaded(hub) -> set[str]:
    return {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p}


def test_a_gguf_repo_with_several_files(hub, tmp_path):
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf")
    assert out.returncode == 1 and "several GGUF files" in out.stderr
    assert "m-TQ1_0.gguf" in out.stderr and "m-TQ2_0.gguf" in out.stderr and "Traceback" not in out.stderr
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf:tq1_0")
    assert out.returncode == 0, out.stderr
    assert downloaded(hub) == {"m-TQ1_0.gguf"}  # that file only
    listed = tellme_cmd(hub, tmp_path, "list")
    assert "org/tiny-gguf" in listed.stdout and "TQ1_0" in listed.stdout and "gguf" in listed.stdout
    # offline from the cache: no request reaches the Hub
    before = len(hub.requests)
    gen = tellme_cmd(hub, tmp_path, "generate", "-m", "org/tiny-gguf:TQ1_0", "ROMEO:", "-n", "4",
                     HF_HUB_OFFLINE="1")
    assert gen.returncode == 0, gen.stderr
    assert len(hub.requests) == before
    out = tellme_cmd(hub, tmp_path, "rm", "org/tiny-gguf")
    assert out.returncode == 0 and "removed" in out.stdout
    assert "org/tiny-gguf" not in tellme_cmd(hub, tmp_path, "list").stdout
    assert tellme_cmd(hub, tmp_path, "rm", "org/tiny-gguf").returncode == 1


def test_a_safetensors_repo_and_pull_on_use(hub, tmp_path):
    gen = tellme_cmd(hub, tmp_path, "generate", "-m", "org/shakespeare", "--pull", "ROMEO:", "-n", "8",
                     "--temperature", "0", "--no-echo")
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout == tellme_cmd(hub, tmp_path, "generate", "ROMEO:", "-n", "8", "--temperature", "0",
                                    "--no-echo").stdout
    assert downloaded(hub) == {p.name for p in SHIPPED.iterdir() if p.is_file()}  # no README.md, no .bin
    listed = tellme_cmd(hub, tmp_path, "list").stdout
    assert "org/shakespeare" in listed and " hf " in listed


def test_an_interrupted_download_resumes(hub, tmp_path):
    hub.slow[("org/tiny-gguf", "m-TQ2_0.gguf")] = 200_000  # bytes a second
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tellme", "pull", "org/tiny-gguf:TQ2_0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = None
    deadline = time.time() + 60
    while partial is None or partial.stat().st_size < 100_000:
        assert time.time() < deadline and proc.poll() is None
        partial = next(Path(tmp_path).rglob("*.tellme-partial"), None)
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(timeout=30) == 130 and "Traceback" not in proc.stderr.read()
    kept = partial.stat().st_size
    del hub.slow[("org/tiny-gguf", "m-TQ2_0.gguf")]
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf:TQ2_0")
    assert out.returncode == 0, out.stderr
    resumed = [r for m, p, r in hub.requests if m == "GET" and p.endswith("m-TQ2_0.gguf")][-1]
    assert resumed is not None and int(resumed[6:].split("-")[0]) >= kept > 0, hub.requests  # bytes=N-: the rest only
    assert tellme_cmd(hub, tmp_path, "generate", "-m", "org/tiny-gguf:TQ2_0", "hi", "-n", "2").returncode == 0


def test_a_corrupted_file_is_refused_and_removed(hub, tmp_path):
    hub.corrupt.add(("org/tiny-gguf", "m-TQ2_0.gguf"))
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf:TQ2_0")
    assert out.returncode == 1 and "do not match the Hub's checksum" in out.stderr and "Traceback" not in out.stderr
    assert not list(Path(tmp_path).rglob("m-TQ2_0.gguf"))
    hub.corrupt.clear()
    assert tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf:TQ2_0").returncode == 0


def test_hub_errors_are_clear(hub, tmp_path):
    out = tellme_cmd(hub, tmp_path, "pull", "org/absent")
    assert out.returncode == 1 and "org/absent was not found" in out.stderr and "Traceback" not in out.stderr
    out = tellme_cmd(hub, tmp_path, "pull", "org/private")
    assert out.returncode == 1 and "HF_TOKEN" in out.stderr and "Traceback" not in out.stderr
    out = tellme_cmd(hub, tmp_path, "pull", "org/private", HF_TOKEN=hub.token)
    assert out.returncode == 0, out.stderr
    out = tellme_cmd(hub, tmp_path, "pull", "org/not-a-model")
    assert out.returncode == 1 and "tellme cannot run it" in out.stderr and "Traceback" not in out.stderr
    out = tellme_cmd(hub, tmp_path, "pull", "not-an-id")
    assert out.returncode == 1 and "owner/name" in out.stderr
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf:TQ2_0", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert out.returncode == 1 and "cannot reach" in out.stderr and "Traceback" not in out.stderr
    hub.hang = True
    start = time.time()
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf:TQ2_0", "--timeout", "2")
    assert out.returncode == 1 and "did not answer within 2 s" in out.stderr and "Traceback" not in out.stderr
    assert time.time() - start < 40


def test_a_revision(hub, tmp_path, files):
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf", "--revision", "v1")
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.split("(")[-1].rstrip(")\n"))
    assert path.read_bytes() == files["tq1_0"] and "/resolve/v1/" in [p for m, p, _ in hub.requests if m == "GET"][-1]
    out = tellme_cmd(hub, tmp_path, "pull", "org/tiny-gguf", "--revision", "nope")
    assert out.returncode == 1 and "no such revision" in out.stderr and "Traceback" not in out.stderr
