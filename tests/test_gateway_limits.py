"""Rate limits and budget holds: the in-process limiter, the database ledger (SQLite and a real PostgreSQL
server) and the Redis store (a real redis-server started here), held to the same behaviour: exact counts
under concurrency, a Retry-After that is right, budgets that concurrent requests cannot overspend, and Redis
going away and coming back."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest

from polyfuse.gateway.errors import StoreDown
from polyfuse.gateway.ledger import DbBudget, LocalStore, period_of
from polyfuse.gateway.limits import Hold, MemoryWindows, Window
from polyfuse.gateway.redis_store import RedisStore, connect
from polyfuse.store import LogSettings, open_log
from redisserver import RedisServer


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def runlog(settings):
    with open_log(settings) as log:
        yield log


def _name() -> str:
    return uuid.uuid4().hex[:8]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the algorithm, with a clock we control -------------------------------------------------------------------------
def test_memory_window_slides_instead_of_resetting_at_the_minute():
    clock = Clock(1000.0)
    mw = MemoryWindows(clock)
    rpm = [Window("key:a:rpm", 3, 1)]
    assert mw.admit(rpm) is None  # t=1000
    clock.t = 1030.5
    assert mw.admit(rpm) is None
    assert mw.admit(rpm) is None
    clock.t = 1059.2
    refused = mw.admit(rpm)
    assert refused is not None and refused.name == "key:a:rpm"
    assert refused.retry_after == pytest.approx(
        1060 - 1059.2
    )  # the request at t=1000 leaves the window at 1060
    clock.t = 1060.0
    assert mw.admit(rpm) is None  # one slot came free, not three: a fixed window would give three
    assert mw.admit(rpm) is not None
    clock.t = 1091.0
    assert mw.admit(rpm) is None and mw.admit(rpm) is None and mw.admit(rpm) is not None


def test_memory_tokens_window_counts_amounts_and_a_refusal_takes_nothing():
    clock = Clock(0.0)
    mw = MemoryWindows(clock)
    both = [Window("k:rpm", 10, 1), Window("k:tpm", 100, 60)]
    assert mw.admit(both) is None
    refused = mw.admit(both)  # 120 tokens > 100: the tokens window refuses, the rpm window is not charged
    assert refused is not None and refused.name == "k:tpm"
    assert sum(mw.buckets["k:rpm"].values()) == 1
    mw.add([Window("k:tpm", 100, 30)])  # the reply had more tokens than counted at admission
    assert sum(mw.buckets["k:tpm"].values()) == 90
    assert mw.admit([Window("k:tpm", 100, 500)]) is not None  # capped at the limit, still over
    clock.t = 61.0
    assert (
        mw.admit([Window("k:tpm", 100, 500)]) is None
    )  # a request larger than the limit fits an empty window


def test_periods():
    now = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert period_of("month", now) == ("2026-12", 3600.0)
    assert period_of("day", now) == ("2026-12-31", 3600.0)
    assert period_of("week", now)[0] == "2026-W53"
    assert period_of("total", now) == ("total", None)


# -- shared stores: Redis and the local (process + database) store ---------------------------------------------------
@pytest.fixture(params=["redis", "local"])
async def store(request, tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        budget = DbBudget(log.backend, hold_ttl=900)
        if request.param == "redis":
            server = request.getfixturevalue("redis_server")
            s = RedisStore(connect(server.url, 1.0), budget.spent)
        else:
            s = LocalStore(budget)
        s.budget_db = budget
        yield s
        await s.aclose()


async def test_exactly_the_limit_is_admitted_from_a_concurrent_burst(store):
    rpm = [Window(f"key:{_name()}:rpm", 30, 1)]
    results = await asyncio.gather(*(store.admit(uuid.uuid4().hex, rpm, []) for _ in range(100)))
    refused = [r for r in results if r is not None]
    assert len(results) - len(refused) == 30
    assert all(r.kind == "rate" and 0 < r.retry_after <= 60 for r in refused)


async def test_a_team_window_limits_all_keys_together(store):
    team = f"team:{_name()}:rpm"
    outcomes = []
    for i in range(9):
        key = f"key:{i % 3}{_name()}:rpm"
        outcomes.append(await store.admit(uuid.uuid4().hex, [Window(key, 5, 1), Window(team, 4, 1)], []))
    assert [o is None for o in outcomes] == [True] * 4 + [False] * 5
    assert {o.name for o in outcomes[4:]} == {team}


async def test_concurrent_requests_cannot_overspend_a_budget(store):
    hold = Hold(f"key:{_name()}", "2026-11", budget=1.0, amount=0.1, ttl=3600)
    tickets = [uuid.uuid4().hex for _ in range(40)]
    results = await asyncio.gather(*(store.admit(t, [], [hold]) for t in tickets))
    admitted = [t for t, r in zip(tickets, results, strict=True) if r is None]
    assert len(admitted) == 10  # 10 x 0.1 fits 1.0; an 11th would overspend
    refusal = next(r for r in results if r is not None)
    assert refusal.kind == "budget" and refusal.held == pytest.approx(1.0) and refusal.spent == 0
    # settle: each really cost 0.05, so the budget frees up for 10 more at the 0.1 estimate... minus what was spent
    for t in admitted:
        pending = store.settle(t, [], [hold], [0.05])
        if pending is not None:
            await pending
    if isinstance(store, RedisStore):
        await store.flush()
    again = await asyncio.gather(*(store.admit(uuid.uuid4().hex, [], [hold]) for _ in range(20)))
    assert sum(r is None for r in again) == 5  # 0.5 spent; 5 holds of 0.1 fill the remaining 0.5


async def test_spend_recorded_in_the_database_seeds_the_budget(store):
    scope = f"team:{_name()}"
    with store.budget_db.backend.transaction(write=True) as tx:
        from polyfuse.gateway.ledger import add_spend

        add_spend(tx, scope, "2026-11", 0.7)
    hold = Hold(scope, "2026-11", budget=1.0, amount=0.2, ttl=3600)
    first = await store.admit(uuid.uuid4().hex, [], [hold])
    second = await store.admit(uuid.uuid4().hex, [], [hold])
    assert first is None
    assert second is not None and second.spent == pytest.approx(0.7) and second.held == pytest.approx(0.2)


async def test_ledger_on_both_databases_holds_budgets_across_threads(runlog):
    budget = DbBudget(runlog.backend, hold_ttl=900)
    hold = Hold("key:x", "2026-11", budget=0.5, amount=0.1, ttl=None)
    results = await asyncio.gather(*(asyncio.to_thread(budget.reserve, f"t{i}", [hold]) for i in range(12)))
    assert sum(r is None for r in results) == 5
    admitted = [f"t{i}" for i, r in enumerate(results) if r is None]
    budget.settle(admitted[0], [hold], [0.25])
    assert budget.spent("key:x", "2026-11") == pytest.approx(0.25)
    refused = budget.reserve("t99", [hold])  # 0.25 spent + 0.4 still held + 0.1 > 0.5
    assert refused is not None and refused.held == pytest.approx(0.4)


async def test_an_expired_hold_no_longer_counts(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        budget = DbBudget(log.backend, hold_ttl=-1)  # every hold has already expired when the next one comes
        hold = Hold("key:y", "total", budget=0.1, amount=0.1, ttl=None)
        assert budget.reserve("a", [hold]) is None
        assert budget.reserve("b", [hold]) is None


async def test_redis_down_raises_store_down_fast_and_recovers(redis_server):
    store = RedisStore(connect(redis_server.url, 0.5), lambda scope, period: 0.0, retry_after=0.3)
    rpm = [Window(f"key:{_name()}:rpm", 5, 1)]
    try:
        assert await store.admit("a", rpm, []) is None
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(StoreDown):
            await store.admit("b", rpm, [])
        with pytest.raises(StoreDown, match="waiting"):  # no new connection attempt while it is known down
            await store.admit("c", rpm, [])
        assert time.monotonic() - started < 0.5
        redis_server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await store.admit("d", rpm, []) is None
                break
            except StoreDown:
                assert time.monotonic() < deadline, "Redis did not come back"
                await asyncio.sleep(0.05)
    finally:
        if redis_server.proc is None:
            redis_server.start()
        await store.aclose()


def test_usage_batch_round_trips_every_value_on_both_databases(runlog):
    """The batch goes in as one JSON parameter: types, None, odd text and charges come out as they went in."""
    from polyfuse.gateway.ledger import DbBudget
    from polyfuse.gateway.usage import COLUMNS, UsageRecord, insert_usage

    odd = 'quote \' double " back \\ newline \n unicode é 漢 [1,2] {"a": 1}'
    records = [
        UsageRecord("chat", "up/fast", 200, "k1", "t1", preset="p", mode="best-of", prompt_tokens=12,
                    completion_tokens=3, cost=1.25e-07, cost_known=False, latency=0.0123, cached=True,
                    run_uid="r1", created_at="2026-11-24T10:00:00.000000Z", charges=(("key:k1", "2026-11", 0.5),)),
        UsageRecord("completions", odd, 429, error=odd, created_at="2026-11-24T10:00:01.000000Z",
                    charges=(("key:k1", "2026-11", 0.25),)),
    ]  # fmt: skip
    assert insert_usage(runlog.backend, records) == 2
    with runlog.backend.transaction(write=False) as tx:
        rows = tx.query(f"SELECT {', '.join(COLUMNS)} FROM api_usage ORDER BY created_at")
    assert DbBudget(runlog.backend, 60).spent("key:k1", "2026-11") == pytest.approx(0.75)
    assert [tuple(r) for r in rows] == [r.values() for r in records]
    assert isinstance(rows[0][COLUMNS.index("prompt_tokens")], int)
    assert isinstance(rows[0][COLUMNS.index("latency")], float)


@pytest.mark.parametrize("fault", ["raises", "short", "garbage"])
async def test_a_failed_admission_batch_fails_every_request_in_it_and_the_next_batch_works(
    redis_server, fault
):
    """A batch that goes wrong (an unexpected error, fewer replies than admissions, a reply that is not one)
    answers each waiting request with StoreDown, for the gateway's fail-open/closed policy: none hangs."""
    store = RedisStore(connect(redis_server.url, 1.0), lambda scope, period: 0.0)
    real = store._admit_call
    calls = 0

    async def broken(keys, args):
        nonlocal calls
        calls += 1
        if calls > 1:
            return await real(keys, args)
        if fault == "raises":
            raise RuntimeError("boom")
        replies = await real(keys, args)
        return replies[:-1] if fault == "short" else [[b"what"]] * len(replies)

    store._admit_call = broken
    rpm = [Window(f"key:{_name()}:rpm", 100, 1)]
    try:
        first = await asyncio.wait_for(
            asyncio.gather(*(store.admit(f"t{i}", rpm, []) for i in range(20)), return_exceptions=True), 5
        )
        assert all(isinstance(r, StoreDown) for r in first), first
        assert await asyncio.wait_for(store.admit("next", rpm, []), 5) is None
    finally:
        await store.aclose()


def test_without_hiredis_commands_are_packed_by_redis_py_the_same(monkeypatch):
    import hiredis

    from polyfuse.gateway.redis_store import _packer

    command = ("EVALSHA", "ab" * 20, 2, "polyfuse:rl:key:k:rpm", "ü", 900, 60, 1, -3)
    monkeypatch.setitem(sys.modules, "hiredis", None)  # as if the extra's hiredis were missing
    fallback = _packer()
    assert fallback is not hiredis.pack_command
    assert b"".join(fallback(command)) == hiredis.pack_command(command)
