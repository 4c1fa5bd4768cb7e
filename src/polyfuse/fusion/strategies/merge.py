"""merge: the judge writes one answer from the strongest parts of all candidates (Mixture-of-Agents style)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...types import Candidate
from . import Outcome, Strategy, register_strategy

if TYPE_CHECKING:
    from ..engine import FusionContext


async def synthesize(ctx: FusionContext, candidates: list[Candidate]) -> Outcome:
    """Ask the judge to write the answer; fall back to the vote when it fails."""
    parsed = await ctx.ask_judge(candidates, "write")
    if isinstance(parsed, str):
        outcome = ctx.vote_outcome(candidates, judge_failed=parsed)
    else:
        assert parsed.answer is not None
        outcome = Outcome(parsed.answer, parsed.verdict, streamed=parsed.streamed)
    outcome.final = candidates
    return outcome


@register_strategy
class Merge(Strategy):
    name = "merge"
    description = "the judge writes one answer combining the strongest parts"

    async def run(self, ctx: FusionContext, first: list[Candidate]) -> Outcome:
        return await synthesize(ctx, first)
