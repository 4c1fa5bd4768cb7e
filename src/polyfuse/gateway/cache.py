"""The exact-match response cache, in Redis: the same deterministic request gets the same answer for free.

Only deterministic requests are cached (the client asked for temperature 0 or gave a seed). The key is a
SHA-256 of the normalised request: for a fusion the resolved ``FusionRequest`` (messages, pool members with
their options, judge, mode, rounds, every parameter; so a preset edited on the server is a different key),
for a pass-through the model, its fallbacks, messages and parameters. Entries live ``ttl`` seconds; an index
(a sorted set by insertion time) keeps at most ``max_entries``, evicting the oldest, and a response larger
than ``max_entry_bytes`` is not stored. Redis being down is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .errors import StoreDown
from .redis_store import PREFIX, RedisStore
from .settings import CacheSettings

__all__ = ["ResponseCache", "cache_key", "deterministic"]

_INDEX = PREFIX + "cache:index"

_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), KEYS[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
return 1
"""


def deterministic(temperature: float | None, seed: int | None) -> bool:
    return temperature == 0 or seed is not None


def cache_key(kind: str, normalised: str) -> str:
    """``kind`` ("fusion" or "single") plus the normalised request as canonical JSON."""
    return f"{PREFIX}cache:{kind}:" + hashlib.sha256(normalised.encode()).hexdigest()


class ResponseCache:
    """get/put of whole response bodies; shares the Redis client and its down-detection with the limits."""

    def __init__(self, store: RedisStore, settings: CacheSettings) -> None:
        self.store = store
        self.settings = settings
        self._put = store.client.register_script(_PUT)

    async def get(self, key: str) -> bytes | None:
        if self.store.down:
            return None
        try:
            value: Any = await self.store.client.get(key)
        except self.store.errors as exc:
            self.store.failed(exc)
            return None
        return bytes(value) if value is not None else None

    async def put(self, key: str, body: bytes) -> bool:
        """Store a response; False when it is too large or Redis is down."""
        if len(body) > self.settings.max_entry_bytes:
            return False
        try:
            await self.store.call(
                self._put, [key, _INDEX], [body, self.settings.ttl, time.time(), self.settings.max_entries]
            )
        except StoreDown:
            return False
        return True
