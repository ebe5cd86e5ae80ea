"""`tellme serve`: an OpenAI-compatible HTTP server over one model (FastAPI + uvicorn, the `serve`
extra). Requests go to the continuous-batching scheduler (scheduler.py), which runs off the event
loop; tokens come back through an asyncio queue per request.

Endpoints: POST /v1/completions and /v1/chat/completions (both with `stream: true` as server-sent
events, `n`, `response_format`, and for chat `tools`), GET /v1/models and /v1/models/{id},
POST /tokenize and /detokenize (llama-server's), GET /health, GET /metrics (Prometheus text).
docs/serving.md has every field and the limits.

    protocol.py     request bodies and OpenAI's error shape
    app.py          routes, the served model's state, running a request's choices
    completions.py  /v1/completions
    chat.py         /v1/chat/completions
    tools.py        tool calls: the prompt, the output format, its grammar, parsing
    guard.py        API key and body size, before FastAPI
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
