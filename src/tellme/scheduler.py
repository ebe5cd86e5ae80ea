"""Continuous batching: many requests on one model, one batched engine step at a time.

A thread runs the loop. Each step takes every running request's next token (decode) and a
chunk of the prompt of requests still prefilling, and runs them together (`Engine.forward_batch`):
each weight matrix is read once per step for all of them, and a long prompt is cut into chunks so
that it does not stall the streams already running. A sequence's logits do not depend on what it
is batched with, so a greedy reply is the same as the request run alone.

Requests wait in a bounded queue while all sequences (KV caches) are in use; beyond the queue they
are refused (QueueFull). Events go back through each request's `emit` callback, from the
scheduler's thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .engine import Sequence
from .errors import TellmeError
from .model import Model
from .sampling import SamplingParams, sample


class QueueFull(TellmeError):
    """Every sequence is busy and the queue is full."""


@dataclass
class Token:
    id: int
    logprob: float | None          # None when the request asked for no logprobs
    top: list[tuple[int, float]]   # the most likely tokens and their logprobs, when asked for


@dataclass
class Request:
    prompt: list[int]
    max_tokens: int
    params: SamplingParams
    emit: Callable[[str, object], None]   # ("token", Token) ... then ("done", finish_reason) or ("error", text)
    top_logprobs: int | None = None      # None: no logprobs (a float64 log-softmax: 0.27 ms a token at 32k vocab)
    # scheduler state
    cancelled: bool = False
    sequence: Sequence | None = None
    position: int = 0                    # tokens of prompt + output already in the cache
    output: list[int] = field(default_factory=list)
    rng: np.random.Generator | None = None
    submitted: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None


class Scheduler:
    def __init__(self, model: Model, max_batch: int | None = None, max_queue: int = 64, prefill_chunk: int = 64):
        self.model = model
        self.max_batch = min(max_batch or model.max_sequences, model.max_sequences)
        self.max_queue, self.prefill_chunk = max_queue, prefill_chunk
        self.eos = frozenset(model.eos_ids())
        self._queue: deque[Request] = deque()
        self._running: list[Request] = []
        self._wake = threading.Condition()
        self._stop = False
        self.metrics = {"requests": 0, "requests_refused": 0, "requests_cancelled": 0, "prompt_tokens": 0,
                        "generated_tokens": 0, "steps": 0, "batch_tokens": 0}
        self.ttft_s: deque[float] = deque(maxlen=1000)
        self._thread = threading.Thread(target=self._loop, name="tellme-scheduler", daemon=True)
        self._thread.start()

    # ---- from any thread ----
    def submit(self, r: Request) -> None:
        with self._wake:  # room: a free sequence, or a place in the queue
            if len(self._queue) >= self.max_queue + max(0, self.max_batch - len(self._running)):
                self.metrics["requests_refused"] += 1
                raise QueueFull(f"the server is busy: {len(self._running)} requests running and {len(self._queue)} "
                                "waiting; try again later")
            r.rng = np.random.default_rng(r.params.seed)
            self._queue.append(r)
            self.metrics["requests"] += 1
            self.metrics["prompt_tokens"] += len(r.prompt)
            self._wake.notify()

    def cancel(self, r: Request) -> None:
        """Stops `r` (its client went away); its sequence is freed at the next step."""
        with self._wake:
            r.cancelled = True
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    # ---- the scheduler's thread ----
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._queue and not self._running:
                    self._wake.wait()
                if self._stop:
                    for r in [*self._running, *self._queue]:
                        self._finish(r, "error", "the server is shutting down")
                    return
                self._admit()
                if not self._running:  # sequences held elsewhere (the Model API): look again shortly
                    self._wake.wait(0.05)
                    continue
            try:
                self._step()
            except Exception as e:  # a failed step fails its requests, not the server
                for r in list(self._running):
                    self._finish(r, "error", f"generation failed: {e}")

    def _admit(self) -> None:
        for r in [r for r in self._queue if r.cancelled]:
            self._queue.remove(r)
            self.metrics["requests_cancelled"] += 1
            r.emit("done", "cancelled")
        while self._queue and len(self._running) < self.max_batch:
            r = self._queue[0]
            seq = self.model.sequences.acquire(r.prompt)
            if seq is None:
                return
            self._queue.popleft()
            r.sequence = seq
            r.position = seq.reusable(r.prompt)  # a common prefix already in this cache is kept
            del seq.tokens[r.position:]
            self._running.append(r)

    def _step(self) -> None:
        items, batch = [], []
        budget = self.prefill_chunk
        for r in list(self._running):
            if r.cancelled:
                self.metrics["requests_cancelled"] += 1
                self._finish(r, "done", "cancelled")
                continue
            if r.position < len(r.prompt):
                if budget <= 0:
                    continue  # this step's prefill budget is spent; the decodes still run
                chunk = r.prompt[r.position:r.position + budget]
                budget -= len(chunk)
                last = r.position + len(chunk) == len(r.prompt)
            else:
                chunk, last = [r.output[-1]], True
            items.append((r.sequence.cache, np.asarray(chunk, dtype=np.int32), r.position, last))
            batch.append((r, chunk))
        if not items:
            return
        results = self.model.engine.forward_batch(items)
        self.metrics["steps"] += 1
        self.metrics["batch_tokens"] += sum(len(c) for _, c in batch)
        for (r, chunk), logits in zip(batch, results):
            r.position += len(chunk)
            r.sequence.tokens.extend(chunk)
            if logits is not None:
                self._next_token(r, logits)

    def _next_token(self, r: Request, logits: np.ndarray) -> None:
        token = sample(logits, r.params, r.rng, r.prompt + r.output)
        if token in self.eos:
            self._finish(r, "done", "stop")
            return
        if r.first_token_s is None:
            r.first_token_s = time.perf_counter() - r.submitted
            self.ttft_s.append(r.first_token_s)
        r.output.append(token)
        self.metrics["generated_tokens"] += 1
        lp = _logprobs(logits, token, r.top_logprobs) if r.top_logprobs is not None else (None, [])
        r.emit("token", Token(token, *lp))
        if len(r.output) >= r.max_tokens or r.position + 1 >= self.model.context:
            self._finish(r, "done", "length")

    def _finish(self, r: Request, kind: str, detail: str) -> None:
        if r in self._running:
            self._running.remove(r)
        if r in self._queue:
            self._queue.remove(r)
        if r.sequence is not None:
            self.model.sequences.release(r.sequence)
            r.sequence = None
        r.emit(kind, detail)


def _logprobs(logits: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """log softmax of the model's logits: the chosen token's, and the `top` most likely."""
    z = logits.astype(np.float64)
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    best = np.argsort(-z, kind="stable")[:top] if top else []
    return float(z[token] - lse), [(int(i), float(z[i] - lse)) for i in best]
