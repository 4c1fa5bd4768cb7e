"""Dispatch: per-member timeout, quorum with straggler_grace, failures, and cancellation reaching every call."""

import asyncio
import time

import pytest

from conftest import picker
from polyfuse import FusionRequest, fuse
from polyfuse.errors import AllMembersFailedError, RateLimitedError, UpstreamError
from polyfuse.fusion.dispatch import Quorum
from polyfuse.fusion.engine import fuse_events
from polyfuse.testing import Reply, ScriptedModel, scripted_hub


def req(pool: str, mode: str = "best-of", **kw) -> FusionRequest:
    return FusionRequest.from_prompt("q?", pool, judge="scripted/judge", mode=mode, **kw)


@pytest.fixture
def models():
    return {
        "fast": ScriptedModel("fast", default=Reply("Paris", delay=0.01)),
        "fast2": ScriptedModel("fast2", default=Reply("Paris.", delay=0.02)),
        "slow": ScriptedModel("slow", default=Reply("Paris!", delay=0.3)),
        "hang": ScriptedModel("hang", default=Reply(hang=True)),
        "err": ScriptedModel("err", default=Reply(error=RateLimitedError("429 slow down", retry_after=3))),
        "empty": ScriptedModel("empty", default=""),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("Paris"))),
    }


def test_quorum_defaults():
    assert Quorum.resolve(5, None, None) == Quorum()
    assert Quorum.resolve(5, None, 2.0) == Quorum(3, 2.0)  # grace alone: majority
    assert Quorum.resolve(5, 2, None) == Quorum(2, 0.0)  # k alone: cut at once
    assert Quorum.resolve(2, 5, 1.0).min_responses == 2


async def test_members_start_at_once(models):
    start = time.perf_counter()
    await fuse(req("scripted/slow,scripted/slow,scripted/slow", mode="vote"), scripted_hub(models))
    assert time.perf_counter() - start < 0.3 * 2  # parallel, not 0.9s in sequence


async def test_error_timeout_and_empty_members_are_listed_and_the_run_answers(models):
    result = await fuse(
        req("scripted/fast,scripted/err,scripted/hang,scripted/empty", member_timeout=0.2),
        scripted_hub(models),
    )
    assert result.answer == "Paris"
    reasons = {f.member: (f.status, f.reason) for f in result.failed_models}
    assert reasons["scripted/err"] == ("failed", "429 slow down")
    assert reasons["scripted/hang"][0] == "timeout" and "0.2s" in reasons["scripted/hang"][1]
    assert reasons["scripted/empty"] == ("failed", "empty answer")
    assert models["hang"].active == 0 and models["hang"].cancelled == 1


async def test_straggler_grace_cuts_the_outlier_and_cancels_it(models):
    start = time.perf_counter()
    result = await fuse(
        req("scripted/fast,scripted/fast2,scripted/hang", min_responses=2, straggler_grace=0.05),
        scripted_hub(models),
    )
    wall = time.perf_counter() - start
    assert wall < 1.0  # did not wait for the hung member
    cut = [c for c in result.candidates if c.status == "cut"]
    assert [c.member for c in cut] == ["scripted/hang"]
    assert "straggler_grace" in cut[0].error
    assert models["hang"].active == 0 and models["hang"].cancelled == 1
    assert result.failed_models[0].status == "cut"


async def test_grace_lets_a_late_but_not_too_late_member_in(models):
    result = await fuse(
        req("scripted/fast,scripted/fast2,scripted/slow", min_responses=2, straggler_grace=2.0),
        scripted_hub(models),
    )
    assert all(c.ok for c in result.candidates)


async def test_all_members_failing_is_one_clear_error(models):
    with pytest.raises(AllMembersFailedError) as info:
        await fuse(req("scripted/err,scripted/empty"), scripted_hub(models))
    assert "all 2 pool members failed" in str(info.value)
    assert "429 slow down" in str(info.value) and "empty answer" in str(info.value)
    assert models["judge"].calls == []


async def test_cancelling_the_run_cancels_every_in_flight_call(models):
    models["slow"].default = Reply(hang=True)
    hub = scripted_hub(models)
    task = asyncio.create_task(fuse(req("scripted/hang,scripted/slow,scripted/fast"), hub))
    await asyncio.sleep(0.1)
    assert models["hang"].active == 1 and models["slow"].active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert models["hang"].active == 0 and models["slow"].active == 0
    assert models["hang"].cancelled == 1 and models["slow"].cancelled == 1


async def test_closing_the_event_stream_cancels_the_run(models):
    hub = scripted_hub(models)
    events = fuse_events(req("scripted/hang,scripted/fast"), hub)
    async for event in events:
        if event.type == "member_finished":
            break
    await events.aclose()
    assert models["hang"].active == 0 and models["hang"].cancelled == 1


async def test_judge_failure_inside_a_cancelled_run_leaves_nothing_running(models):
    models["judge"].default = Reply(hang=True)
    task = asyncio.create_task(fuse(req("scripted/fast,scripted/fast2"), scripted_hub(models)))
    await asyncio.sleep(0.1)
    assert models["judge"].active == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert models["judge"].active == 0


async def test_error_mid_run_is_recorded_with_its_reason(models):
    models["err"].default = Reply(error=UpstreamError("upstream 502"))
    result = await fuse(req("scripted/fast,scripted/err"), scripted_hub(models))
    assert [(f.member, f.reason) for f in result.failed_models] == [("scripted/err", "upstream 502")]
