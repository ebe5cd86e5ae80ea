"""POST /v1/chat/completions: messages in (rendered by the model's chat template), `n` replies
out, whole or streamed; with `tools`, replies may be tool calls (tools.py)."""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..constrain import compile_grammar
from ..errors import UsageError
from . import tools as toolkit
from .api import Api, event
from .protocol import ApiError, ChatRequest

__all__ = ["ChatRequest", "handle"]


def prepare(api: Api, body: ChatRequest) -> tuple[list[int], str | None, bool]:
    """The prompt, the grammar the replies follow (response_format, or a tool_choice that
    requires a call), and whether replies are read for tool calls."""
    body.check()
    offered = bool(body.tools) and body.tool_choice != "none"
    tok = api.model.tokenizer
    messages, specs = toolkit.render(body.messages, body.tools if offered else None,
                                     toolkit.knows_tools(tok.chat_template))
    try:
        prompt = api.model.encode_chat(messages, tools=specs)
    except UsageError as e:
        raise ApiError(400, str(e), "messages") from None
    grammar = api.grammar(body)
    calls = toolkit.grammar(body.tools, body.tool_choice, body.parallel_tool_calls) if offered else None
    if calls is not None:
        if grammar is not None:
            raise ApiError(400, "response_format and a tool_choice that requires a call cannot both constrain the "
                                "reply", "tool_choice")
        try:
            grammar = compile_grammar(grammar=calls)
        except UsageError as e:
            raise ApiError(400, f"tools: a function's parameters: {e}", "tools") from None
    return prompt, grammar, offered


async def handle(api: Api, body: ChatRequest, request: Request):
    prompt, grammar, offered = prepare(api, body)
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = api.check(body, prompt, limit, "messages")
    top = (body.top_logprobs or 0) if body.logprobs else None
    rid, created = api.new_id("chatcmpl"), int(time.time())
    # the model's end-of-turn strings, unless the caller gives stops or a grammar decides the end
    stop = body.stop if body.stop is not None or grammar else list(api.model.config.stop_strings)

    def obj(kind, choices, usage=None):
        return {"id": rid, "object": kind, "created": created, "model": api.name, "choices": choices,
                **({"usage": usage} if usage else {})}

    await api.vocabulary_for(grammar)
    gen = api.submit(body, prompt, max_tokens, top, grammar, stop)
    if body.stream:
        return StreamingResponse(_stream(api, body, gen, obj, prompt, offered), media_type="text/event-stream")
    replies = await api.collect(gen, body.n, request)
    if replies is None:
        return Response(status_code=499)  # nobody is listening; the status is for the access log
    choices = []
    for i, (text, _, toks, reason) in enumerate(replies):
        message = {"role": "assistant", "content": text}
        if offered:  # the calls written whole; one cut off by max_tokens stays text, as it streams
            content, calls = toolkit.parse(text, body.tools)
            if calls:
                message = {"role": "assistant", "content": content, "tool_calls": calls}
                reason = "tool_calls" if reason == "stop" else reason
        choices.append({"index": i, "message": message, "finish_reason": reason,
                        "logprobs": {"content": [api.token(t) for t in toks]} if body.logprobs else None})
    return obj("chat.completion", choices, api.usage(prompt, sum(r[1] for r in replies)))


async def _stream(api: Api, body: ChatRequest, gen, obj, prompt: list[int], offered: bool):
    def chunk(i, delta, reason=None, logprobs=None):
        c = {"index": i, "delta": delta, "finish_reason": reason}
        if logprobs is not None:
            c["logprobs"] = logprobs
        return event(obj("chat.completion.chunk", [c]))

    readers = [toolkit.ToolStream(body.tools) if offered else None for _ in range(body.n)]
    calls = [0] * body.n
    generated = 0

    def deltas(i, events):
        for kind, value in events:
            if kind == "content":
                yield chunk(i, {"content": value})
            else:  # a whole call: its name and id, then its arguments, as OpenAI streams them
                f = value["function"]
                yield chunk(i, {"tool_calls": [{"index": calls[i], "id": value["id"], "type": "function",
                                                "function": {"name": f["name"], "arguments": ""}}]})
                yield chunk(i, {"tool_calls": [{"index": calls[i], "function": {"arguments": f["arguments"]}}]})
                calls[i] += 1

    for i in range(body.n):
        yield chunk(i, {"role": "assistant", "content": ""})
    async for i, piece, extra in gen:
        if piece is None:
            for c in deltas(i, readers[i].finish() if readers[i] else ()):
                yield c
            reason = "tool_calls" if calls[i] and extra == "stop" else extra
            yield chunk(i, {}, reason)
            continue
        generated += extra is not None
        lp = {"content": [api.token(extra)]} if body.logprobs and extra is not None else None
        if readers[i] is not None:
            for c in deltas(i, readers[i].push(piece)):
                yield c
            if lp:
                yield chunk(i, {}, None, lp)
        elif piece or lp:
            yield chunk(i, {"content": piece}, None, lp)
    if body.stream_options and body.stream_options.include_usage:
        yield event(obj("chat.completion.chunk", [], api.usage(prompt, generated)))
    yield "data: [DONE]\n\n"
