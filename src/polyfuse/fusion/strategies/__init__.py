"""Fusion modes as strategies with one signature, looked up in a registry (never an if/elif on the name)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import ConfigError
from ...types import Candidate, Verdict

if TYPE_CHECKING:
    from ..engine import FusionContext
    from ..request import FusionRequest

__all__ = ["Outcome", "Strategy", "register_strategy", "get_strategy", "strategy_names"]


@dataclass
class Outcome:
    answer: str
    verdict: Verdict
    tool_calls: list[dict[str, Any]] | None = None
    chosen: Candidate | None = None  # set when the answer is a candidate's text verbatim
    final: Sequence[Candidate] = field(default_factory=list)  # candidates the decision was made on
    streamed: bool = False  # the answer already went out as answer_delta events (the judge wrote it)


class Strategy:
    """A fusion mode. ``run`` gets the context and the first round's candidates (at least one ok)."""

    name: ClassVar[str]
    uses_judge: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def judge_calls(self, request: FusionRequest) -> int:
        """How many judge calls a run makes at most (before repair), for the cost estimate."""
        return 1 if self.uses_judge else 0

    def member_rounds(self, request: FusionRequest) -> int:
        return 1

    async def run(self, ctx: FusionContext, first: list[Candidate]) -> Outcome:
        raise NotImplementedError


_REGISTRY: dict[str, Strategy] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    _REGISTRY[cls.name] = cls()
    return cls


def strategy_names() -> list[str]:
    return list(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown mode '{name}'; valid modes: {', '.join(_REGISTRY)}") from None


# Built-in modes register on import, the same way a plugin would.
from . import best_of, debate, merge, vote  # noqa: E402,F401
