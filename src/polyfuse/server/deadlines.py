"""Coarse deadlines for many concurrent requests at the cost of a dict entry each.

``asyncio.timeout`` arms and cancels a timer per use; on the pass-through's hot path (once per request, and once
per chunk of a stream) that cost was measurable. Here one timer per event loop, ticking only while something is
watched, cancels the tasks whose deadline passed; ``with deadlines.until(when):`` turns that cancellation into
``TimeoutError`` exactly as ``asyncio.timeout`` does. Resolution: ``tick`` seconds (ample for deadlines of tens
of seconds).
"""

from __future__ import annotations

import asyncio

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(self, tick: float = 0.1) -> None:
        self.tick = tick
        self._due: dict[asyncio.Task[object], float] = {}
        self._fired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def until(self, when: float | None) -> _Watch:
        """A context manager: the enclosed code is cancelled (``TimeoutError``) once loop time passes ``when``."""
        return _Watch(self, when)

    def _watch(self, task: asyncio.Task[object], when: float) -> None:
        self._due[task] = when
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, when in list(self._due.items()):
            if when <= now:
                del self._due[task]
                self._fired.add(task)
                task.cancel()
        self._timer = loop.call_later(self.tick, self._check) if self._due else None


class _Watch:
    __slots__ = ("deadlines", "when", "task")

    def __init__(self, deadlines: Deadlines, when: float | None) -> None:
        self.deadlines = deadlines
        self.when = when
        self.task: asyncio.Task[object] | None = None

    def __enter__(self) -> None:
        if self.when is not None:
            self.task = asyncio.current_task()
            assert self.task is not None
            self.deadlines._watch(self.task, self.when)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        task = self.task
        if task is None:
            return
        d = self.deadlines
        d._due.pop(task, None)
        if task in d._fired:
            d._fired.discard(task)
            if task.uncancel() == 0 and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
