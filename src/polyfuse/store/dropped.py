"""A summary of runs that were not recorded: how many, when, what they cost and why they were dropped.

The server's write queue keeps at most a bounded number of pending runs; when it is full the oldest are
folded into one ``DroppedRuns`` (constant size, however many it counts) that is stored in their place, so a
gap in the log is visible in ``polyfuse log list`` and ``polyfuse log stats`` rather than silent.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .records import RunRecord, now_iso

__all__ = ["DroppedRuns"]

_MAX_REASONS = 4
_MAX_SOURCES = 8


class DroppedRuns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    recorded_at: str = Field(default_factory=now_iso)
    first_at: str
    last_at: str
    runs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    sources: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, records: list[RunRecord], reason: str) -> DroppedRuns:
        times = [r.created_at for r in records] or [now_iso()]
        return cls(
            first_at=min(times),
            last_at=max(times),
            runs=len(records),
            prompt_tokens=sum(r.prompt_tokens for r in records),
            completion_tokens=sum(r.completion_tokens for r in records),
            cost=sum(r.cost for r in records),
            sources=list(dict.fromkeys(r.source for r in records))[:_MAX_SOURCES],
            reasons=[reason[:200]],
        )

    def merged(self, other: DroppedRuns | None) -> DroppedRuns:
        """One summary counting both (a few distinct reasons and sources kept, so its size stays bounded)."""
        if other is None:
            return self
        return DroppedRuns(
            first_at=min(self.first_at, other.first_at),
            last_at=max(self.last_at, other.last_at),
            runs=self.runs + other.runs,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=self.cost + other.cost,
            sources=list(dict.fromkeys([*self.sources, *other.sources]))[:_MAX_SOURCES],
            reasons=list(dict.fromkeys([*self.reasons, *other.reasons]))[:_MAX_REASONS],
        )

    def describe(self) -> str:
        """One line for a terminal."""
        span = self.first_at[:19].replace("T", " ")
        if self.last_at[:19] != self.first_at[:19]:
            span += " to " + self.last_at[:19].replace("T", " ")
        return f"{self.runs} run(s) not recorded ({span} UTC): {'; '.join(self.reasons)}"
