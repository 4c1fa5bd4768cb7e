"""merge: the judge writes one answer from the strongest parts of all candidates (Mixture-of-Agents style),
held against the candidate it chose (see ``guard``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...types import Candidate, Verdict
from ..choosing import NoLogprobs, probability_pick
from ..events import FusionEvent
from ..guard import Judgement, hold_against
from ..judge import ParsedVerdict, make_ballot
from ..scoring import JSON_METHOD
from . import Outcome, Strategy, register_strategy

if TYPE_CHECKING:
    from ..engine import FusionContext
    from ..request import FusionRequest


async def _write(
    ctx: FusionContext, candidates: list[Candidate]
) -> tuple[ParsedVerdict, Candidate, bool] | str:
    """The written answer and the candidate it is held against: the probability judge's pick (the writer is
    told), or the top-scored candidate of the written verdict, or the vote's winner when it scored none."""
    ok = [c for c in candidates if c.ok]
    note: str | None = None
    if ctx.request.judge_method != JSON_METHOD and len(ok) > 1 and ctx.judge is not None:
        ballot = make_ballot(ok, ctx.rng)
        chosen = await probability_pick(ctx, ballot)
        if isinstance(chosen, str):
            return chosen
        if isinstance(chosen, NoLogprobs):
            note = chosen.note  # the written verdict's scores decide below
        else:
            parsed = await ctx.ask_judge(
                ok, "write", ballot=ballot, analysis=ctx.request.analysis, pick=chosen.label
            )
            if isinstance(parsed, str):
                return parsed
            analysis = parsed.verdict.analysis
            parsed.verdict = chosen.verdict.model_copy(update={"analysis": analysis})
            if analysis is not None:
                parsed.verdict.consensus = list(analysis.consensus)
                parsed.verdict.contradictions = [c.point for c in analysis.contradictions]
            return parsed, chosen.chosen, True
    parsed = await ctx.ask_judge(ok, "write", analysis=ctx.request.analysis)
    if isinstance(parsed, str):
        return parsed
    parsed.verdict.method_note = note
    held = next((c for c in ok if c.member == parsed.verdict.choice), None)
    if held is not None:
        return parsed, held, True
    # the written verdict scored no answer: the vote's pick stands in (named as the choice only if returned)
    held = ctx.vote_outcome(ok).chosen or ok[0]
    return parsed, held, False


async def synthesize(ctx: FusionContext, candidates: list[Candidate]) -> Outcome:
    """Ask the judge to write the answer; hold it against the chosen candidate; fall back to the vote when the
    judge fails."""
    written = await _write(ctx, candidates)
    if isinstance(written, str):
        outcome = ctx.vote_outcome(candidates, judge_failed=written)
        outcome.final = candidates
        return outcome
    parsed, chosen, judged = written
    assert parsed.answer is not None
    if ctx.request.params.json_schema is not None:
        judgement = Judgement(True)  # a JSON value in the client's format: not a short text to compare
    else:
        judgement = await hold_against(parsed.answer, chosen, candidates, ctx.screen, judged=judged)
    if judgement.keep_written:
        outcome = Outcome(parsed.answer, parsed.verdict, streamed=parsed.streamed)
    else:
        verdict: Verdict = parsed.verdict
        verdict.writer_rejected = True
        verdict.rejected_answer = parsed.answer
        verdict.choice = chosen.member  # the answer is now this candidate, verbatim
        verdict.notes.append(f"{judgement.reason}; the chosen candidate was returned")
        if parsed.streamed:
            ctx.emit(FusionEvent("answer_reset", data={"reason": judgement.reason}))
        outcome = Outcome(chosen.text, verdict, chosen.tool_calls, chosen=chosen)
    outcome.final = candidates
    return outcome


@register_strategy
class Merge(Strategy):
    name = "merge"
    description = "the judge writes one answer combining the strongest parts"

    def judge_calls(self, request: FusionRequest) -> int:
        return 1 if request.judge_method == JSON_METHOD else 2  # + the pick from token probabilities

    async def run(self, ctx: FusionContext, first: list[Candidate]) -> Outcome:
        return await synthesize(ctx, first)
