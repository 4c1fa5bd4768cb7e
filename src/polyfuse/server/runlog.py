"""Recording the server's finished fusions in the run log without making the event loop wait on a database."""

from __future__ import annotations

import asyncio
import logging

from ..fusion.request import FusionRequest
from ..store import RunLog
from ..types import FusionResult

__all__ = ["RunLogHook"]

log = logging.getLogger("polyfuse.server")


class RunLogHook:
    """A result hook: each finished fusion is written from a worker thread (``RunLog.arecord``). A failing
    write is logged, never turned into an error for the client who already has the answer."""

    def __init__(self, run_log: RunLog) -> None:
        self.run_log = run_log
        self.pending: set[asyncio.Task[int]] = set()

    def __call__(self, request: FusionRequest, result: FusionResult) -> None:
        task = asyncio.get_running_loop().create_task(self.run_log.arecord(request, result, source="server"))
        self.pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[int]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not record a run in the run log %s: %s", self.run_log.where, task.exception())

    async def aclose(self) -> None:
        """Finish the writes under way, then close the log (at server shutdown)."""
        await asyncio.gather(*self.pending, return_exceptions=True)
        self.run_log.close()
