"""Plain data passed between layers: messages, completions, candidates, verdicts and results.

All are pydantic models so every result serialises to JSON the same way for the CLI, the server and the log.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Message",
    "Usage",
    "GenerationParams",
    "Completion",
    "CandidateStatus",
    "Check",
    "Candidate",
    "CandidateScore",
    "Verdict",
    "FailedModel",
    "FusionResult",
]

Role = Literal["system", "user", "assistant", "tool"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # the upstream reported no usage; counts are estimated from the text

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            estimated=self.estimated or other.estimated,
        )


class GenerationParams(_Strict):
    """Sampling options passed to a model. ``json_schema`` asks for structured output where supported."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None

    def merged(self, **overrides: Any) -> GenerationParams:
        """A copy where every non-None override wins."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return GenerationParams(**data)


class Completion(_Strict):
    """One finished model call."""

    text: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: float | None = None
    model: str = ""
    latency: float = 0.0
    ttft: float | None = None
    tool_calls: list[dict[str, Any]] | None = None


CandidateStatus = Literal["ok", "failed", "timeout", "cut", "cancelled", "rejected"]


class Check(_Strict):
    """One execution-grounded check of a candidate (parses, applies, passes tests, ...)."""

    name: str
    passed: bool
    detail: str = ""
    seconds: float = 0.0
    sandbox: str | None = None  # which sandbox ran the code ("bwrap", "landlock (weak)"); None: nothing ran


class Candidate(_Strict):
    """One pool member's answer (or failure) in one round."""

    member: str  # unique member id, e.g. "local/smollm2-135m#2"
    model: str  # the model that really answered
    text: str = ""
    status: CandidateStatus = "ok"
    error: str | None = None
    latency: float = 0.0
    ttft: float | None = None
    usage: Usage = Field(default_factory=Usage)
    cost: float | None = None
    round: int = 0
    tool_calls: list[dict[str, Any]] | None = None
    checks: list[Check] = Field(default_factory=list)  # filled by a screen; status "rejected" if one failed

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class CandidateScore(_Strict):
    member: str
    label: str
    score: float
    reason: str = ""


class Verdict(_Strict):
    """What the judge (or the vote) decided, and why."""

    judge: str | None = None  # judge model, None when no judge call was made
    scores: list[CandidateScore] = Field(default_factory=list)
    consensus: list[str] = Field(default_factory=list)
    contradictions: list[str] = Field(default_factory=list)
    choice: str | None = None  # member id chosen (best-of, vote)
    agreement: float = 0.0
    judge_failed: bool = False
    failure_reason: str | None = None
    skipped: bool = False  # judge skipped because the pool agreed
    labels: dict[str, str] = Field(default_factory=dict)  # anonymous label -> member id


class FailedModel(_Strict):
    member: str
    model: str
    status: CandidateStatus
    reason: str


class FusionResult(_Strict):
    answer: str
    mode: str
    candidates: list[Candidate]
    verdict: Verdict
    agreement: float
    failed_models: list[FailedModel] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cost: float = 0.0
    cost_known: bool = True  # False when some call had no price
    wall_time: float = 0.0
    critical_path: float = 0.0  # slowest counted member per phase + judge calls
    overhead: float = 0.0  # wall_time - critical_path
    judge_calls: list[Completion] = Field(default_factory=list)
    rounds: list[list[Candidate]] = Field(default_factory=list)  # debate history, one list per round
    tool_calls: list[dict[str, Any]] | None = None

    @property
    def judge_failed(self) -> bool:
        return self.verdict.judge_failed

    def to_json(self, **kw: Any) -> str:
        return self.model_dump_json(**kw)
