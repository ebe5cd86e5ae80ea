"""ASGI middleware in front of the app: the API key (when set) and the body size limit, checked
before FastAPI reads a request."""

from __future__ import annotations

import json

from .protocol import error_body


OPEN_PATHS = ("/health", "/", "/favicon.ico")  # no key needed: the chat page holds no data and asks for it


class Guard:
    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key and scope["path"] not in OPEN_PATHS and \
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
