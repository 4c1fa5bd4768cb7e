"""Token log-probabilities: the next token's probability of a few options (a probability-scoring judge reads
"A"/"B" or "yes"/"no" from one forward pass), and a member's mean log-probability per generated token.

Over HTTP both come from the OpenAI ``logprobs``/``top_logprobs`` fields. An upstream that refuses them, or
answers without them, offers none: the model remembers that (``supports_logprobs = False``) and callers fall
back (the judge to its JSON verdict). Local models compute both from llama.cpp's logits (``local_logprobs``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BadUpstreamRequestError, LogprobsUnavailableError
from ..types import Message, Usage
from .wire import WireCompletion, WireLogprobs, WireTopLogprob

if TYPE_CHECKING:
    from .openai_compat import OpenAICompatModel

__all__ = [
    "OptionLogprobs",
    "ContinuationLogprobs",
    "Options",
    "MeanLogprob",
    "match_top_logprobs",
    "logsumexp",
    "http_option_logprobs",
]

# option name -> spellings of its first token ("A" -> ["A", " A"]); the option's log-probability is the
# log of the summed probabilities of its spellings.
Options = Mapping[str, Sequence[str]]
TOP_LOGPROBS = 20  # OpenAI's maximum
_MAX_OPTIONS = 64
_MISSING_PENALTY = 1.0  # an option absent from the top list is taken as less likely than the least listed one


@dataclass(frozen=True)
class OptionLogprobs:
    """Log-probability of each option as the next token, and what the forward pass cost."""

    logprobs: dict[str, float]
    usage: Usage
    latency: float
    model: str
    cost: float | None = 0.0

    def normalized(self) -> dict[str, float]:
        """Probabilities over the options only (they sum to 1)."""
        top = max(self.logprobs.values())
        weights = {k: math.exp(v - top) for k, v in self.logprobs.items()}
        total = sum(weights.values())
        return {k: w / total for k, w in weights.items()}

    @property
    def mass(self) -> float:
        """How much of the next-token probability the options hold together (low: the model wanted to say
        something else)."""
        return min(1.0, sum(math.exp(v) for v in self.logprobs.values()))


@dataclass(frozen=True)
class ContinuationLogprobs:
    """Log-probability of each token of a given reply, and what the forward pass cost."""

    logprobs: list[float]
    usage: Usage
    latency: float
    model: str
    cost: float | None = 0.0

    @property
    def mean(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else -math.inf


def logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _clean(token: str) -> str:
    return token.strip().strip(".:)(*\"'")


def match_top_logprobs(top: Sequence[tuple[str, float]], options: Options) -> dict[str, float]:
    """Options' log-probabilities from a top-k list of (token, logprob). Spellings match after stripping
    whitespace and light punctuation (" A", "A.", "(A"); an option not in the list gets less than the least
    listed token."""
    if not top:
        raise LogprobsUnavailableError("the reply carries no top log-probabilities")
    floor = min(lp for _, lp in top) - _MISSING_PENALTY
    out: dict[str, float] = {}
    for name, spellings in options.items():
        wanted = {_clean(s) for s in spellings if _clean(s)}
        hits = [lp for tok, lp in top if _clean(tok) in wanted]
        out[name] = logsumexp(hits) if hits else floor
    return out


class MeanLogprob:
    """Accumulates per-token log-probabilities (from stream chunks or a whole response) into their mean."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self.total += value
            self.count += 1

    def add_wire(self, logprobs: WireLogprobs | None) -> None:
        """``choice.logprobs`` of a chat response or chunk, as validated from the wire."""
        if logprobs is None or not logprobs.content:
            return
        for entry in logprobs.content:
            if entry.logprob is not None:
                self.add(entry.logprob)

    def mean(self) -> float | None:
        return round(self.total / self.count, 6) if self.count else None


def _top_from_response(data: WireCompletion) -> list[tuple[str, float]]:
    choice = data.choices[0] if data.choices else None
    content = choice.logprobs.content if choice is not None and choice.logprobs is not None else None
    if not content:
        raise LogprobsUnavailableError("the reply carries no log-probabilities")
    first = content[0]
    entries = first.top_logprobs or [WireTopLogprob(token=first.token, logprob=first.logprob)]
    return [
        (e.token, e.logprob)
        for e in entries[: TOP_LOGPROBS * 5]
        if e.token is not None and e.logprob is not None and math.isfinite(e.logprob) and e.logprob <= 0
    ]


def _about_logprobs(exc: BadUpstreamRequestError) -> bool:
    """The upstream refused the logprobs parameters (named in ``error.param``, or in its message)."""
    param = (exc.param or "").split(".", 1)[0]
    return param in ("logprobs", "top_logprobs") or "logprobs" in str(exc).lower()


async def http_option_logprobs(
    model: OpenAICompatModel, messages: Sequence[Message], options: Options
) -> OptionLogprobs:
    """One chat completion of one token with ``top_logprobs``. Raises LogprobsUnavailableError (and remembers
    it on the model) when the upstream refuses log-probabilities or answers without them."""
    if model.supports_logprobs is False:
        raise LogprobsUnavailableError(f"{model.id} offers no log-probabilities", provider=model.id)
    if len(options) > _MAX_OPTIONS:
        raise ValueError(f"at most {_MAX_OPTIONS} options")
    up = model.upstream
    body: dict[str, Any] = {
        "model": model.remote_name,
        "messages": [m.to_openai() for m in messages],
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
        **up.extra_body,
    }
    start = time.perf_counter()
    try:
        data = await model.post_completion(body)
        top = _top_from_response(data)
        result = match_top_logprobs(top, options)
    except BadUpstreamRequestError as exc:
        if not _about_logprobs(exc):
            raise  # refused for another reason (too long, ...): the judge call failed
        model.supports_logprobs = False
        raise LogprobsUnavailableError(
            f"{model.id} refused log-probabilities: {exc}", provider=model.id
        ) from exc
    except LogprobsUnavailableError as exc:
        model.supports_logprobs = False
        raise LogprobsUnavailableError(f"{model.id}: {exc}", provider=model.id) from exc
    model.supports_logprobs = True
    raw = data.usage
    usage = Usage(
        prompt_tokens=(raw.prompt_tokens if raw else None) or 0,
        completion_tokens=(raw.completion_tokens if raw else None) or 1,
        estimated=raw is None,
    )
    cost = raw.cost if raw is not None and raw.cost is not None else model.prices.cost(model.id, usage)
    return OptionLogprobs(result, usage, time.perf_counter() - start, model.id, cost)
