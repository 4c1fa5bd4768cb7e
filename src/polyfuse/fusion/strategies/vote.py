"""vote: no judge call; the candidate the pool agrees with most."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...types import Candidate
from . import Outcome, Strategy, register_strategy

if TYPE_CHECKING:
    from ..engine import FusionContext


@register_strategy
class Vote(Strategy):
    name = "vote"
    uses_judge = False
    description = "no judge: the most agreed-with candidate"

    async def run(self, ctx: FusionContext, first: list[Candidate]) -> Outcome:
        outcome = ctx.vote_outcome(first)
        outcome.final = first
        return outcome
