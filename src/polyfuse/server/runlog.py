"""Recording the server's finished fusions in the run log without making the event loop wait on a database.

Each finished fusion becomes a record right away (texts redacted with the server's keys and capped, so the
request and result objects are not kept) and goes to a bounded write queue drained in batches by one thread
(``LogWriter``). A slow or locked database costs dropped runs, counted in ``/health`` and summarised in the
log, never memory or latency.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..fusion.request import FusionRequest
from ..redaction import Redact
from ..store import LogSettings, LogWriter, RunLog
from ..types import FusionResult
from .schemas import RunLogHealth

__all__ = ["RunLogHook"]

log = logging.getLogger("polyfuse.server")

_WARN_EVERY = 10.0  # seconds between two warnings about dropped runs


class RunLogHook:
    """A result hook; ``aclose()`` at shutdown writes what is pending (within a deadline) and closes the log."""

    def __init__(self, run_log: RunLog, redact: Redact, settings: LogSettings | None = None) -> None:
        settings = settings or LogSettings()
        self.run_log = run_log
        self.redact = redact
        self.writer = LogWriter(
            run_log,
            max_runs=settings.queue_runs,
            max_chars=settings.queue_chars,
            on_error=lambda message: log.warning("%s", self.redact(message)),
        )
        self._dropped_seen = 0
        self._warned_at = float("-inf")

    def __call__(self, request: FusionRequest, result: FusionResult) -> None:
        try:
            record = self.run_log.build(request, result, source="server", redact=self.redact)
        except (
            ValueError
        ) as exc:  # pydantic's ValidationError: the client has its answer; the log loses one run
            log.warning("could not build the run log record of a fusion: %s", self.redact(str(exc)))
            self.writer.lost(f"its record could not be built: {type(exc).__name__}")
        else:
            self.writer.submit(record)
        self._warn_about_drops()

    def _warn_about_drops(self) -> None:
        dropped = self.writer.stats().dropped
        if dropped > self._dropped_seen and time.monotonic() - self._warned_at > _WARN_EVERY:
            log.warning(
                "run log %s: %d run(s) not recorded so far (the database does not keep up; see /health)",
                self.run_log.where,
                dropped,
            )
            self._dropped_seen, self._warned_at = dropped, time.monotonic()

    def health(self) -> RunLogHealth:
        s = self.writer.stats()
        return RunLogHealth(
            pending=s.pending,
            written=s.written,
            dropped=s.dropped,
            write_errors=s.write_errors,
            queue_runs=s.max_runs,
        )

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write what is pending, then close the log (at server shutdown). A database that does not take the
        rest in time is left to the process's exit rather than closed under the writer."""
        if await asyncio.to_thread(self.writer.close, timeout):
            self.run_log.close()
