"""What the run log stores for one fusion run, built from a FusionRequest and its FusionResult (or error).

With ``store_text=False`` every text (prompt, answer, candidates, the judge's reasons) is replaced by its
SHA-256 hash, so a shared log can count and compare runs without holding anyone's prompts. Every text that is
kept passes the log's ``TextPolicy`` (known keys redacted, size capped).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import AllMembersFailedError, NoSurvivorsError
from ..fusion.request import FusionRequest
from ..fusion.strategies.debate import ROUND0
from ..types import Candidate, Completion, FusionResult
from .text import TextPolicy

__all__ = ["CandidateRecord", "RunRecord", "build_record", "build_error_record", "text_hash", "now_iso"]


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def now_iso() -> str:
    """UTC, fixed width, so ISO strings sort and compare as times in both SQLite and PostgreSQL."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CandidateRecord(BaseModel):
    """One model call of a run: a pool member's answer in one round, or a judge call."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["member", "judge"] = "member"
    member: str
    model: str  # the model id as configured (what filters and stats use)
    answered_by: str | None = None  # the model the upstream says answered, when it differs (fallback routing)
    round: int = 0
    status: str = "ok"
    text: str | None = None
    text_hash: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    latency: float = 0.0
    ttft: float | None = None
    error: str | None = None
    chosen: bool = False  # the judge (or the vote) picked this candidate's text as the answer
    score: float | None = None  # the judge's score for it, when it gave one


class RunRecord(BaseModel):
    """One fusion run as logged. ``id`` is the log's own number; ``uid`` survives export and import."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    uid: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = Field(default_factory=now_iso)
    source: str = "code"
    mode: str
    judge: str | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    prompt: str | None = None
    prompt_hash: str | None = None
    answer: str | None = None
    answer_hash: str | None = None
    agreement: float | None = None
    verdict: dict[str, Any] | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    wall_time: float = 0.0
    overhead: float = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)
    candidates: list[CandidateRecord] = Field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """Distinct pool models, in order of appearance."""
        return list(dict.fromkeys(c.model for c in self.candidates if c.role == "member"))

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _prompt_text(request: FusionRequest) -> str:
    return "\n\n".join(f"[{m.role}] {m.content or ''}" for m in request.messages)


def _request_summary(request: FusionRequest) -> dict[str, Any]:
    """Everything about the request except the message texts (those go to ``prompt``)."""
    return {
        "pool": [{"id": s.id, "model": s.model, "params": dict(s.params)} for s in request.pool],
        "judge": request.judge,
        "mode": request.mode,
        "rounds": request.rounds,
        "params": request.params.model_dump(exclude_none=True, exclude={"json_schema", "tools"}),
        "judge_params": request.judge_params.model_dump(exclude_none=True, exclude={"json_schema", "tools"}),
        "member_timeout": request.member_timeout,
        "min_responses": request.min_responses,
        "straggler_grace": request.straggler_grace,
        "skip_judge_on_consensus": request.skip_judge_on_consensus,
        "max_cost": request.max_cost,
        "messages": len(request.messages),
    }


def _candidate(
    c: Candidate,
    requested: str | None,
    policy: TextPolicy,
    store_text: bool,
    chosen: bool,
    score: float | None,
) -> CandidateRecord:
    model = requested or c.model
    return CandidateRecord(
        member=c.member,
        model=model,
        answered_by=c.model if c.model and c.model != model else None,
        round=c.round,
        status=c.status,
        text=policy.text(c.text) if store_text else None,
        text_hash=text_hash(policy.clean(c.text)),
        prompt_tokens=c.usage.prompt_tokens,
        completion_tokens=c.usage.completion_tokens,
        cost=c.cost,
        latency=round(c.latency, 6),
        ttft=None if c.ttft is None else round(c.ttft, 6),
        error=policy.text(c.error),
        chosen=chosen,
        score=score,
    )


def _judge_call(
    call: Completion, judge: str | None, index: int, policy: TextPolicy, store_text: bool
) -> CandidateRecord:
    model = judge or call.model
    return CandidateRecord(
        role="judge",
        member=f"judge#{index}",
        model=model,
        answered_by=call.model if call.model and call.model != model else None,
        status="ok" if call.text else "failed",
        text=policy.text(call.text) if store_text else None,
        text_hash=text_hash(policy.clean(call.text)),
        prompt_tokens=call.usage.prompt_tokens,
        completion_tokens=call.usage.completion_tokens,
        cost=call.cost,
        latency=round(call.latency, 6),
        ttft=None if call.ttft is None else round(call.ttft, 6),
    )


def _verdict(result: FusionResult, policy: TextPolicy, store_text: bool) -> dict[str, Any]:
    data = result.verdict.model_dump()
    if not store_text:  # the judge's reasons quote the answers
        data["consensus"], data["contradictions"] = [], []
        for s in data["scores"]:
            s["reason"] = ""
    cleaned: dict[str, Any] = policy.value(data)
    return cleaned


def build_record(
    request: FusionRequest,
    result: FusionResult,
    *,
    source: str,
    store_text: bool = True,
    meta: dict[str, Any] | None = None,
    policy: TextPolicy | None = None,
) -> RunRecord:
    """The log record of a finished run: every round's candidates, every judge call, the verdict, totals."""
    policy = policy or TextPolicy()
    rounds = result.rounds or [result.candidates]
    final_round = rounds[-1][0].round if rounds and rounds[-1] else 0
    scores = {s.member: s.score for s in result.verdict.scores}
    models = {s.id: s.model for s in request.pool}

    def judged(c: Candidate) -> str | None:
        """The name the judge knew this call by: a final answer by its member, a first answer that debate
        offered again by ``<member>@round0``."""
        if c.round == final_round:
            return c.member
        return f"{c.member}{ROUND0}" if c.round == 0 else None

    cands = [
        _candidate(
            c,
            models.get(c.member),
            policy,
            store_text,
            chosen=result.verdict.choice is not None and judged(c) == result.verdict.choice,
            score=scores.get(name) if (name := judged(c)) is not None else None,
        )
        for rnd in rounds
        for c in rnd
    ]
    cands += [
        _judge_call(call, request.judge, i + 1, policy, store_text)
        for i, call in enumerate(result.judge_calls)
    ]
    prompt = policy.clean(_prompt_text(request))
    answer = policy.clean(result.answer)
    return RunRecord(
        source=source,
        mode=result.mode,
        judge=result.verdict.judge or (request.judge if result.judge_calls else None),
        prompt=policy.text(prompt) if store_text else None,
        prompt_hash=text_hash(prompt),
        answer=policy.text(answer) if store_text else None,
        answer_hash=text_hash(answer),
        agreement=result.agreement,
        verdict=_verdict(result, policy, store_text),
        request=policy.value(_request_summary(request)),
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        cost=result.cost,
        cost_known=result.cost_known,
        wall_time=round(result.wall_time, 6),
        overhead=round(result.overhead, 6),
        meta=policy.value(dict(meta or {})),
        candidates=cands,
    )


def build_error_record(
    request: FusionRequest,
    error: BaseException,
    *,
    source: str,
    store_text: bool = True,
    candidates: list[Candidate] | None = None,
    meta: dict[str, Any] | None = None,
    policy: TextPolicy | None = None,
) -> RunRecord:
    """The log record of a run that produced no answer (every member failed, none passed the checks, ...)."""
    policy = policy or TextPolicy()
    if candidates is None:
        candidates = _failed_candidates(request, error)
    models = {s.id: s.model for s in request.pool}
    cands = [
        _candidate(c, models.get(c.member), policy, store_text, chosen=False, score=None) for c in candidates
    ]
    prompt = policy.clean(_prompt_text(request))
    return RunRecord(
        source=source,
        mode=request.mode,
        judge=request.judge,
        status="failed",
        error=policy.text(f"{type(error).__name__}: {error}"),
        prompt=policy.text(prompt) if store_text else None,
        prompt_hash=text_hash(prompt),
        request=policy.value(_request_summary(request)),
        prompt_tokens=sum(c.prompt_tokens for c in cands),
        completion_tokens=sum(c.completion_tokens for c in cands),
        cost=sum(c.cost or 0.0 for c in cands),
        cost_known=all(c.cost is not None for c in cands),
        meta=policy.value(dict(meta or {})),
        candidates=cands,
    )


def _failed_candidates(request: FusionRequest, error: BaseException) -> list[Candidate]:
    """The candidates an error carries, so failed runs still count in the per-model failure rates."""
    if isinstance(error, NoSurvivorsError):
        return [c for c in error.candidates if isinstance(c, Candidate)]
    if isinstance(error, AllMembersFailedError):
        models = {s.id: s.model for s in request.pool}
        return [
            Candidate(member=m, model=models.get(m, m), status="failed", error=reason, text="")
            for m, reason in error.reasons.items()
        ]
    return []
