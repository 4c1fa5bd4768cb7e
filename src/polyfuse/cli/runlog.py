"""Opening the run log for a CLI command: before any model is called, with a hint how to skip it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..config import Config
from ..redaction import Redact
from ..store import LogError, RunLog, open_log

__all__ = ["opened_log"]


@contextmanager
def opened_log(cfg: Config, no_log: bool, redact: Redact | None = None) -> Iterator[RunLog | None]:
    """The run log (None when disabled), opened before the run so a broken log is refused before any model
    is called. ``redact`` (the provider keys in use) applies to every text it stores."""
    if no_log or not cfg.log.enabled:
        yield None
        return
    try:
        runlog = open_log(cfg.log, redact=redact)
    except LogError as exc:
        raise type(exc)(f"{exc} (or skip the log: --no-log)") from None
    with runlog:
        yield runlog
