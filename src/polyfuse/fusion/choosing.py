"""Choosing one candidate: by the request's judge method, with the JSON verdict as the fallback.

A probability method (``label``, ``yesno``, ``label+yesno``) reads the judge's token probabilities; a judge
that offers none (most hosted models without ``logprobs``, Anthropic) falls back to the JSON verdict and the
verdict says so in ``method_note``. The optional structured analysis is one more JSON call for the
probability methods (the JSON verdict carries it itself).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LogprobsUnavailableError, ProviderError
from ..providers.base import ChatModel
from ..types import Candidate, Verdict
from .events import FusionEvent, null_sink
from .judge import Ballot, make_ballot
from .scoring import JSON_METHOD, Scored, get_method

if TYPE_CHECKING:
    from .engine import FusionContext
    from .request import FusionRequest

__all__ = [
    "Pick",
    "NoLogprobs",
    "pick",
    "probability_pick",
    "score_candidates",
    "add_analysis",
    "choose_in_order",
]


@dataclass
class Pick:
    verdict: Verdict
    chosen: Candidate
    label: str  # the chosen one's label in the ballot the judge saw (the writer is told it)
    ballot: Ballot


@dataclass(frozen=True)
class NoLogprobs:
    """The judge offers no log-probabilities: use the JSON verdict, and say so."""

    note: str


async def score_candidates(ctx: FusionContext, ballot: Ballot) -> Scored | NoLogprobs | str:
    """Score by the request's probability method; a string says why the judge failed."""
    judge = ctx.judge
    assert judge is not None
    method = get_method(ctx.request.judge_method)
    if judge.supports_logprobs is False:  # known: do not ask
        return NoLogprobs(
            f"method '{method.name}' needs log-probabilities and {judge.id} offers none; "
            "the JSON verdict was used"
        )
    order = list(ballot.labels.values())
    ctx.emit(FusionEvent("judge_started", model=judge.id, data={"attempt": 1, "method": method.name}))
    started = time.perf_counter()
    try:
        async with asyncio.timeout(ctx.request.judge_timeout):
            scored = await method.score(judge, ctx.request.messages, order, ballot.nonce)
    except LogprobsUnavailableError as exc:
        ctx.critical_path += time.perf_counter() - started
        ctx.emit(FusionEvent("judge_finished", model=judge.id, data={"ok": False, "error": str(exc)}))
        return NoLogprobs(
            f"method '{method.name}' needs log-probabilities and {judge.id} offers none ({exc}); "
            "the JSON verdict was used"
        )
    except (ProviderError, TimeoutError) as exc:
        ctx.critical_path += time.perf_counter() - started
        reason = str(exc) or f"judge timed out after {ctx.request.judge_timeout:g}s"
        ctx.emit(FusionEvent("judge_finished", model=judge.id, data={"ok": False, "error": reason}))
        return f"judge call failed: {reason}"
    ctx.judge_calls.extend(scored.calls)
    ctx.critical_path += sum(c.latency for c in scored.calls)
    ctx.emit(FusionEvent("judge_finished", model=judge.id, data={"ok": True, "method": method.name}))
    return scored


def _scored_verdict(ctx: FusionContext, scored: Scored) -> Verdict:
    return Verdict(
        judge=ctx.judge.id if ctx.judge else None,
        scores=scored.scores(),
        choice=scored.choice,
        agreement=-1.0,  # filled in from the measured agreement
        labels=scored.labels,
        method=scored.method,
        confidence=scored.confidence,
        method_note=scored.note,
    )


async def probability_pick(ctx: FusionContext, ballot: Ballot) -> Pick | NoLogprobs | str:
    """The choice from token probabilities (the request's method), or why it could not be made."""
    scored = await score_candidates(ctx, ballot)
    if isinstance(scored, str | NoLogprobs):
        return scored
    verdict = _scored_verdict(ctx, scored)
    label = next(lb for lb, c in ballot.labels.items() if c.member == scored.choice)
    return Pick(verdict, ballot.labels[label], label, ballot)


async def pick(
    ctx: FusionContext, candidates: Sequence[Candidate], *, order: Sequence[Candidate] | None = None
) -> Pick | str:
    """Choose among the ok candidates. ``order``: the presentation order (default: seeded shuffle). Returns
    the pick, or why the judge failed."""
    ok = [c for c in candidates if c.ok]
    ballot = make_ballot(ok, ctx.rng) if order is None else Ballot.of(order)
    note: str | None = None
    if ctx.request.judge_method != JSON_METHOD and ctx.judge is not None:
        chosen = await probability_pick(ctx, ballot)
        if isinstance(chosen, str):
            return chosen
        if isinstance(chosen, NoLogprobs):
            note = chosen.note
        else:
            if ctx.request.analysis:
                await add_analysis(ctx, chosen.verdict, ballot)
            return chosen
    parsed = await ctx.ask_judge(ok, "choose", ballot=ballot, analysis=ctx.request.analysis)
    if isinstance(parsed, str):
        return parsed
    parsed.verdict.method_note = note
    assert parsed.choice_label is not None
    return Pick(parsed.verdict, ballot.labels[parsed.choice_label], parsed.choice_label, ballot)


async def add_analysis(ctx: FusionContext, verdict: Verdict, ballot: Ballot) -> None:
    """One JSON call for the structured analysis; a judge that cannot give one leaves it out (noted)."""
    parsed = await ctx.ask_judge(list(ballot.labels.values()), "analyze", ballot=ballot, analysis=True)
    if isinstance(parsed, str):
        verdict.notes.append(f"no analysis: {parsed}")
        return
    verdict.analysis = parsed.verdict.analysis
    if verdict.analysis is not None:
        verdict.consensus = list(verdict.analysis.consensus)
        verdict.contradictions = [c.point for c in verdict.analysis.contradictions]


async def choose_in_order(
    request: FusionRequest, judge: ChatModel, candidates: Sequence[Candidate], order: Sequence[str]
) -> str | None:
    """The member the request's judge chooses when the candidates are presented in ``order`` (member ids);
    None when the judge fails. Measures position bias: the same choice must come back in any order."""
    from .engine import FusionContext  # the engine imports the strategies, which import this module

    by_member = {c.member: c for c in candidates if c.ok}
    presented = [by_member[m] for m in order if m in by_member]
    ctx = FusionContext(request=request, models={}, judge=judge, emit=null_sink, rng=random.Random(0))
    chosen = await pick(ctx, presented, order=presented)
    return None if isinstance(chosen, str) else chosen.chosen.member
