"""The gateway as the server uses it, on a real SQLite log and a real redis-server: who is calling, the key's
allow-list, limits and budgets with their refusals, the fail-open/closed policy with Redis stopped, settlement
into usage records and spend, the response cache, and the Prometheus metrics parsed back."""

from __future__ import annotations

import asyncio

import pytest

from polyfuse.gateway.cache import ResponseCache, cache_key, deterministic
from polyfuse.gateway.errors import (
    BudgetExhausted,
    GatewayUnavailable,
    LimitExceeded,
    NotAllowed,
    PriceUnknown,
    Unauthenticated,
)
from polyfuse.gateway.ledger import DbBudget, period_of
from polyfuse.gateway.metrics import Metrics, sum_samples
from polyfuse.gateway.redis_store import RedisStore, connect
from polyfuse.gateway.report import usage_report
from polyfuse.gateway.service import Demand, Gateway
from polyfuse.gateway.settings import CacheSettings, GatewaySettings, TeamSettings
from polyfuse.gateway.usage import UsageRecord
from polyfuse.store import LogSettings, open_log
from polyfuse.types import Usage
from redisserver import RedisServer

OPERATOR_KEY = "sk-operator-0123456789"


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


def _settings(redis_url: str | None = None, **kw) -> GatewaySettings:
    teams = {"research": TeamSettings(rpm=5, budget=1.0), "platform": TeamSettings()}
    return GatewaySettings(keys=True, metrics=True, redis_url=redis_url, teams=teams, **kw)


@pytest.fixture(params=["redis", "local"])
async def env(request, tmp_path):
    """A gateway over a fresh log (and, for 'redis', a flushed Redis), with its key store."""
    url = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        client = connect(server.url, 1.0)
        await client.flushdb()
        await client.aclose()
        url = server.url
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        gw = Gateway.build(_settings(url), log.backend, frozenset({OPERATOR_KEY}))
        yield gw, log
        await gw.aclose()


def _demand(models=("up/fast",), preset=None, tokens=10, estimate=0.1) -> Demand:
    return Demand(tuple(models), preset, tokens, estimate)


def _key(gw: Gateway, team: str = "platform", **kw):
    record, secret = gw.keys.store.create(team, **kw)
    gw.keys.refresh()
    return gw.authenticate(f"Bearer {secret}"), secret


async def test_authentication(env):
    gw, _ = env
    assert gw.authenticate(f"Bearer {OPERATOR_KEY}").admin
    principal, secret = _key(gw, name="ana")
    assert principal.key.name == "ana" and not principal.admin
    for header in (None, "", "Bearer", f"Basic {secret}", f"Bearer {secret}x", "Bearer sk-operator"):
        with pytest.raises(Unauthenticated):
            gw.authenticate(header)
    gw.keys.store.revoke(principal.key.id)
    gw.keys.refresh()
    with pytest.raises(Unauthenticated):
        gw.authenticate(f"Bearer {secret}")
    assert gw.may_read_metrics(f"Bearer {OPERATOR_KEY}") and not gw.may_read_metrics(f"Bearer {secret}")


async def test_allow_lists(env):
    gw, _ = env
    principal, _ = _key(gw, models=("openai/*", "local/smollm2-*"), presets=("budget",))
    gw.check_allowed(principal, _demand(["openai/gpt-4o", "local/smollm2-135m"], preset="budget"))
    with pytest.raises(NotAllowed, match="model 'local/gemma3-270m'"):
        gw.check_allowed(principal, _demand(["openai/gpt-4o", "local/gemma3-270m"]))
    with pytest.raises(NotAllowed, match="preset 'quality'"):
        gw.check_allowed(principal, _demand(["openai/gpt-4o"], preset="quality"))
    gw.check_allowed(gw.authenticate(f"Bearer {OPERATOR_KEY}"), _demand(["anything/at-all"], preset="x"))


async def test_key_and_team_limits_and_retry_after(env):
    gw, _ = env
    principal, _ = _key(gw, team="research", rpm=3)
    for _ in range(3):
        await gw.admit(principal, _demand(estimate=0))
    with pytest.raises(LimitExceeded, match="key requests-per-minute") as err:
        await gw.admit(principal, _demand(estimate=0))
    assert 55 < err.value.retry_after <= 60
    other, _ = _key(gw, team="research")  # the team allows 5 a minute across its keys: 3 used already
    await gw.admit(other, _demand(estimate=0))
    await gw.admit(other, _demand(estimate=0))
    with pytest.raises(LimitExceeded, match="team requests-per-minute"):
        await gw.admit(other, _demand(estimate=0))
    operator = gw.authenticate(f"Bearer {OPERATOR_KEY}")
    for _ in range(10):  # operators are never limited
        await gw.admit(operator, _demand())
    assert sum_samples(gw.metrics.render().decode(), "polyfuse_refusals_total", reason="rate") == 2


async def test_budget_holds_settle_into_spend_and_refuse_with_402(env):
    gw, log = env
    principal, _ = _key(gw, budget=0.25)
    tickets = await asyncio.gather(*(gw.admit(principal, _demand(estimate=0.1)) for _ in range(2)))
    with pytest.raises(BudgetExhausted) as err:
        await gw.admit(principal, _demand(estimate=0.1))
    assert err.value.metadata["held"] == pytest.approx(0.2) and err.value.metadata["budget"] == 0.25
    for t in tickets:  # each really cost 0.02
        record = UsageRecord("chat", "up/fast", 200, cost=0.02, prompt_tokens=10)
        gw.finish(principal, t, record, Usage(prompt_tokens=10))
    await gw.aclose()  # flush settlements and usage records
    scope, period = f"key:{principal.key.id}", period_of("month")[0]
    assert DbBudget(log.backend, 900).spent(scope, period) == pytest.approx(0.04)
    [row] = usage_report(log.backend, "key")
    assert (row.group, row.requests, row.cost) == (principal.key.id, 2, pytest.approx(0.04))
    with pytest.raises(PriceUnknown, match="no price"):
        gw._plan(principal, _demand(estimate=None))
    free, _ = _key(gw)  # no budget anywhere: an unknown price is fine
    assert gw._plan(free, _demand(estimate=None))[0].holds == []


async def test_team_budget_is_shared(env):
    gw, _ = env
    a, _ = _key(gw, team="research")
    b, _ = _key(gw, team="research")
    await gw.admit(a, _demand(estimate=0.6))
    with pytest.raises(BudgetExhausted, match="team budget"):
        await gw.admit(b, _demand(estimate=0.6))
    await gw.admit(b, _demand(estimate=0.3))


@pytest.mark.parametrize(
    ("policy", "budget_key", "expect"),
    [
        ({}, True, "refused"),  # default: budgets fail closed ...
        ({}, False, "admitted"),  # ... rate limits fail open
        ({"budgets_when_redis_down": "open"}, True, "admitted"),
        ({"limits_when_redis_down": "closed"}, False, "refused"),
    ],
)
async def test_redis_down_policy(tmp_path, redis_server, policy, budget_key, expect):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        gw = Gateway.build(_settings(redis_server.url, **policy), log.backend, frozenset())
        kw = {"budget": 5.0} if budget_key else {"rpm": 100}
        principal, _ = _key(gw, **kw)
        await gw.admit(principal, _demand())
        redis_server.stop()
        try:
            if expect == "refused":
                with pytest.raises(GatewayUnavailable) as err:
                    await gw.admit(principal, _demand())
                assert err.value.retry_after > 0
            else:
                ticket = await gw.admit(principal, _demand())
                assert not ticket.reserved
                gw.finish(principal, ticket, UsageRecord("chat", "up/fast", 200, cost=0.05))
            assert sum_samples(gw.metrics.render().decode(), "polyfuse_shared_store_errors_total") == 1
        finally:
            redis_server.start()
            await gw.aclose()
        if expect == "admitted" and budget_key:  # the database still learned what it cost
            assert DbBudget(log.backend, 900).spent(f"key:{principal.key.id}", period_of("month")[0]) == 0.05


async def test_response_cache(redis_server):
    store = RedisStore(connect(redis_server.url, 1.0), lambda s, p: 0.0)
    cache = ResponseCache(store, CacheSettings(enabled=True, ttl=60, max_entries=3, max_entry_bytes=2048))
    try:
        keys = [cache_key("fusion", f'{{"n": {i}}}') for i in range(5)]
        assert keys[0] != cache_key("single", '{"n": 0}')
        for i, k in enumerate(keys):
            assert await cache.put(k, f"body {i}".encode())
        assert [await cache.get(k) for k in keys] == [None, None, b"body 2", b"body 3", b"body 4"]
        assert not await cache.put(cache_key("fusion", "big"), b"x" * 4096)
        assert await store.client.ttl(keys[4]) > 50
        redis_server.stop()
        assert await cache.get(keys[4]) is None  # down: a miss, not an error
        assert not await cache.put(keys[4], b"again")
    finally:
        redis_server.start()
        await store.aclose()
    assert deterministic(0, None) and deterministic(0.7, 3) and not deterministic(None, None)


def test_metrics_exposition_parses():
    from polyfuse.types import Candidate, FusionResult, Verdict

    m = Metrics()
    m.request("chat", 200, "up/fast", "-", "single", 0.01)
    m.request("chat", 200, "up/fast", "-", "single", 0.02)
    m.request("chat", 429, "-", "-", "-", 0.001)
    result = FusionResult(
        answer="x",
        mode="best-of",
        candidates=[
            Candidate(
                member="a",
                model="up/a",
                latency=0.2,
                usage=Usage(prompt_tokens=3, completion_tokens=4),
                cost=0.5,
            ),
            Candidate(member="b", model="up/b", status="timeout", error="slow"),
        ],
        verdict=Verdict(judge_failed=True),
        agreement=1.0,
    )
    m.fusion(result, "key_1", "research")
    text = m.render().decode()
    assert sum_samples(text, "polyfuse_requests_total", status="200", model="up/fast") == 2
    assert sum_samples(text, "polyfuse_requests_total") == 3
    assert sum_samples(text, "polyfuse_request_duration_seconds_count", route="chat") == 3
    assert sum_samples(text, "polyfuse_member_failures_total", model="up/b", reason="timeout") == 1
    assert sum_samples(text, "polyfuse_judge_fallbacks_total", mode="best-of") == 1
    assert sum_samples(text, "polyfuse_tokens_total", key="key_1", type="completion") == 4
    assert sum_samples(text, "polyfuse_cost_usd_total", team="research", model="up/a") == 0.5
    assert sum_samples(text, "polyfuse_member_duration_seconds_count", model="up/a") == 1
    m.queue("usage", 3, 5)  # drops are totals since start: the counter takes what is new
    m.queue("usage", 1, 7)
    m.queue("usage", 1, 7)
    m.queue("runs", 0, 0)
    text = m.render().decode()
    assert sum_samples(text, "polyfuse_write_queue_depth", queue="usage") == 1
    assert sum_samples(text, "polyfuse_write_queue_dropped_total", queue="usage") == 7
    assert sum_samples(text, "polyfuse_write_queue_dropped_total", queue="runs") == 0
