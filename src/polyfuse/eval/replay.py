"""Reuse one item's first-round answers across every fusion mode.

Each item's pool is called once. Every mode (and each single-model arm) then sees the *same* candidates, so
the comparison is paired: when best-of is right and merge is wrong on an item, it is the judges that differ,
not the luck of sampling. The cache holds finished completions (and provider errors) keyed by the model, the
messages and the sampling parameters; debate revisions and judge calls have other messages and go live.

The cache for the item being evaluated is carried in a context variable, so items evaluated concurrently
never see each other's entries; tasks the engine starts inherit it.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..errors import ProviderError, UpstreamError
from ..providers.base import ChatModel, Delta, MemberSpec, StreamEvent
from ..providers.registry import ProviderHub
from ..types import Completion, GenerationParams, Message

__all__ = ["CallCache", "ReplayModel", "PREFIX", "install", "replay_pool", "current_cache"]

PREFIX = "replay"
current_cache: contextvars.ContextVar[CallCache | None] = contextvars.ContextVar(
    "polyfuse_eval_cache", default=None
)


class CallCache:
    """Completed calls of one item: key -> {"completion": {...}} or {"error": "..."}. JSON-ready, so the
    results file can keep it and a resumed evaluation replays exactly what the first one saw."""

    def __init__(self, entries: dict[str, dict[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = dict(entries or {})
        self.hits = 0

    @staticmethod
    def key(model_id: str, messages: Sequence[Message], params: GenerationParams) -> str:
        payload = {
            "model": model_id,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "params": params.model_dump(exclude_none=True),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def lookup(self, key: str) -> Completion | ProviderError | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.hits += 1
        if "error" in entry:
            return UpstreamError(str(entry["error"]))
        return Completion.model_validate(entry["completion"])

    def store(self, key: str, outcome: Completion | ProviderError) -> None:
        if isinstance(outcome, Completion):
            self.entries[key] = {"completion": outcome.model_dump(mode="json")}
        else:
            self.entries[key] = {"error": str(outcome)}


class ReplayModel(ChatModel):
    """Wraps a real model: answers from the current item's cache when it holds this exact call, else calls the
    model and remembers the outcome. Timeouts and cancellations are not remembered (the next mode retries)."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.id = inner.id
        self.kind = inner.kind
        self.supports_json_schema = inner.supports_json_schema

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        cache = current_cache.get()
        key = CallCache.key(self.inner.id, messages, params)
        hit = cache.lookup(key) if cache is not None else None
        if isinstance(hit, ProviderError):
            raise hit
        if hit is not None:
            if hit.text:
                yield Delta(hit.text)
            yield hit
            return
        final: Completion | None = None
        try:
            async for event in self.inner.stream(messages, params):
                if isinstance(event, Completion):
                    final = event
                yield event
        except ProviderError as exc:
            if cache is not None:
                cache.store(key, exc)
            raise
        if final is not None and cache is not None:
            cache.store(key, final)


def install(hub: ProviderHub) -> None:
    """Make ``replay/<model id>`` resolve to the real model behind a replaying wrapper."""
    hub.register(PREFIX, lambda name, h: ReplayModel(h.model(name)))


def replay_pool(pool: Sequence[MemberSpec]) -> list[MemberSpec]:
    """The same members (ids and options), each resolved through the replaying wrapper."""
    return [MemberSpec(model=f"{PREFIX}/{s.model}", id=s.id, params=dict(s.params)) for s in pool]
