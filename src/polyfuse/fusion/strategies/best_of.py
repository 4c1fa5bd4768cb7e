"""best-of: the judge scores every candidate and picks one, returned verbatim."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...types import Candidate
from ..choosing import pick
from . import Outcome, Strategy, register_strategy

if TYPE_CHECKING:
    from ..engine import FusionContext


async def choose(ctx: FusionContext, candidates: list[Candidate]) -> Outcome:
    """Ask the judge to pick (by the request's judge method); fall back to the vote when it fails."""
    chosen = await pick(ctx, candidates)
    if isinstance(chosen, str):
        outcome = ctx.vote_outcome(candidates, judge_failed=chosen)
    else:
        c = chosen.chosen
        outcome = Outcome(c.text, chosen.verdict, c.tool_calls, chosen=c)
    outcome.final = candidates
    return outcome


@register_strategy
class BestOf(Strategy):
    name = "best-of"
    description = "the judge scores every candidate and returns the best one verbatim"

    async def run(self, ctx: FusionContext, first: list[Candidate]) -> Outcome:
        if sum(c.ok for c in first) == 1:
            # One answer (the others failed, were cut or rejected by checks): nothing to rank, save the call.
            outcome = ctx.vote_outcome(first)
            outcome.verdict.skipped = True
            outcome.final = first
            return outcome
        return await choose(ctx, first)
