"""Continuous batching: many requests on one model, one batched engine step at a time.

A thread runs the loop. Each step takes every running request's next token (decode) and a
chunk of the prompt of requests still prefilling, and runs them together (`Engine.forward_batch`):
each weight matrix is read once per step for all of them, and a long prompt is cut into chunks so
that it does not stall the streams already running. A sequence's logits do not depend on what it
is batched with, so a greedy reply is the same as the request run alone.

Requests wait in a bounded queue while all sequences (KV caches) are in use; beyond the queue they
are refused (QueueFull). Events go back through each request's `emit` callback, from the
scheduler's thread.

A prompt that starts like one already in a running sequence takes those positions' K/V by copy
instead of running them again (a request's `n` choices, or a shared system prompt); one whose
prefix another request is still reading waits for it. A request with a grammar (`constraint`)
gets its token mask computed on llguidance's threads while the engine runs the step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .constrain import Constraint, fill_masks, new_masks, unpack
from .engine import Sequence, common_prefix
from .errors import TellmeError
from .model import Model
from .sampling import SamplingParams, logprobs, sample


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
    constraint: Constraint | None = None  # the grammar the reply must follow (Model.constraint)
    stop_ids: frozenset = frozenset()    # tokens that end the reply, like end of sequence (not emitted)
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
                        "generated_tokens": 0, "steps": 0, "batch_tokens": 0, "constrained_tokens": 0,
                        "mask_seconds": 0.0,        # computing grammar masks, beside the forward pass
                        "mask_wait_seconds": 0.0}   # of which the step waited for after its forward pass
        self.ttft_s: deque[float] = deque(maxlen=1000)
        self._masker = ThreadPoolExecutor(1, thread_name_prefix="tellme-masks")
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
        self._masker.shutdown()

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
                if self._share_prefix(r):
                    continue  # another request is reading this prompt's start: copy it when done
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
        # the masks of this step's constrained tokens, computed while the engine runs
        constrained = [r for (r, _), item in zip(batch, items) if item[3] and r.constraint is not None]
        masks = new_masks(len(constrained), self.model.config.vocab)
        pending = self._masker.submit(self._fill_masks, constrained, masks) if constrained else None
        try:
            results = self.model.engine.forward_batch(items)
        finally:
            if pending is not None:
                waited = time.perf_counter()
                pending.result()
                self.metrics["mask_wait_seconds"] += time.perf_counter() - waited
                self.metrics["constrained_tokens"] += len(constrained)
        self.metrics["steps"] += 1
        self.metrics["batch_tokens"] += sum(len(c) for _, c in batch)
        row = {id(r): i for i, r in enumerate(constrained)}
        for (r, chunk), logits in zip(batch, results):
            r.position += len(chunk)
            r.sequence.tokens.extend(chunk)
            if logits is not None:
                allowed = unpack(masks[row[id(r)]], logits.size) if id(r) in row else None
                try:
                    self._next_token(r, logits, allowed)
                except TellmeError as e:  # this request's sampling or grammar failed, not the step
                    self._finish(r, "error", str(e))

    def _fill_masks(self, constrained: list[Request], masks: np.ndarray) -> None:
        start = time.perf_counter()
        fill_masks([r.constraint for r in constrained], masks)
        self.metrics["mask_seconds"] += time.perf_counter() - start

    def _share_prefix(self, r: Request) -> bool:
        """Copies the longest start of r's prompt that another running sequence holds; True when r
        should wait because a request admitted before it is still reading a longer common start."""
        best, source = r.position, None
        for o in self._running:
            if o is r or o.sequence is None:
                continue
            held = common_prefix(r.prompt, o.sequence.tokens, len(r.prompt) - 1)
            if held > best:
                best, source = held, o
        if source is not None and r.sequence.copy_prefix(source.sequence, best):
            r.position = best
        for o in self._running:
            if o is r:
                return False  # the requests before r are checked: none will read further
            if o.sequence is not None and o.position < len(o.prompt) and \
                    common_prefix(r.prompt, o.prompt, len(r.prompt) - 1) > max(r.position, o.position):
                return True
        return False

    def _next_token(self, r: Request, logits: np.ndarray, allowed: np.ndarray | None = None) -> None:
        token = sample(logits, r.params, r.rng, r.prompt + r.output, r.output, allowed)
        if token in self.eos or token in r.stop_ids:
            self._finish(r, "done", "stop")
            return
        if r.constraint is not None:
            r.constraint.consume(token)
        if r.first_token_s is None:
            r.first_token_s = time.perf_counter() - r.submitted
            self.ttft_s.append(r.first_token_s)
        r.output.append(token)
        self.metrics["generated_tokens"] += 1
        lp = logprobs(logits, token, r.top_logprobs) if r.top_logprobs is not None else (None, [])
        r.emit("token", Token(token, *lp))
        if r.constraint is not None and r.constraint.finished:
            self._finish(r, "done", "stop")  # the grammar admits nothing more
        elif len(r.output) >= r.max_tokens or r.position + 1 >= self.model.context:
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
