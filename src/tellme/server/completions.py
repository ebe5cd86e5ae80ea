"""POST /v1/completions: text in, `n` continuations out, whole or streamed; `echo` puts the
prompt in front (with its tokens' logprobs when `logprobs` is asked for)."""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ..errors import UsageError
from ..sampling import logprobs
from ..scheduler import Token
from .api import Api, event
from .protocol import ApiError, CompletionRequest

__all__ = ["CompletionRequest", "handle"]


def prompt_ids(api: Api, body: CompletionRequest) -> list[int]:
    p = body.prompt
    if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        bad = [i for i in p if not 0 <= i < api.model.config.vocab]
        if bad:
            raise ApiError(400, f"prompt: token {bad[0]} is outside the vocabulary", "prompt")
        return list(p)
    if isinstance(p, list) and len(p) != 1:
        raise ApiError(400, "prompt: give one string or one list of token ids (batches of prompts are not "
                            "supported; use n for several continuations)", "prompt")
    return api.model.encode(p if isinstance(p, str) else p[0])


def prompt_tokens(api: Api, prompt: list[int], top: int) -> list[Token | None]:
    """Each prompt token with its logprob given the tokens before it (None for the first), from
    one forward pass over the prompt."""
    try:
        rows = api.model.logits(prompt)
    except UsageError as e:  # every sequence is in use
        raise ApiError(503, str(e), kind="server_error") from None
    return [None] + [Token(t, *logprobs(rows[k - 1], t, top)) for k, t in enumerate(prompt) if k]


def logprobs_shape(api: Api, tokens: list[Token | None], prompt: list[int] = ()) -> dict:
    entries = [api.token(t) if t is not None else {"token": api.model.tokenizer.decode([i], skip_special_tokens=False),
                                                  "logprob": None, "top_logprobs": None}
               for t, i in zip(tokens, list(prompt) + [None] * len(tokens))]
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [None if e["top_logprobs"] is None else {x["token"]: x["logprob"] for x in e["top_logprobs"]}
                             for e in entries]}


async def handle(api: Api, body: CompletionRequest, request: Request):
    body.check()
    prompt = prompt_ids(api, body)
    max_tokens = api.check(body, prompt, body.max_tokens, "prompt")
    grammar = api.grammar(body)
    rid, created = api.new_id("cmpl"), int(time.time())
    echo_text = api.model.decode(prompt) if body.echo else ""
    echo_tokens = []
    if body.echo and body.logprobs is not None:
        echo_tokens = await asyncio.to_thread(prompt_tokens, api, prompt, body.logprobs)

    def choice(i, text, reason, lps):
        return {"index": i, "text": text, "finish_reason": reason, "logprobs": lps}

    def obj(choices, usage=None):
        return {"id": rid, "object": "text_completion", "created": created, "model": api.name, "choices": choices,
                **({"usage": usage} if usage else {})}

    await api.vocabulary_for(grammar)
    gen = api.submit(body, prompt, max_tokens, body.logprobs, grammar, body.stop)
    if body.stream:
        async def sse():
            generated = 0
            for i in range(body.n if body.echo else 0):
                lp = logprobs_shape(api, echo_tokens, prompt) if body.logprobs is not None else None
                yield event(obj([choice(i, echo_text, None, lp)]))
            async for i, piece, extra in gen:
                if piece is None:
                    yield event(obj([choice(i, "", extra, None)]))
                    continue
                generated += extra is not None
                scored = extra is not None and extra.logprob is not None
                if piece or scored:
                    yield event(obj([choice(i, piece, None, logprobs_shape(api, [extra]) if scored else None)]))
            if body.stream_options and body.stream_options.include_usage:
                yield event(obj([], api.usage(prompt, generated)))
            yield "data: [DONE]\n\n"
        return StreamingResponse(sse(), media_type="text/event-stream")
    replies = await api.collect(gen, body.n, request)
    if replies is None:
        return Response(status_code=499)  # nobody is listening; the status is for the access log
    choices = [choice(i, echo_text + text, reason,
                      logprobs_shape(api, echo_tokens + toks, prompt) if body.logprobs is not None else None)
               for i, (text, _, toks, reason) in enumerate(replies)]
    return obj(choices, api.usage(prompt, sum(r[1] for r in replies)))

