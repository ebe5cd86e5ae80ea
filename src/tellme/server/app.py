"""The FastAPI app: its routes, error handlers and lifespan, and `serve`."""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse

from . import chat, completions
from .api import rss_bytes
from .guard import Guard
from .models import Registry
from .protocol import ApiError, DetokenizeRequest, TokenizeRequest, error_body

MAX_BODY_BYTES = 4 << 20


def create_app(registry: Registry, api_key: str | None = None):
    async def lifespan(app):
        yield
        registry.close()  # uvicorn has drained the open requests by now

    app = FastAPI(title="tellme", lifespan=lifespan)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.get("/health")(lambda: {"status": "ok", "models": registry.health()})
    page = (Path(__file__).parent / "static" / "chat.html").read_text(encoding="utf-8")
    app.get("/", response_class=HTMLResponse)(lambda: HTMLResponse(page))  # the chat page
    app.get("/favicon.ico")(lambda: Response(status_code=204))
    app.get("/v1/models")(lambda: {"object": "list", "data": [_card(registry, n) for n in registry.names()]})

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str):
        return _card(registry, registry.entry(model_id).name)

    app.get("/metrics")(lambda: PlainTextResponse(_metrics(registry), media_type="text/plain; version=0.0.4"))

    @app.post("/tokenize")  # llama-server's; a `model` field picks one (default: the first)
    async def tokenize(body: TokenizeRequest):
        return await _with(registry, body.model, lambda api: api.tokenize(body))

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        return await _with(registry, body.model, lambda api: api.detokenize(body))

    @app.post("/v1/completions")
    async def completions_(body: completions.CompletionRequest, request: Request):
        return await _with(registry, body.model, lambda api: completions.handle(api, body, request))

    @app.post("/v1/chat/completions")
    async def chat_(body: chat.ChatRequest, request: Request):
        return await _with(registry, body.model, lambda api: chat.handle(api, body, request))

    return Guard(app, api_key, MAX_BODY_BYTES)


async def _with(registry: Registry, name: str | None, handle):
    """Runs `handle(api)` on the named model, held (not unloaded) until its reply is sent: for a
    stream, until the stream ends or its client goes away."""
    api = await registry.acquire(name or registry.names()[0])
    try:
        response = handle(api)
        if inspect.isawaitable(response):
            response = await response
    except BaseException:
        registry.release(api)
        raise
    if isinstance(response, StreamingResponse):
        response.body_iterator = _released(response.body_iterator, registry, api)
    else:
        registry.release(api)
    return response


async def _released(chunks, registry: Registry, api):
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        registry.release(api)


def _card(registry: Registry, name: str) -> dict:
    return {"id": name, "object": "model", "created": registry.started, "owned_by": "tellme"}


def _metrics(registry: Registry) -> str:
    """Prometheus text: each loaded model's series labelled with its name, then the process's."""
    lines = []
    for api in registry.loaded():
        lines += api.metric_lines()
    lines += [f"tellme_model_loads_total {registry.loads}", f"tellme_model_unloads_total {registry.unloads}",
              f"process_resident_memory_bytes {rss_bytes()}"]
    return "\n".join(lines) + "\n"


async def _api_error(_, e: ApiError):
    return JSONResponse(error_body(e.status, e.message, e.param, e.kind), status_code=e.status)


async def _invalid(_, e: RequestValidationError):
    first = e.errors()[0]
    if first.get("type") == "json_invalid":
        return JSONResponse(error_body(400, "malformed JSON body"), status_code=400)
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return JSONResponse(error_body(400, f"{param}: {first.get('msg')}", param), status_code=400)


def serve(registry: Registry, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None) -> None:
    """Runs the server until Ctrl-C or SIGTERM; open requests are finished first."""
    import signal
    import sys

    import uvicorn

    app = create_app(registry, api_key)
    # uvicorn drains, then raises the signal it caught again: SIGTERM (a service stop) then exits 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
