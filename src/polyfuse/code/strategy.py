"""``checked-best-of``: best-of over the candidates that passed their checks; with a single survivor there is
nothing to rank, so no judge call is made (the verdict says the judge was skipped)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..fusion.strategies import Outcome, Strategy, register_strategy
from ..fusion.strategies.best_of import choose
from ..types import Candidate

if TYPE_CHECKING:
    from ..fusion.engine import FusionContext

__all__ = ["CheckedBestOf"]


@register_strategy
class CheckedBestOf(Strategy):
    name = "checked-best-of"
    description = "best-of among the candidates that passed their checks; one survivor wins without a judge"

    async def run(self, ctx: FusionContext, first: list[Candidate]) -> Outcome:
        if sum(c.ok for c in first) == 1:
            outcome = ctx.vote_outcome(first)
            outcome.verdict.skipped = True
            outcome.final = first
            return outcome
        return await choose(ctx, first)
