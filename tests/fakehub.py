"""A stand-in for the Hugging Face Hub on 127.0.0.1, for `tellme pull` tests (HF_ENDPOINT points
at it). It serves what huggingface_hub asks for: model info with file sizes and checksums
(`/api/models/{repo}[/revision/{rev}]?blobs=true`) and files (`HEAD`/`GET
/{repo}/resolve/{rev}/{file}`, with range requests for resuming). Faults on demand: a private repo
(401 without the token), a corrupted file, a slow file (to interrupt), a Hub that hangs."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, token: str = "hf_test_token"):
        self.repos: dict[str, dict] = {}
        self.token = token
        self.requests: list[tuple[str, str, str | None]] = []   # (method, path, Range header)
        self.corrupt: set[tuple[str, str]] = set()
        self.slow: dict[tuple[str, str], float] = {}           # bytes per second
        self.hang = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, repo: str, files: dict[str, bytes], private: bool = False, revisions=None) -> None:
        """`files` at main; `revisions` maps other branch names to their files."""
        revs = {}
        for name, fs in {"main": files, **(revisions or {})}.items():
            sha = hashlib.sha1(repo.encode() + name.encode() + b"".join(sorted(fs.values()))).hexdigest()
            revs[name] = revs[sha] = {"sha": sha, "files": fs}
        self.repos[repo] = {"private": private, "revisions": revs}

    def close(self) -> None:
        self._server.shutdown()

    @staticmethod
    def lfs(name: str) -> bool:
        return name.endswith((".gguf", ".safetensors"))

    def sibling(self, name: str, data: bytes) -> dict:
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        s = {"rfilename": name, "size": len(data), "blobId": blob}
        if self.lfs(name):
            s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return s

    def _handler(hub):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _error(self, status, code, message):
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _repo(self, repo):
                r = hub.repos.get(repo)
                if r is None:
                    self._error(404, "RepoNotFound", "Repository not found")
                elif r["private"] and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._error(401, "RepoNotFound", "Invalid credentials in Authorization header")
                else:
                    return r
                return None

            def _revision(self, repo, rev):
                r = repo["revisions"].get(rev)
                if r is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return r

            def do_GET(self):
                self._serve(body=True)

            def do_HEAD(self):
                self._serve(body=False)

            def _serve(self, body):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                if hub.hang:
                    time.sleep(60)
                    return
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:
                    repo = "/".join(parts[2:4])
                    r = self._repo(repo) and self._revision(self._repo(repo), parts[5] if len(parts) > 5 else "main")
                    if r is None:
                        return
                    info = {"id": repo, "modelId": repo, "sha": r["sha"], "private": hub.repos[repo]["private"],
                            "siblings": [hub.sibling(n, d) for n, d in sorted(r["files"].items())]}
                    data = json.dumps(info).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                    r = self._repo(repo) and self._revision(self._repo(repo), parts[3])
                    if r is None:
                        return
                    if name not in r["files"]:
                        self._error(404, "EntryNotFound", f"{name} does not exist")
                        return
                    data = r["files"][name]
                    s = hub.sibling(name, data)
                    if (repo, name) in hub.corrupt:
                        data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
                    start = 0
                    rng = self.headers.get("Range")
                    if rng and rng.startswith("bytes="):
                        start = int(rng[6:].split("-")[0])
                    self.send_response(206 if start else 200)
                    self.send_header("X-Repo-Commit", r["sha"])
                    self.send_header("ETag", f'"{s["lfs"]["sha256"] if "lfs" in s else s["blobId"]}"')
                    self.send_header("Content-Length", str(len(data) - start))
                    if start:
                        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    self.send_header("Accept-Ranges", "bytes")
                    self.end_headers()
                    if not body:
                        return
                    rate = hub.slow.get((repo, name))
                    chunk = 4096 if rate else 1 << 20
                    for i in range(start, len(data), chunk):
                        try:
                            self.wfile.write(data[i:i + chunk])
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        if rate:
                            time.sleep(chunk / rate)
                    return
                self._error(404, "NotFound", f"no route for {path}")

        return Handler
