"""The MCP tools' arguments and results as pydantic models: their JSON schemas are what ``tools/list`` shows,
and the same models validate every call (unknown arguments and wrong types are refused with one clear line).

``analysis_of`` is the one place a fusion result becomes the advisors' analysis that ``consult`` returns; a
richer judge analysis plugs in there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..code.review import ReviewComment, ReviewResult
from ..types import FusionResult

__all__ = [
    "Advice",
    "Analysis",
    "ConsultArgs",
    "ConsultOutput",
    "FuseArgs",
    "FuseOutput",
    "MemberOutcome",
    "ReviewArgs",
    "ReviewOutput",
    "analysis_of",
    "argument_error",
    "member_outcomes",
]

MAX_PROMPT = 100_000  # characters
MAX_DIFF = 400_000
MAX_ID = 500
Mode = Literal["best-of", "merge", "debate", "vote"]
Severity = Literal["low", "medium", "high", "critical"]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # a number is not a prompt; no unknown arguments


class FuseArgs(_Args):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT, description="The question or task for the pool.")
    preset: str | None = Field(None, max_length=100, description="Preset of pool and judge (default preset).")
    mode: Mode | None = Field(None, description="How the judge fuses: best-of, merge, debate or vote.")
    pool: list[str] | None = Field(
        None, min_length=1, max_length=16, description="Model ids to ask instead of the preset's pool."
    )
    judge: str | None = Field(None, max_length=MAX_ID, description="Judge model id instead of the preset's.")


class ConsultArgs(_Args):
    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT, description="The question to put to the advisors."
    )
    preset: str | None = Field(None, max_length=100, description="Preset of advisors and judge.")


class ReviewArgs(_Args):
    diff: str | None = Field(
        None, max_length=MAX_DIFF, description="A unified diff to review (instead of diffing against base)."
    )
    base: str | None = Field(
        None, max_length=200, description="Branch, tag or commit of the server's repository to diff against."
    )
    min_agreement: int | None = Field(
        None, ge=1, le=64, description="Keep a comment only when this many reviewers raised it."
    )
    min_severity: Severity | None = Field(None, description="Leave out comments below this severity.")
    max_comments: int | None = Field(None, ge=0, le=1000, description="At most this many comments.")
    preset: str | None = Field(None, max_length=100, description="Preset of reviewers and judge.")


def argument_error(tool: str, exc: ValidationError) -> str:
    """One line that names the argument and what is wrong with it."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "arguments"
    got = type(err.get("input")).__name__
    if err["type"] == "extra_forbidden":
        known = ", ".join(_MODELS[tool].model_fields)
        return f"{tool}: unknown argument '{where}' (arguments: {known})"
    if err["type"] == "missing":
        return f"{tool}: argument '{where}' is required"
    return f"{tool}: argument '{where}': {err['msg']} (got {got})"


class MemberOutcome(BaseModel):
    member: str
    model: str
    status: str
    latency: float
    cost: float | None = None
    completion_tokens: int = 0
    error: str | None = None


def member_outcomes(result: FusionResult) -> list[MemberOutcome]:
    return [
        MemberOutcome(
            member=c.member,
            model=c.model,
            status=c.status,
            latency=round(c.latency, 3),
            cost=c.cost,
            completion_tokens=c.usage.completion_tokens,
            error=c.error,
        )
        for c in result.candidates
    ]


class VerdictSummary(BaseModel):
    judge: str | None
    choice: str | None
    consensus: list[str]
    contradictions: list[str]
    judge_agreement: float
    judge_failed: bool
    failure_reason: str | None = None
    skipped: bool = False


class FuseOutput(BaseModel):
    answer: str
    mode: str
    verdict: VerdictSummary
    agreement: float = Field(
        description="How much the pool's answers agree, measured from the answers (0-1)."
    )
    members: list[MemberOutcome]
    failed_models: list[str]
    cost: float
    cost_known: bool
    wall_time: float


def fuse_output(result: FusionResult) -> FuseOutput:
    v = result.verdict
    return FuseOutput(
        answer=result.answer,
        mode=result.mode,
        verdict=VerdictSummary(
            judge=v.judge,
            choice=v.choice,
            consensus=v.consensus,
            contradictions=v.contradictions,
            judge_agreement=v.agreement,
            judge_failed=v.judge_failed,
            failure_reason=v.failure_reason,
            skipped=v.skipped,
        ),
        agreement=result.agreement,
        members=member_outcomes(result),
        failed_models=[f"{f.member}: {f.reason}" for f in result.failed_models],
        cost=result.cost,
        cost_known=result.cost_known,
        wall_time=round(result.wall_time, 3),
    )


class Advice(BaseModel):
    member: str
    model: str
    answer: str
    judge_score: float | None = None
    judge_note: str | None = None


class Analysis(BaseModel):
    """What the panel agrees and disagrees on, without a final answer: the calling agent decides."""

    consensus: list[str] = Field(default_factory=list)
    contradictions: list[str] = Field(default_factory=list)
    unique_points: list[str] = Field(default_factory=list)
    agreement: float = Field(0.0, description="Agreement measured from the answers (0-1).")
    judge: str | None = None
    judge_failed: str | None = None


def analysis_of(result: FusionResult) -> tuple[list[Advice], Analysis]:
    """The advisors' answers and the panel analysis of one fusion run (its choice and answer are not used).

    Today this reads the verdict's consensus, contradictions and per-candidate reasons; unique points stay
    empty until the judge reports them."""
    v = result.verdict
    scores = {s.member: s for s in v.scores}
    advice = [
        Advice(
            member=c.member,
            model=c.model,
            answer=c.text,
            judge_score=scores[c.member].score if c.member in scores else None,
            judge_note=(scores[c.member].reason or None) if c.member in scores else None,
        )
        for c in result.candidates
        if c.ok
    ]
    failed = v.failure_reason if v.judge_failed else None
    return advice, Analysis(
        consensus=v.consensus,
        contradictions=v.contradictions,
        agreement=result.agreement,
        judge=v.judge,
        judge_failed=failed,
    )


class ConsultOutput(BaseModel):
    advisors: list[Advice]
    analysis: Analysis
    members: list[MemberOutcome]
    failed_models: list[str]
    cost: float
    wall_time: float


class CommentOutput(BaseModel):
    file: str
    line: int
    severity: str
    category: str
    message: str
    suggestion: str
    raised_by: list[str]
    disagreement: str | None = None


def _comment(c: ReviewComment) -> CommentOutput:
    return CommentOutput(**c.to_dict())


class ReviewOutput(BaseModel):
    base: str
    comments: list[CommentOutput] = Field(description="Comments at least min_agreement reviewers raised.")
    disputed: list[CommentOutput] = Field(description="Comments fewer reviewers raised, reported apart.")
    min_agreement: int
    below_severity: int
    over_limit: int
    reviewers: list[str]
    ignored_files: list[str]
    agreement: float
    cost: float


def review_output(r: ReviewResult) -> ReviewOutput:
    return ReviewOutput(
        base=r.base,
        comments=[_comment(c) for c in r.comments],
        disputed=[_comment(c) for c in r.disputed],
        min_agreement=r.options.min_agreement,
        below_severity=r.filtered,
        over_limit=r.over_limit,
        reviewers=r.reviewers,
        ignored_files=r.ignored,
        agreement=r.fusion.agreement,
        cost=r.fusion.cost,
    )


_MODELS: dict[str, type[_Args]] = {"fuse": FuseArgs, "consult": ConsultArgs, "review_diff": ReviewArgs}
