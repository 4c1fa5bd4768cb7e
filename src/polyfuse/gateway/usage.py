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
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..store.backends import Backend
from ..store.errors import LogError
from .ledger import add_spend

__all__ = ["UsageRecord", "UsageWriter", "COLUMNS", "insert_usage"]

log = logging.getLogger("polyfuse.gateway")

COLUMNS = (
    "created_at", "key_id", "team", "route", "model", "preset", "mode", "status", "error", "prompt_tokens",
    "completion_tokens", "cost", "cost_known", "latency", "cached", "run_uid",
)  # fmt: skip


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as store.records.now_iso


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
    at: float = field(default_factory=time.time)  # formatted in the writer thread, off the request path
    created_at: str | None = None
    charges: tuple[tuple[str, str, float], ...] = ()  # (scope, period, USD) to add to budget_spend

    def values(self) -> tuple[Any, ...]:
        created = self.created_at or _stamp(self.at)
        return (
            created, self.key_id, self.team, self.route, self.model, self.preset, self.mode,
            self.status, self.error, self.prompt_tokens, self.completion_tokens, self.cost,
            int(self.cost_known), self.latency, int(self.cached), self.run_uid,
        )  # fmt: skip


def insert_usage(backend: Backend, records: Sequence[UsageRecord]) -> int:
    """Write records (and their budget charges) in one transaction; returns how many."""
    marks = ", ".join("?" * len(COLUMNS))
    sql = f"INSERT INTO api_usage ({', '.join(COLUMNS)}) VALUES ({marks})"
    rows = [r.values() for r in records]
    charges: dict[tuple[str, str], float] = {}
    for r in records:
        for scope, period, amount in r.charges:
            charges[scope, period] = charges.get((scope, period), 0.0) + amount
    with backend.transaction(write=True) as tx:
        tx.execute_many(sql, rows)
        for (scope, period), amount in charges.items():
            if amount > 0:
                add_spend(tx, scope, period, amount)
    return len(rows)


class UsageWriter:
    """A bounded queue of usage records written in batches by one background task: it waits ``interval``
    seconds after the first record of a batch, so a busy server writes a few large transactions a second
    instead of one per request."""

    def __init__(
        self, backend: Backend, capacity: int = 10_000, batch: int = 1000, interval: float = 0.05
    ) -> None:
        self.backend = backend
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.queue: deque[UsageRecord] = deque()
        self.dropped = 0
        self.written = 0
        self._wake = asyncio.Event()
        self._closing = False
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
        while not self._closing:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(self.interval)  # let a batch gather
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
        """Write what is queued (a batch being written is finished, never abandoned), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()
