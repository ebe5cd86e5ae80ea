"""The shared state of one served model (`Api`) and what every endpoint needs: checking a
request against the model, its grammar, running its `n` choices through the scheduler and reading
their text back."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

from fastapi import Request

from ..constrain import Constraint, compile_grammar
from ..errors import UsageError
from ..model import Model
from ..sampling import SamplingParams
from ..scheduler import QueueFull, Request as Job, Scheduler, Token
from ..tokenizer import TextStream
from .protocol import ApiError, DetokenizeRequest, Sampling, TokenizeRequest


class Api:
    """One served model: its scheduler, and what every endpoint needs."""

    def __init__(self, model: Model, name: str, max_batch: int | None, max_queue: int):
        self.model, self.name = model, name
        self.scheduler = Scheduler(model, max_batch, max_queue)

    # ---- checks ----
    def check(self, body: Sampling, prompt: list[int], max_tokens: int | None, param: str) -> int:
        """The token ids the request names (logit_bias, stops) against the vocabulary, its prompt
        against the context, and max_tokens (None: the rest of the context). Returns the token
        budget. (The registry picked the model; body.check() the other fields.)"""
        vocab = self.model.config.vocab
        for field, ids in (("logit_bias", body.logit_bias or {}), ("stop_token_ids", body.stop_token_ids or ()),
                           ("stop", [s for s in (body.stop or ()) if isinstance(s, int)])):
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise ApiError(400, f"{field}: token {bad[0]} is outside the vocabulary [0, {vocab})", field)
        room = self.model.context - len(prompt)
        if room < 1:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens; the context is {self.model.context}", param)
        if max_tokens is not None and max_tokens > room:
            raise ApiError(400, f"max_tokens {max_tokens} is beyond the context: the prompt takes {len(prompt)} of "
                                f"its {self.model.context} tokens, {room} are left", "max_tokens")
        return room if max_tokens is None else max_tokens

    def grammar(self, body: Sampling) -> str | None:
        """llguidance's grammar for `response_format`, or None."""
        f = body.response_format
        if f is None or f.type == "text":
            return None
        try:
            if f.type == "json_object" or f.json_schema.schema_ is None:
                return compile_grammar(json_object=True)
            return compile_grammar(json_schema=f.json_schema.schema_)
        except UsageError as e:
            raise ApiError(400, f"response_format: {e}", "response_format") from None

    async def vocabulary_for(self, grammar: str | None) -> None:
        """The grammar engine's view of the tokenizer, built off the event loop (a second at 128k
        tokens, once per model) before a constrained request needs it."""
        if grammar is None:
            return
        try:
            await asyncio.to_thread(lambda: self.model.vocabulary)
        except UsageError as e:
            raise ApiError(400, f"response_format: {e}", "response_format") from None

    def token(self, t: Token) -> dict:
        """A token's logprob entry, OpenAI's chat shape (completions reshape it)."""
        def one(i, lp):
            s = self.model.tokenizer.decode([i], skip_special_tokens=False)
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}
        return {**one(t.id, t.logprob), "top_logprobs": [one(i, lp) for i, lp in t.top]}

    # ---- running a request ----
    def submit(self, body: Sampling, prompt: list[int], max_tokens: int, top_logprobs: int | None,
               grammar: str | None, stop):
        """Queues the request's `n` choices (refusals are raised here, before any response starts)
        and returns an async iterator of (choice, text piece, Token) and, once per choice,
        (choice, None, finish_reason)."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        strings = [s for s in ([stop] if isinstance(stop, str) else stop or ()) if isinstance(s, str)]
        ids = frozenset([s for s in stop or () if isinstance(s, int)] + list(body.stop_token_ids or ()))
        try:
            texts = [TextStream(self.model.tokenizer, strings) for _ in range(body.n)]
        except UsageError as e:
            raise ApiError(400, str(e), "stop") from None
        try:
            constraints = [Constraint(self.model.vocabulary, grammar) if grammar else None for _ in range(body.n)]
            jobs = []
            for i in range(body.n):
                params = SamplingParams(
                    temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, min_p=body.min_p,
                    repetition_penalty=body.repetition_penalty, presence_penalty=body.presence_penalty,
                    frequency_penalty=body.frequency_penalty, logit_bias=body.logit_bias,
                    seed=None if body.seed is None else body.seed + i)  # the choices differ, reproducibly
                emit = (lambda i: lambda *e: loop.call_soon_threadsafe(events.put_nowait, (i, *e)))(i)
                jobs.append(Job(prompt, max_tokens, params, emit, top_logprobs=top_logprobs,
                                constraint=constraints[i], stop_ids=ids))
        except UsageError as e:
            raise ApiError(400, str(e)) from None
        submitted = []
        try:
            for j in jobs:
                self.scheduler.submit(j)
                submitted.append(j)
        except QueueFull as e:
            for j in submitted:
                self.scheduler.cancel(j)
            raise ApiError(503, str(e), kind="server_error") from None
        return self._results(jobs, texts, events)

    async def _results(self, jobs: list[Job], texts: list[TextStream], events: asyncio.Queue):
        open_ = set(range(len(jobs)))
        try:
            while open_:
                i, kind, value = await events.get()
                if i not in open_:
                    continue  # a choice already ended by a stop string
                if kind == "token":
                    piece, stopped = texts[i].push(value.id)
                    yield i, piece, value
                    if stopped:
                        open_.discard(i)
                        self.scheduler.cancel(jobs[i])
                        yield i, None, "stop"
                elif kind == "done":
                    if texts[i].held:
                        yield i, texts[i].held, None
                    open_.discard(i)
                    yield i, None, "stop" if value == "cancelled" else value
                else:
                    raise ApiError(500, value, kind="server_error")
        finally:  # done, or the client went away: every choice's sequence is freed
            for j in jobs:
                self.scheduler.cancel(j)

    async def collect(self, gen, n: int, request: Request) -> list[tuple[str, int, list[Token], str]] | None:
        """Whole replies, one per choice: (text, tokens generated, the tokens that carry logprobs,
        finish_reason), or None when the client went away first (its sequences are then freed, as
        for a stream)."""
        async def whole():
            pieces, toks, counts, reasons = [[] for _ in range(n)], [[] for _ in range(n)], [0] * n, ["stop"] * n
            async for i, piece, extra in gen:
                if piece is None:
                    reasons[i] = extra
                    continue
                pieces[i].append(piece)
                if extra is not None:
                    counts[i] += 1
                    if extra.logprob is not None:
                        toks[i].append(extra)
            return [("".join(pieces[i]), counts[i], toks[i], reasons[i]) for i in range(n)]

        async def gone():  # the body is read: the next message is the client's disconnect
            while (await request.receive())["type"] != "http.disconnect":
                pass

        task, watch = asyncio.ensure_future(whole()), asyncio.ensure_future(gone())
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        for t in (task, watch):
            t.cancel()  # the reply's task unwinds its generator, whose `finally` cancels the requests
        await asyncio.gather(task, watch, return_exceptions=True)
        return None if task.cancelled() else task.result()

    def usage(self, prompt: list[int], generated: int) -> dict:
        return {"prompt_tokens": len(prompt), "completion_tokens": generated,
                "total_tokens": len(prompt) + generated}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    # ---- the small endpoints ----
    def metric_lines(self) -> list[str]:
        """This model's Prometheus series, labelled with its name."""
        s, label = self.scheduler, f'{{model="{self.name}"}}'
        m, ttft = s.metrics, sorted(s.ttft_s)
        lines = [f"tellme_{k}_total{label} {v}" for k, v in m.items()]
        lines += [f"tellme_queue_length{label} {s.queued}", f"tellme_running_sequences{label} {s.running}",
                  f"tellme_batch_tokens_per_step{label} {m['batch_tokens'] / max(m['steps'], 1):.3f}"]
        for q in (0.5, 0.99):
            value = ttft[min(int(q * len(ttft)), len(ttft) - 1)] if ttft else float("nan")
            lines.append(f'tellme_time_to_first_token_seconds{{model="{self.name}",quantile="{q}"}} {value:.6f}')
        return lines

    def tokenize(self, body: TokenizeRequest) -> dict:
        ids = self.model.encode(body.content, add_special_tokens=body.add_special)
        if not body.with_pieces:
            return {"tokens": ids}
        return {"tokens": [{"id": i, "piece": self.model.tokenizer.decode([i], skip_special_tokens=False)}
                           for i in ids]}

    def detokenize(self, body: DetokenizeRequest) -> dict:
        bad = [i for i in body.tokens if not 0 <= i < self.model.config.vocab]
        if bad:
            raise ApiError(400, f"tokens: {bad[0]} is outside the vocabulary [0, {self.model.config.vocab})", "tokens")
        return {"content": self.model.decode(body.tokens)}


def event(obj: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(obj)}\n\n"


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
