"""Progress events a fusion run emits, for live CLI progress, SSE streams and the web panel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..types import Candidate, FusionResult, Verdict

__all__ = ["EventType", "FusionEvent", "EventSink", "null_sink"]

EventType = Literal[
    "run_started",  # data: mode, judge, members {id: model}
    "round_started",  # round
    "member_started",  # member, model, round
    "member_delta",  # member, round, text
    "member_finished",  # candidate (status ok)
    "member_failed",  # candidate (failed / timeout / cut)
    "candidate_checked",  # candidate with its checks (status ok, or rejected)
    "judge_started",  # model, data: attempt
    "judge_delta",  # raw judge text as it streams
    "judge_finished",  # model, data: latency, ok
    "verdict",  # verdict
    "answer_delta",  # text of the fused answer as it streams
    "answer_reset",  # the streamed answer is withdrawn (judge failed mid-answer); data: reason
    "done",  # result
]


@dataclass(slots=True)
class FusionEvent:
    type: EventType
    member: str | None = None
    model: str | None = None
    round: int = 0
    text: str | None = None
    candidate: Candidate | None = None
    verdict: Verdict | None = None
    result: FusionResult | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used by the server's progress events)."""
        out: dict[str, Any] = {"type": self.type, "round": self.round}
        for key in ("member", "model", "text"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.candidate is not None:
            out["candidate"] = self.candidate.model_dump(mode="json")
        if self.verdict is not None:
            out["verdict"] = self.verdict.model_dump(mode="json")
        if self.result is not None:
            out["result"] = self.result.model_dump(mode="json")
        if self.data:
            out["data"] = self.data
        return out


EventSink = Callable[[FusionEvent], None]


def null_sink(event: FusionEvent) -> None:
    """Discard events (the default when nobody listens)."""
