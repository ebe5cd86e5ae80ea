"""The models one server offers (`Registry`): each is loaded on its first request and unloaded,
least recently used first, when loading another would pass the memory budget. A request to a
model that is loading waits for it; one that needs room waits for a busy model to finish its
requests rather than fail.

A model's footprint is its packed weights plus the KV caches it may fill (every sequence at the
whole context: the pages are committed only as positions fill, so this is the most it can
take); before it is loaded, the size of its weight files stands in for the weights.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..model import Model
from .api import Api
from .protocol import ApiError


@dataclass
class Entry:
    name: str
    load: Callable[[], Model]       # runs in a worker thread
    estimate: int                   # bytes, before loading
    api: Api | None = None
    loading: asyncio.Future | None = None
    footprint: int = 0              # bytes: once loaded, or reserved while loading
    active: int = 0                 # requests holding it
    last_used: float = field(default_factory=time.monotonic)

    @property
    def state(self) -> str:
        return "loaded" if self.api else "loading" if self.loading else "available"


def model_bytes(model: Model) -> int:
    """Weights plus the KV caches at the whole context for every sequence."""
    c = model.config
    row = c.head_dim + 4 if model.kv == "q8" else 2 * c.head_dim
    return model.packed.nbytes + 2 * c.layers * model.context * c.kv_heads * row * model.max_sequences


def files_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) or 1


class Registry:
    def __init__(self, entries: list[Entry], budget: int, max_batch: int | None, max_queue: int):
        self.entries = {e.name: e for e in entries}
        self.budget, self.max_batch, self.max_queue = budget, max_batch, max_queue
        self._lock = asyncio.Lock()
        self.loads = self.unloads = 0
        self.started = int(time.time())

    @classmethod
    def of(cls, model: Model, name: str, max_batch: int | None = None, max_queue: int = 64) -> "Registry":
        """One model, already loaded: never unloaded."""
        api = Api(model, name, max_batch, max_queue)
        entry = Entry(name, lambda: model, model_bytes(model), api, footprint=model_bytes(model))
        return cls([entry], 1 << 62, max_batch, max_queue)

    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> Entry:
        e = self.entries.get(name)
        if e is None:
            raise ApiError(404, f"model {name!r} not found; this server serves {', '.join(self.entries)}", "model",
                           "not_found_error")
        return e

    async def acquire(self, name: str) -> Api:
        """The model's Api, loading it first if needed; held until `release`."""
        e = self.entry(name)
        while True:
            async with self._lock:
                if e.api is not None:
                    e.active += 1
                    e.last_used = time.monotonic()
                    return e.api
                if e.loading is None:
                    e.loading = asyncio.ensure_future(self._load(e))
                pending = e.loading
            await asyncio.shield(pending)  # then take it (or, if it was unloaded meanwhile, load it again)

    def release(self, api: Api) -> None:
        e = self.entries[api.name]
        e.active -= 1
        e.last_used = time.monotonic()

    async def _load(self, e: Entry) -> None:
        try:
            await self._make_room(e, e.estimate)
            model = await asyncio.to_thread(e.load)
            api = Api(model, e.name, self.max_batch, self.max_queue)
            async with self._lock:
                e.api, e.footprint = api, model_bytes(model)
                self.loads += 1
        except (ValueError, OSError, MemoryError) as ex:  # the next request tries again
            e.footprint = 0
            raise ApiError(500, f"model {e.name!r} could not be loaded: {ex}", "model", "server_error") from None
        except BaseException:
            e.footprint = 0
            raise
        finally:
            e.loading = None

    async def _make_room(self, e: Entry, need: int) -> None:
        if need > self.budget:
            raise ApiError(503, f"model {e.name!r} needs about {need / 2**30:.1f} GiB, more than the memory budget "
                                f"of {self.budget / 2**30:.1f} GiB (--max-memory)", "model", "server_error")
        while True:
            async with self._lock:  # the models loaded, and those loading, hold their footprints
                loaded = [x for x in self.entries.values() if x.footprint and x is not e]
                if sum(x.footprint for x in loaded) + need <= self.budget:
                    e.footprint = need
                    return
                idle = sorted((x for x in loaded if x.api is not None and x.active == 0), key=lambda x: x.last_used)
                victim = idle[0] if idle else None
                if victim is not None:
                    api, victim.api, victim.footprint = victim.api, None, 0
                    self.unloads += 1
            if victim is None:
                await asyncio.sleep(0.05)  # every loaded model is busy: wait for one to finish
                continue
            await asyncio.to_thread(_unload, api)

    def health(self) -> dict:
        return {name: e.state for name, e in self.entries.items()}

    def loaded(self) -> list[Api]:
        return [e.api for e in self.entries.values() if e.api is not None]

    def close(self) -> None:
        for e in self.entries.values():
            if e.api is not None:
                e.api.scheduler.close()


def _unload(api: Api) -> None:
    api.scheduler.close()
    api.scheduler = None
    api.model = None
    gc.collect()  # the engine's arrays and mapped files go now, not at some later collection
