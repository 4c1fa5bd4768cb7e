"""The hub's caches are bounded (evicted sessions closed, even one evicted mid-call once the call ends), and
one retry policy governs every call: jittered exponential backoff, Retry-After, a total deadline, the cause
kept."""

from __future__ import annotations

import asyncio
import time

import pytest

from polyfuse.config import Config
from polyfuse.errors import ProviderTimeoutError, RateLimitedError, UpstreamError
from polyfuse.providers.registry import ProviderHub
from polyfuse.providers.retry import RetryPolicy
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from polyfuse.types import GenerationParams, Message

MSGS = [Message(role="user", content="hi")]


@pytest.fixture
def upstream():
    with FakeUpstream({"ok": Behaviour(text="fine"), "slow": Behaviour(text="late", latency=0.5)}) as up:
        yield up


async def test_the_upstream_cache_is_bounded_and_evicted_sessions_are_closed(upstream):
    # before: one session per distinct base URL, never evicted (10,000 URLs: 62 -> 220 MB, 10,016 fds)
    hub = ProviderHub.from_config(Config(), env={})
    hub.max_upstreams = 8
    async with hub:
        sessions = []
        for i in range(40):
            model = hub.model(f"{upstream.base_url}/u{i}#ok")
            assert (await model.complete(MSGS, GenerationParams())).text == "fine"
            sessions.append(model.upstream._session or model.upstream)
            assert hub.open_sessions() <= 8
        await asyncio.sleep(0.1)  # evicted sessions close in the background
        assert len(hub._upstreams) == 8 and hub.open_sessions() == 8
        closed = [s for s in sessions[:32] if getattr(s, "closed", True)]
        assert len(closed) == 32
    assert len(upstream.requests) == 40


async def test_an_upstream_evicted_mid_call_finishes_the_call_then_closes(upstream):
    hub = ProviderHub.from_config(Config(), env={})
    hub.max_upstreams = 2
    async with hub:
        slow = hub.model(f"{upstream.base_url}/first#slow")
        call = asyncio.create_task(slow.complete(MSGS, GenerationParams()))
        await asyncio.sleep(0.2)
        for i in range(3):  # push the first upstream out while its call is in flight
            await hub.model(f"{upstream.base_url}/other{i}#ok").complete(MSGS, GenerationParams())
        assert slow.upstream.is_open  # still in use
        assert (await call).text == "late"
        await asyncio.sleep(0.05)
        assert not slow.upstream.is_open
        assert hub.open_sessions() == 2


def test_the_model_cache_is_bounded():
    hub = ProviderHub.from_config(Config(), env={"OPENAI_API_KEY": "k"})
    hub.max_models = 16
    for i in range(100):
        hub.model(f"openai/model-{i}")
    assert len(hub._models) == 16 and "openai/model-99" in hub._models


async def test_the_deadline_cuts_retries_short_and_keeps_the_cause(upstream):
    upstream.behaviours["busy"] = Behaviour(statuses=[429] * 10, retry_after="5")
    upstream.behaviours["slowest"] = Behaviour(hang=True)
    hub = ProviderHub.from_config(
        Config.model_validate(
            {"providers": {"up": {"base_url": upstream.base_url, "max_retries": 5, "total_timeout": 2}}}
        ),
        env={},
    )
    async with hub:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="deadline of 2s") as info:
            await hub.model("up/busy").complete(MSGS, GenerationParams())
        assert time.monotonic() - started < 1.5  # a 5 s Retry-After would pass the deadline: not waited for
        assert isinstance(info.value.__cause__, RateLimitedError)
        with pytest.raises(
            ProviderTimeoutError
        ):  # a hanging attempt is cut at the deadline too, streamed or not
            async for _ in hub.model("up/slowest").stream(MSGS, GenerationParams()):
                pass
    assert len([r for r in upstream.requests if r["model"] == "busy"]) == 1


def test_backoff_is_exponential_jittered_and_honours_retry_after():
    policy = RetryPolicy(max_retries=5, initial_delay=0.5, max_delay=8.0)
    state = policy.start()
    err = UpstreamError("x")
    delays = []
    for attempt in range(6):
        state.attempt = attempt
        delays.append(state.delay(err))
    for attempt, delay in enumerate(delays):
        full = min(0.5 * 2**attempt, 8.0)
        assert 0.75 * full <= delay <= full
    assert len({round(d, 6) for d in (state.delay(err) for _ in range(20))}) > 1  # jittered
    assert state.delay(RateLimitedError("x", retry_after=3.0)) == 3.0
    assert state.delay(RateLimitedError("x", retry_after=600.0)) <= 8.0  # an absurd Retry-After is not obeyed


async def test_streaming_and_non_streaming_calls_share_the_policy(upstream):
    upstream.behaviours["flaky"] = Behaviour(text="recovered", statuses=[503, 503, 503, 503], retry_after="0")
    hub = ProviderHub.from_config(
        Config.model_validate({"providers": {"up": {"base_url": upstream.base_url, "max_retries": 1}}}),
        env={},
    )
    async with hub:
        with pytest.raises(UpstreamError, match="HTTP 503"):
            await hub.model("up/flaky").complete(MSGS, GenerationParams())
        with pytest.raises(UpstreamError, match="HTTP 503"):
            async for _ in hub.model("up/flaky").stream(MSGS, GenerationParams()):
                pass
    assert len([r for r in upstream.requests if r["model"] == "flaky"]) == 4  # 1 + 1 retry, each way


async def test_hub_headers_go_on_every_upstream_call(upstream):
    hub = ProviderHub.from_config(Config(), env={}, headers={"x-polyfuse-depth": "3"})
    async with hub:
        await hub.model(f"{upstream.base_url}#ok").complete(MSGS, GenerationParams())
    assert upstream.headers[-1]["x-polyfuse-depth"] == "3"
