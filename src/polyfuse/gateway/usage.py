"""Per-request usage records (key, team, model, preset, status, tokens, cost, latency) and their writer.

The server never waits on the database for them: records go into a bounded queue that a background task
writes in batches from a worker thread. When the queue is full the oldest records are dropped and counted
(``dropped``, exported as a metric) rather than growing memory without bound. A record may carry budget
charges, added to ``budget_spend`` in the same transaction (used when holds live in Redis, so the database
stays the record of spend that Redis is seeded from).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..store.backends import Backend
from ..store.errors import LogError
from ..store.records import now_iso
from .ledger import add_spend

__all__ = ["UsageRecord", "UsageWriter", "COLUMNS"]

log = logging.getLogger("polyfuse.gateway")

COLUMNS = (
    "created_at", "key_id", "team", "route", "model", "preset", "mode", "status", "error", "prompt_tokens",
    "completion_tokens", "cost", "cost_known", "latency", "cached", "run_uid",
)  # fmt: skip


@dataclass(slots=True)
class UsageRecord:
    route: str
    model: str
    status: int
    key_id: str | None = None
    team: str | None = None
    preset: str | None = None
    mode: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    latency: float = 0.0
    cached: bool = False
    run_uid: str | None = None
    created_at: str = field(default_factory=now_iso)
    charges: tuple[tuple[str, str, float], ...] = ()  # (scope, period, USD) to add to budget_spend

    def values(self) -> tuple[Any, ...]:
        return (
            self.created_at, self.key_id, self.team, self.route, self.model, self.preset, self.mode,
            self.status, self.error, self.prompt_tokens, self.completion_tokens, self.cost,
            int(self.cost_known), self.latency, int(self.cached), self.run_uid,
        )  # fmt: skip


def insert_usage(backend: Backend, records: Iterable[UsageRecord]) -> int:
    """Write records (and their budget charges) in one transaction; returns how many."""
    marks = ", ".join("?" * len(COLUMNS))
    sql = f"INSERT INTO api_usage ({', '.join(COLUMNS)}) VALUES ({marks})"
    count = 0
    with backend.transaction(write=True) as tx:
        for r in records:
            tx.execute(sql, r.values())
            for scope, period, amount in r.charges:
                if amount > 0:
                    add_spend(tx, scope, period, amount)
            count += 1
    return count


class UsageWriter:
    """A bounded queue of usage records written in batches by one background task."""

    def __init__(self, backend: Backend, capacity: int = 10_000, batch: int = 500) -> None:
        self.backend = backend
        self.capacity = capacity
        self.batch = batch
        self.queue: deque[UsageRecord] = deque()
        self.dropped = 0
        self.written = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self.queue)

    def add(self, record: UsageRecord) -> None:
        if len(self.queue) >= self.capacity:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(record)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
            try:
                self.written += await asyncio.to_thread(insert_usage, self.backend, batch)
            except LogError as exc:
                self.dropped += len(batch)
                log.warning(
                    "could not write %d usage record(s) to %s: %s", len(batch), self.backend.where, exc
                )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
