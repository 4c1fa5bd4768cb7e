"""Per-request usage records (key, team, model, preset, status, tokens, cost, latency) and their writer.

The server never waits on the database for them: records go into a bounded queue that a background task
sends in batches to a helper process (``usage_sink``), which writes them. When the queue is full the oldest
records are dropped and counted (``dropped``, exported as a metric) rather than growing memory without bound.
A record may carry budget charges, added to ``budget_spend`` in the same transaction (used when holds live in
Redis, so the database stays the record of spend that Redis is seeded from).

Why a process and not a thread: on the gateway benchmark a writer thread cost the event loop as much CPU per
request as doing the inserts on the loop itself (the GIL changes hands at every statement, each time taken
from a busy loop); with a process the loop pays only for serialising each batch (bench/README.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..store.backends import Backend
from ..store.errors import LogError
from .ledger import add_spend
from .usage_sink import SinkProcess

__all__ = ["UsageRecord", "UsageWriter", "COLUMNS", "insert_usage", "insert_rows"]

log = logging.getLogger("polyfuse.gateway")

COLUMNS = (
    "created_at", "key_id", "team", "route", "model", "preset", "mode", "status", "error", "prompt_tokens",
    "completion_tokens", "cost", "cost_known", "latency", "cached", "run_uid",
)  # fmt: skip


@functools.lru_cache(maxsize=4)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def _stamp(at: float) -> str:
    """As store.records.now_iso; the formatted second is reused, the records of a batch share a few."""
    sec = int(at)
    return f"{_second(sec)}.{int((at - sec) * 1_000_000):06d}Z"


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


_INSERT = f"INSERT INTO api_usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def _charges(records: Sequence[UsageRecord]) -> list[tuple[str, str, float]]:
    """The budget charges of a batch, summed per (scope, period)."""
    total: dict[tuple[str, str], float] = {}
    for r in records:
        for scope, period, amount in r.charges:
            total[scope, period] = total.get((scope, period), 0.0) + amount
    return [(scope, period, amount) for (scope, period), amount in total.items()]


def insert_rows(
    backend: Backend, rows: Sequence[Sequence[Any]], charges: Sequence[Sequence[Any]] = ()
) -> int:
    """Write rows (``UsageRecord.values()``) and (scope, period, USD) charges in one transaction."""
    with backend.transaction(write=True) as tx:
        tx.execute_many(_INSERT, rows)
        for scope, period, amount in charges:
            if amount > 0:
                add_spend(tx, scope, period, amount)
    return len(rows)


def insert_usage(backend: Backend, records: Sequence[UsageRecord]) -> int:
    """Write records (and their budget charges) in one transaction; returns how many."""
    return insert_rows(backend, [r.values() for r in records], _charges(records))


class UsageWriter:
    """A bounded queue of usage records written in batches by one background task: it waits ``interval``
    seconds after the first record of a batch, so a busy server writes a few large transactions a second
    instead of one per request. The helper process is started with the first batch."""

    def __init__(
        self, backend: Backend, capacity: int = 10_000, batch: int = 1000, interval: float = 0.05
    ) -> None:
        self.backend = backend
        self.sink = SinkProcess(backend.reopen_spec(), backend.where)
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
            payload = orjson.dumps({"rows": [r.values() for r in batch], "charges": _charges(batch)})
            try:
                self.written += await self.sink.write(payload)
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
        await self.sink.aclose()
