"""The FastAPI app: its routes, error handlers and lifespan, and `serve`."""

from __future__ import annotations

import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from ..model import Model
from ..scheduler import Scheduler
from . import chat, completions
from .api import Api
from .guard import Guard
from .protocol import ApiError, DetokenizeRequest, TokenizeRequest, error_body

MAX_BODY_BYTES = 4 << 20


def create_app(model: Model, name: str, max_batch: int | None = None, max_queue: int = 64,
               api_key: str | None = None):
    api = Api(model, name, max_batch, max_queue)

    async def lifespan(app):
        api.scheduler = Scheduler(model, max_batch, max_queue)
        # the grammar engine's view of the tokenizer (a second at 128k tokens), before a request needs it
        threading.Thread(target=_warm, args=(model,), daemon=True).start()
        yield
        api.scheduler.close()  # uvicorn has drained the open requests by now

    app = FastAPI(title="tellme", lifespan=lifespan)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.get("/health")(lambda: {"status": "ok"})
    app.get("/v1/models")(lambda: {"object": "list", "data": [api.model_card()]})

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str):
        if model_id != name:
            raise ApiError(404, f"model {model_id!r} not found; this server serves {name!r}", "model",
                           "not_found_error")
        return api.model_card()

    app.get("/metrics")(lambda: PlainTextResponse(api.metrics(), media_type="text/plain; version=0.0.4"))

    @app.post("/tokenize")  # llama-server's
    async def tokenize(body: TokenizeRequest):
        return api.tokenize(body)

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        return api.detokenize(body)

    @app.post("/v1/completions")
    async def completions_(body: completions.CompletionRequest, request: Request):
        return await completions.handle(api, body, request)

    @app.post("/v1/chat/completions")
    async def chat_(body: chat.ChatRequest, request: Request):
        return await chat.handle(api, body, request)

    return Guard(app, api_key, MAX_BODY_BYTES)


def _warm(model: Model) -> None:
    try:
        model.vocabulary
    except Exception:  # noqa: BLE001 - a request that needs it reports the error
        pass


async def _api_error(_, e: ApiError):
    return JSONResponse(error_body(e.status, e.message, e.param, e.kind), status_code=e.status)


async def _invalid(_, e: RequestValidationError):
    first = e.errors()[0]
    if first.get("type") == "json_invalid":
        return JSONResponse(error_body(400, "malformed JSON body"), status_code=400)
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return JSONResponse(error_body(400, f"{param}: {first.get('msg')}", param), status_code=400)


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
