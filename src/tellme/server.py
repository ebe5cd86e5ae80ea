"""`tellme serve`: an OpenAI-compatible HTTP server over one model (FastAPI + uvicorn, the `serve`
extra). Requests go to the continuous-batching scheduler (scheduler.py), which runs off the event
loop; tokens come back through an asyncio queue per request.

Endpoints: POST /v1/completions, POST /v1/chat/completions (both with `stream: true` as server-sent
events), GET /v1/models, GET /health, GET /metrics (Prometheus text). docs/serving.md has the subset
of the API and the limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .errors import UsageError
from .model import Model
from .sampling import SamplingParams
from .scheduler import QueueFull, Request as Job, Scheduler, Token
from .tokenizer import TextStream

MAX_BODY_BYTES = 4 << 20


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # fields of the OpenAI API that tellme does not use
    model: str
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)       # not OpenAI's; llama.cpp's and vLLM's servers take it too
    min_p: float = Field(0.0, ge=0, le=1)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_body(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def create_app(model: Model, name: str, max_batch: int | None = None, max_queue: int = 64,
               api_key: str | None = None) -> FastAPI:
    scheduler: Scheduler | None = None
    started = int(time.time())

    async def lifespan(app):
        nonlocal scheduler
        scheduler = Scheduler(model, max_batch, max_queue)
        yield
        scheduler.close()  # uvicorn has drained the open requests by now

    app = FastAPI(title="tellme", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return JSONResponse(error_body(e.status, e.message, e.param, e.kind), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(400, "malformed JSON body"), status_code=400)
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = f"{param}: {first.get('msg')}"
        return JSONResponse(error_body(400, message, param), status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": started, "owned_by": "tellme"}]}

    @app.get("/metrics")
    async def metrics():
        m = scheduler.metrics
        ttft = sorted(scheduler.ttft_s)
        lines = [f"tellme_{k}_total {v}" for k, v in m.items()]
        lines += [f"tellme_queue_length {scheduler.queued}", f"tellme_running_sequences {scheduler.running}",
                  f"tellme_batch_tokens_per_step {m['batch_tokens'] / max(m['steps'], 1):.3f}"]
        for q in (0.5, 0.99):
            value = ttft[min(int(q * len(ttft)), len(ttft) - 1)] if ttft else float("nan")
            lines.append(f'tellme_time_to_first_token_seconds{{quantile="{q}"}} {value:.6f}')
        lines.append(f"process_resident_memory_bytes {_rss_bytes()}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    def check(body: _Sampling, prompt: list[int], max_tokens: int | None, param: str) -> int:
        if body.model != name:
            raise ApiError(404, f"model {body.model!r} not found; this server serves {name!r}", "model",
                           "not_found_error")
        room = model.context - len(prompt)
        if room < 1:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens; the context is {model.context}", param)
        if max_tokens is not None and max_tokens > room:
            raise ApiError(400, f"max_tokens {max_tokens} is beyond the context: the prompt takes {len(prompt)} of "
                                f"its {model.context} tokens, {room} are left", "max_tokens")
        return room if max_tokens is None else max_tokens

    def job(body, prompt: list[int], max_tokens: int, top_logprobs: int | None, emit) -> Job:
        try:
            params = SamplingParams(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                                    min_p=body.min_p, seed=body.seed)
        except UsageError as e:
            raise ApiError(400, str(e)) from None
        return Job(prompt, max_tokens, params, emit, top_logprobs=top_logprobs)

    def run(body, prompt: list[int], max_tokens: int, top_logprobs: int | None):
        """Queues the request (refusals are raised here, before any response starts) and returns an
        async iterator of (text piece, Token), then (None, finish_reason)."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        try:
            text = TextStream(model.tokenizer, body.stop or ())
        except UsageError as e:
            raise ApiError(400, str(e), "stop") from None
        r = job(body, prompt, max_tokens, top_logprobs, lambda *e: loop.call_soon_threadsafe(events.put_nowait, e))
        try:
            scheduler.submit(r)
        except QueueFull as e:
            raise ApiError(503, str(e), kind="server_error") from None
        return results(r, text, events)

    async def results(r: Job, text: TextStream, events: asyncio.Queue):
        try:
            while True:
                kind, value = await events.get()
                if kind == "token":
                    piece, stopped = text.push(value.id)
                    yield piece, value
                    if stopped:
                        yield None, "stop"
                        return
                elif kind == "done":
                    if text.held:
                        yield text.held, None
                    yield None, "stop" if value == "cancelled" else value
                    return
                else:
                    raise ApiError(500, value, kind="server_error")
        finally:  # done, stopped by a stop string, or the client went away: the sequence is freed
            scheduler.cancel(r)

    def logprob_entry(t: Token) -> dict:
        def one(i, lp):
            s = model.tokenizer.decode([i], skip_special_tokens=False)
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}
        return {**one(t.id, t.logprob), "top_logprobs": [one(i, lp) for i, lp in t.top]}

    async def collect(gen, request: Request) -> tuple[str, int, list[dict], str] | None:
        """A whole reply: (text, tokens generated, one logprob entry per token when asked for,
        finish_reason), or None when the client went away first (its sequence is then freed, as
        for a stream)."""
        async def whole():
            pieces, lps, n = [], [], 0
            async for piece, extra in gen:
                if piece is None:
                    return "".join(pieces), n, lps, extra
                pieces.append(piece)
                if extra is not None:
                    n += 1
                    if extra.logprob is not None:
                        lps.append(logprob_entry(extra))
            return "".join(pieces), n, lps, "stop"

        async def gone():  # the body is read: the next message is the client's disconnect
            while (await request.receive())["type"] != "http.disconnect":
                pass

        task, watch = asyncio.ensure_future(whole()), asyncio.ensure_future(gone())
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        for t in (task, watch):
            t.cancel()  # the reply's task unwinds its generator, whose `finally` cancels the request
        await asyncio.gather(task, watch, return_exceptions=True)
        return None if task.cancelled() else task.result()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise ApiError(400, "prompt: give one string (batches of prompts are not supported)", "prompt")
        prompt = model.encode(body.prompt if isinstance(body.prompt, str) else body.prompt[0])
        max_tokens = check(body, prompt, body.max_tokens, "prompt")
        top = body.logprobs
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def choice(text, reason, lps):
            lp = None
            if body.logprobs is not None:
                lp = {"tokens": [e["token"] for e in lps], "token_logprobs": [e["logprob"] for e in lps],
                      "top_logprobs": [{x["token"]: x["logprob"] for x in e["top_logprobs"]} for e in lps]}
            return {"index": 0, "text": text, "finish_reason": reason, "logprobs": lp}

        def obj(choices, usage=None):
            return {"id": rid, "object": "text_completion", "created": created, "model": name, "choices": choices,
                    **({"usage": usage} if usage else {})}

        gen = run(body, prompt, max_tokens, top)
        if body.stream:
            async def sse():
                n = 0
                async for piece, extra in gen:
                    if piece is None:
                        yield _sse(obj([choice("", extra, [])], _usage(prompt, n)))
                        break
                    n += extra is not None
                    lps = [logprob_entry(extra)] if extra is not None and extra.logprob is not None else []
                    if piece or lps:
                        yield _sse(obj([choice(piece, None, lps)]))
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type="text/event-stream")
        reply = await collect(gen, request)
        if reply is None:
            return Response(status_code=499)  # nobody is listening; the status is for the access log
        text, n, lps, reason = reply
        return obj([choice(text, reason, lps)], _usage(prompt, n))

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        try:
            prompt = model.encode_chat([m.model_dump() for m in body.messages])
        except UsageError as e:
            raise ApiError(400, str(e), "messages") from None
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        max_tokens = check(body, prompt, limit, "messages")
        top = (body.top_logprobs or 0) if body.logprobs else None
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def obj(kind, choices, usage=None):
            return {"id": rid, "object": kind, "created": created, "model": name, "choices": choices,
                    **({"usage": usage} if usage else {})}

        stop = body.stop if body.stop is not None else list(model.config.stop_strings)
        gen = run(body.model_copy(update={"stop": stop}), prompt, max_tokens, top)
        if body.stream:
            async def sse():
                yield _sse(obj("chat.completion.chunk", [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                          "finish_reason": None}]))
                n = 0
                async for piece, extra in gen:
                    if piece is None:
                        yield _sse(obj("chat.completion.chunk", [{"index": 0, "delta": {}, "finish_reason": extra}],
                                       _usage(prompt, n)))
                        break
                    n += extra is not None
                    lp = {"content": [logprob_entry(extra)]} if body.logprobs and extra is not None else None
                    if piece or lp:
                        yield _sse(obj("chat.completion.chunk", [{"index": 0, "delta": {"content": piece},
                                                                  "logprobs": lp, "finish_reason": None}]))
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type="text/event-stream")
        reply = await collect(gen, request)
        if reply is None:
            return Response(status_code=499)  # nobody is listening; the status is for the access log
        text, n, lps, reason = reply
        message = {"role": "assistant", "content": text}
        return obj("chat.completion", [{"index": 0, "message": message, "finish_reason": reason,
                                        "logprobs": {"content": lps} if body.logprobs else None}],
                   _usage(prompt, n))

    return _Guard(app, api_key, MAX_BODY_BYTES)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _usage(prompt: list[int], generated: int) -> dict:
    return {"prompt_tokens": len(prompt), "completion_tokens": generated, "total_tokens": len(prompt) + generated}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class _Guard:
    """ASGI middleware: the API key (when set) and the body size limit, before FastAPI sees a request."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key and scope["path"] != "/health" and \
                headers.get(b"authorization", b"") != b"Bearer " + self.api_key.encode():
            return await _respond(send, 401, error_body(401, "missing or wrong API key (Authorization: Bearer ...)",
                                                        None, "authentication_error"))
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return await _respond(send, 413, error_body(413, f"request body over {self.max_body} bytes"))
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _respond(send, 413, error_body(413, f"request body over {self.max_body} bytes"))


class _TooLarge(Exception):
    pass


async def _respond(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def serve(model: Model, name: str, host: str = "127.0.0.1", port: int = 8080, max_batch: int | None = None,
          max_queue: int = 64, api_key: str | None = None) -> None:
    """Runs the server until Ctrl-C or SIGTERM; open requests are finished first."""
    import signal
    import sys

    import uvicorn

    app = create_app(model, name, max_batch, max_queue, api_key)
    # uvicorn drains, then raises the signal it caught again: SIGTERM (a service stop) then exits 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
