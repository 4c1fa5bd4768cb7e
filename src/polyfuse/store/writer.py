"""A bounded write queue in front of a run log, drained in batches by one thread.

For a server: ``submit`` never waits on the database (it takes a lock held only for list operations), so a
slow disk, a locked SQLite file or an unreachable PostgreSQL server cannot stall the event loop, and memory
stays bounded: at most ``max_runs`` pending runs holding at most ``max_chars`` characters of text. When a new
run does not fit, the oldest pending ones are folded into a ``DroppedRuns`` summary (constant size) which is
written with the next batch, so the gap shows in the log. A batch that fails to write is summarised the same
way. Counters for ``/health`` come from ``stats()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .dropped import DroppedRuns
from .errors import LogError
from .log import RunLog
from .records import RunRecord, now_iso

__all__ = ["LogWriter", "WriterStats", "record_chars"]

_log = logging.getLogger("polyfuse.store")

QUEUE_FULL = "the write queue was full"


@dataclass(frozen=True)
class WriterStats:
    pending: int  # runs waiting to be written
    pending_chars: int
    written: int  # runs written since start
    dropped: int  # runs not recorded since start (queue full, or their write failed)
    write_errors: int  # failed batch writes
    max_runs: int
    max_chars: int
    last_error: str | None


def record_chars(r: RunRecord) -> int:
    """About how much text a pending record holds (what the queue's character bound counts)."""
    size = 1024 + sum(len(t) for t in (r.prompt, r.answer, r.error) if t)
    for c in r.candidates:
        size += 256 + len(c.text or "") + len(c.error or "")
    return size


class LogWriter:
    """``submit(record)`` from any thread; ``close()`` writes what is pending (within a deadline) and stops."""

    def __init__(
        self,
        log: RunLog,
        *,
        max_runs: int = 1000,
        max_chars: int = 32_000_000,
        batch: int = 128,
        linger: float = 0.05,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log
        self.max_runs, self.max_chars, self.batch, self.linger = max_runs, max_chars, batch, linger
        self._on_error = on_error or (lambda message: _log.warning("%s", message))
        self._cond = threading.Condition()
        self._pending: deque[tuple[RunRecord, int]] = deque()
        self._chars = 0
        self._summary: DroppedRuns | None = None  # dropped runs not yet written to the log
        self._closing = False
        self._written = self._dropped = self._errors = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="polyfuse-run-log", daemon=True)
        self._thread.start()

    def submit(self, record: RunRecord) -> None:
        """Queue a record; never waits for the database. When the queue is full the oldest are dropped."""
        size = record_chars(record)
        with self._cond:
            if self._closing:
                self._drop([record], "the server was shutting down")
                return
            self._pending.append((record, size))
            self._chars += size
            overflow: list[RunRecord] = []
            while len(self._pending) > self.max_runs or (self._chars > self.max_chars and self._pending):
                old, old_size = self._pending.popleft()
                self._chars -= old_size
                overflow.append(old)
            if overflow:
                self._drop(overflow, QUEUE_FULL)
            if len(self._pending) in (1, self.batch):  # wake the writer only when it has a reason to run
                self._cond.notify()

    def lost(self, reason: str) -> None:
        """Count a run whose record could not even be built (it shows in the summary like a dropped one)."""
        now = now_iso()
        with self._cond:
            self._summary = DroppedRuns(first_at=now, last_at=now, runs=1, reasons=[reason[:200]]).merged(
                self._summary
            )
            self._dropped += 1
            self._cond.notify()

    def _drop(self, records: list[RunRecord], reason: str) -> None:
        """Fold records into the pending summary (caller holds the lock)."""
        if not records:
            return
        self._summary = DroppedRuns.of(records, reason).merged(self._summary)
        self._dropped += len(records)

    def stats(self) -> WriterStats:
        with self._cond:
            return WriterStats(
                pending=len(self._pending),
                pending_chars=self._chars,
                written=self._written,
                dropped=self._dropped,
                write_errors=self._errors,
                max_runs=self.max_runs,
                max_chars=self.max_chars,
                last_error=self._last_error,
            )

    # -- the writer thread ----------------------------------------------------------------------------------------
    def _take(self) -> tuple[list[RunRecord], DroppedRuns | None] | None:
        """The next batch and summary to write; None once closing and nothing is left."""
        with self._cond:
            while not self._pending and self._summary is None:
                if self._closing:
                    return None
                self._cond.wait()
            if len(self._pending) < self.batch and not self._closing:
                # a short wait gathers a batch: one transaction for many runs instead of one each
                self._cond.wait_for(lambda: len(self._pending) >= self.batch or self._closing, self.linger)
            n = min(self.batch, len(self._pending))
            taken = [self._pending.popleft() for _ in range(n)]
            self._chars -= sum(size for _, size in taken)
            summary, self._summary = self._summary, None
            return [r for r, _ in taken], summary

    def _run(self) -> None:
        failures = 0
        while (work := self._take()) is not None:
            records, summary = work
            try:
                self.log.insert_many(records, dropped=summary)
            except LogError as exc:
                failures += 1
                message = f"could not record {len(records)} run(s) in the run log {self.log.where}: {exc}"
                with self._cond:
                    self._errors += 1
                    self._last_error = str(exc)
                    if summary is not None:
                        self._summary = summary.merged(self._summary)
                    self._drop(records, f"writing to the run log failed: {exc}")
                self._on_error(message)
                if self._closing:  # no retries at shutdown: what is left is counted, not written
                    with self._cond:
                        self._drop([r for r, _ in self._pending], "the server was shutting down")
                        self._pending.clear()
                        self._chars = 0
                    return
                self._pause(min(5.0, 0.1 * 2**failures))  # a database that is down is not hammered
            else:
                failures = 0
                with self._cond:
                    self._written += len(records)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._closing and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is pending and stop; True when everything was written (or summarised) in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            left = self.stats()
            self._on_error(
                f"the run log {self.log.where} did not take the last {left.pending} run(s) within {timeout:g} s; "
                "they are not recorded"
            )
            return False
        return True
