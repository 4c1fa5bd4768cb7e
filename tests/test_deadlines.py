"""The server's coarse deadlines behave like asyncio.timeout: a passed deadline is a TimeoutError, an outside
cancellation stays a cancellation, and nothing is left watched afterwards."""

from __future__ import annotations

import asyncio

import pytest

from polyfuse.server.deadlines import Deadlines


async def test_a_passed_deadline_is_a_timeout_error():
    d = Deadlines(tick=0.02)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError), d.until(loop.time() + 0.05):
        await asyncio.sleep(5)
    with d.until(loop.time() + 5):  # not passed: nothing happens
        await asyncio.sleep(0.05)
    with d.until(None):
        await asyncio.sleep(0)
    assert not d._due and not d._fired
    await asyncio.sleep(0.05)
    assert d._timer is None  # it stops ticking when nothing is watched


async def test_an_outside_cancellation_is_not_turned_into_a_timeout():
    d = Deadlines(tick=0.02)

    async def work() -> None:
        with d.until(asyncio.get_running_loop().time() + 10):
            await asyncio.sleep(5)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not d._due


async def test_many_watched_tasks_share_one_timer():
    d = Deadlines(tick=0.02)
    loop = asyncio.get_running_loop()

    async def one(delay: float) -> str:
        try:
            with d.until(loop.time() + 1.0):  # a wide margin: a loaded machine can stall the loop 100 ms
                await asyncio.sleep(delay)
            return "done"
        except TimeoutError:
            return "timeout"

    results = await asyncio.wait_for(asyncio.gather(*(one(0.01 if i % 2 else 30.0) for i in range(200))), 10)
    assert results.count("done") == 100 and results.count("timeout") == 100
