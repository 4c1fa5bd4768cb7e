"""What a request asks of the shared counters, what a refusal says, and the in-process limiter.

A limit is a sliding window of 60 one-second buckets: a request is admitted when the units used in the last 60
seconds plus its own fit under the limit. Unlike a fixed window it cannot let 2x through around a minute
boundary, and unlike a log of timestamps its memory is bounded (60 counters per key). The Redis limiter
(``redis_store``) runs the same algorithm in a Lua script; ``MemoryLimiter`` runs it in this process, for
servers without Redis (limits then hold per worker process).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Window", "Hold", "Refusal", "SharedStore", "MemoryWindows", "WINDOW_SECONDS"]

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Window:
    """One limit on one scope: ``name`` is e.g. ``key:key_ab12:rpm``; ``amount`` the units this request takes."""

    name: str
    limit: int
    amount: int


@dataclass(frozen=True, slots=True)
class Hold:
    """A budget reservation: ``amount`` USD held against ``scope`` (``key:<id>`` or ``team:<name>``) in the
    budget ``period`` (``2026-11``) until the request settles; ``ttl`` is the seconds left in that period."""

    scope: str
    period: str
    budget: float
    amount: float
    ttl: float | None


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: Literal["rate", "budget", "unavailable"]
    name: str  # the window or budget scope that refused
    retry_after: float | None = None
    spent: float | None = None
    held: float | None = None
    budget: float | None = None
    amount: float | None = None


class SharedStore(Protocol):
    """Where limits and budget holds are counted: Redis (all instances) or this process plus the database."""

    per_process: bool

    async def admit(self, ticket: str, windows: Sequence[Window], holds: Sequence[Hold]) -> Refusal | None:
        """Check every window and hold; if all fit, take them all at once, else take nothing."""
        ...

    def settle(
        self, ticket: str, extra: Sequence[Window], holds: Sequence[Hold], charges: Sequence[float]
    ) -> Awaitable[None] | None:
        """Release the request's holds, charging each scope its real cost, and add ``extra`` units (tokens
        that turned out larger than counted at admission). Queued at once; returns the work still to await
        (a database write), or None."""
        ...

    async def aclose(self) -> None: ...


class MemoryWindows:
    """The sliding windows of one process. Calls are synchronous, so on one event loop check-then-take is
    atomic without a lock."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.buckets: dict[str, dict[int, int]] = {}

    def _used(self, name: str, sec: int) -> tuple[int, dict[int, int]]:
        buckets = self.buckets.get(name)
        if not buckets:
            return 0, {}
        for stale in [s for s in buckets if s <= sec - WINDOW_SECONDS]:
            del buckets[stale]
        return sum(buckets.values()), buckets

    def check(self, windows: Sequence[Window]) -> Refusal | None:
        now = self.clock()
        sec = int(now)
        for w in windows:
            used, buckets = self._used(w.name, sec)
            amount = min(w.amount, w.limit)
            if used + amount > w.limit:
                excess, wait = used + amount - w.limit, float(WINDOW_SECONDS)
                for s in sorted(buckets):
                    excess -= buckets[s]
                    if excess <= 0:
                        wait = s + WINDOW_SECONDS - now
                        break
                return Refusal("rate", w.name, retry_after=max(wait, 0.0))
        return None

    def take(self, windows: Sequence[Window]) -> int:
        """Count the request in every window; returns the bucket (second) used, for ``untake``."""
        sec = int(self.clock())
        for w in windows:
            amount = min(w.amount, w.limit)
            if amount:
                buckets = self.buckets.setdefault(w.name, {})
                buckets[sec] = buckets.get(sec, 0) + amount
        return sec

    def untake(self, windows: Sequence[Window], sec: int) -> None:
        """Undo ``take`` (a budget refused the request after its windows admitted it)."""
        for w in windows:
            buckets = self.buckets.get(w.name, {})
            if sec in buckets:
                buckets[sec] -= min(w.amount, w.limit)
                if buckets[sec] <= 0:
                    del buckets[sec]

    def add(self, windows: Sequence[Window]) -> None:
        """Units learned after admission (a reply's tokens), without a check."""
        sec = int(self.clock())
        for w in windows:
            if w.amount > 0:
                buckets = self.buckets.setdefault(w.name, {})
                buckets[sec] = buckets.get(sec, 0) + w.amount

    def admit(self, windows: Sequence[Window]) -> Refusal | None:
        refusal = self.check(windows)
        if refusal is None:
            self.take(windows)
        return refusal
