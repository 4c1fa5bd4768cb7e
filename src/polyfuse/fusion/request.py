"""FusionRequest: everything one fusion run needs, validated up front."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import InvalidRequestError
from ..providers.base import MemberSpec, parse_pool
from ..types import GenerationParams, Message
from .scoring import DEFAULT_METHOD, method_names

__all__ = ["FusionRequest", "DEFAULT_JUDGE_MAX_TOKENS"]

DEFAULT_JUDGE_MAX_TOKENS = 512


class FusionRequest(BaseModel):
    """One prompt (as chat messages), a pool, a judge, a mode and limits.

    ``min_responses``/``straggler_grace``: once ``min_responses`` members have answered, wait at most
    ``straggler_grace`` seconds for the rest, then cancel them. ``skip_judge_on_consensus``: if the pool's
    agreement is at or above this threshold, return the vote winner without a judge call.
    ``judge_method``: how the judge chooses (``json``, ``label``, ``yesno``, ``label+yesno``; the probability
    methods fall back to ``json`` for a judge without log-probabilities). ``analysis``: add the structured
    analysis (consensus, contradictions with stances, partial coverage, unique insights, blind spots).
    ``member_logprobs``: ask members for token log-probabilities (their confidence: the vote breaks ties
    with it, and with ``vote_weighted`` weighs each answer by it).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    messages: list[Message]
    pool: list[MemberSpec]
    judge: str | None = None
    mode: str = "best-of"
    rounds: int = 2
    params: GenerationParams = Field(default_factory=GenerationParams)
    judge_params: GenerationParams = Field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_tokens=DEFAULT_JUDGE_MAX_TOKENS)
    )
    member_timeout: float | None = 120.0
    judge_timeout: float | None = 180.0
    min_responses: int | None = None
    straggler_grace: float | None = None
    skip_judge_on_consensus: float | None = None
    shuffle_seed: int | None = None
    max_cost: float | None = None
    judge_method: str = DEFAULT_METHOD
    analysis: bool = False
    member_logprobs: bool = True
    vote_weighted: bool = False

    @field_validator("messages")
    @classmethod
    def _prompt_present(cls, v: list[Message]) -> list[Message]:
        if not v or not any((m.content or "").strip() for m in v if m.role == "user"):
            raise InvalidRequestError("the prompt is empty: give some text to ask the pool")
        return v

    @field_validator("pool")
    @classmethod
    def _pool_present(cls, v: list[MemberSpec]) -> list[MemberSpec]:
        if not v:
            raise InvalidRequestError("the pool is empty: name at least one model")
        return v

    @model_validator(mode="after")
    def _limits(self) -> FusionRequest:
        if self.rounds < 1:
            raise InvalidRequestError(f"rounds must be at least 1 (got {self.rounds})")
        if self.min_responses is not None and not 1 <= self.min_responses <= len(self.pool):
            raise InvalidRequestError(
                f"min_responses must be between 1 and the pool size {len(self.pool)} (got {self.min_responses})"
            )
        for name in ("member_timeout", "judge_timeout", "straggler_grace"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidRequestError(f"{name} must not be negative (got {value})")
        if self.judge_method not in method_names():
            raise InvalidRequestError(
                f"unknown judge method '{self.judge_method}'; valid methods: {', '.join(method_names())}"
            )
        t = self.skip_judge_on_consensus
        if t is not None and not 0 <= t <= 1:
            raise InvalidRequestError(f"skip_judge_on_consensus must be between 0 and 1 (got {t})")
        return self

    @classmethod
    def from_prompt(
        cls, prompt: str | Sequence[Message], pool: str | Sequence[str | MemberSpec], **kw: object
    ) -> FusionRequest:
        """Convenience: a user prompt string (or messages) and a pool string such as ``"a,b*2"``."""
        messages = [Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
        return cls(messages=messages, pool=parse_pool(pool), **kw)  # type: ignore[arg-type]
