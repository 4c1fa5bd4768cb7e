"""Editor suggestions in the run log: each inline completion an editor was given, and whether the user took it.

The language server records a suggestion when it answers (``record_suggestion``) and marks it accepted when the
editor runs the item's ``polyfuse.accepted`` command (``record_acceptance``). ``suggestion_stats`` gives, per
model and mode, what Gemini Code Assist reports to admins as ``code_suggestions_accepted_count``: suggestions
shown, accepted, the acceptance rate and the median latency. Modes: ``single`` (a pool of one), ``fast`` (the
first candidate of a pool that passed its checks) and ``fused`` (the fusion's answer, served on a later request
at the same position): the real-world answer to "does fusion pay" for completion.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass, field
from typing import Any

from .filters import LogFilter, _escape_like
from .log import RunLog
from .records import now_iso

__all__ = ["Suggestion", "SuggestionStats", "record_suggestion", "record_acceptance", "suggestion_stats"]

_COLUMNS = ("uid", "created_at", "source", "run", "mode", "model", "member", "latency", "accepted_at")


@dataclass(frozen=True)
class Suggestion:
    run: str  # the completion's id (also the ``completion`` key of its fusion run's meta)
    mode: str  # single, fast or fused
    model: str
    member: str
    latency: float  # seconds from the editor's request to the answer
    source: str = "lsp"
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=now_iso)
    accepted_at: str | None = None


def record_suggestion(log: RunLog, s: Suggestion) -> None:
    """Store a suggestion the editor was given (a uid already stored is left as it is)."""
    values = (
        s.uid,
        s.created_at,
        s.source,
        s.run,
        s.mode,
        s.model,
        s.member,
        round(s.latency, 6),
        s.accepted_at,
    )
    marks = ", ".join("?" * len(_COLUMNS))
    with log.backend.transaction(write=True) as tx:
        tx.query(
            f"INSERT INTO suggestions ({', '.join(_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (uid) DO NOTHING RETURNING id",
            values,
        )


def record_acceptance(log: RunLog, uid: str) -> bool:
    """Mark a suggestion accepted; False when no suggestion has that uid (or it was accepted already)."""
    with log.backend.transaction(write=True) as tx:
        rows = tx.query(
            "UPDATE suggestions SET accepted_at = ? WHERE uid = ? AND accepted_at IS NULL RETURNING id",
            (now_iso(), uid),
        )
    return bool(rows)


@dataclass
class SuggestionStats:
    model: str
    mode: str
    shown: int = 0
    accepted: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float | None:
        return self.accepted / self.shown if self.shown else None

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "mode": self.mode,
            "shown": self.shown,
            "accepted": self.accepted,
            "acceptance_rate": None if self.rate is None else round(self.rate, 4),
            "median_latency": None if self.median_latency is None else round(self.median_latency, 4),
        }


def _where(f: LogFilter) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    for cond, value in (
        ("mode = ?", f.mode),
        ("source = ?", f.source),
        ("created_at >= ?", f.since),
        ("created_at < ?", f.until),
    ):
        if value is not None:
            conds.append(cond)
            params.append(value)
    if f.model is not None:
        conds.append("model LIKE ? ESCAPE '\\'")
        params.append("%" + _escape_like(f.model) + "%")
    return ("WHERE " + " AND ".join(conds) if conds else ""), params


def suggestion_stats(log: RunLog, where: LogFilter | None = None) -> list[SuggestionStats]:
    """Per (model, mode): shown, accepted, rate, median latency; most shown first. The filter's model, mode,
    source and dates apply (mode here is single, fast or fused)."""
    clause, params = _where(where or LogFilter())
    with log.backend.transaction(write=False) as tx:
        rows = tx.query(f"SELECT model, mode, latency, accepted_at FROM suggestions {clause}", params)
    table: dict[tuple[str, str], SuggestionStats] = {}
    for model, mode, latency, accepted_at in rows:
        s = table.setdefault((str(model), str(mode)), SuggestionStats(str(model), str(mode)))
        s.shown += 1
        s.accepted += accepted_at is not None
        s.latencies.append(float(latency))
    return sorted(table.values(), key=lambda s: (-s.shown, s.model, s.mode))
