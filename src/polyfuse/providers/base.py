"""The one model interface every provider implements, and the parsing of pool member specs."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from ..errors import BadUpstreamRequestError, ConfigError, LogprobsUnavailableError, UpstreamError
from ..types import Completion, GenerationParams, Message

if TYPE_CHECKING:
    from .logprobs import ContinuationLogprobs, OptionLogprobs, Options

__all__ = [
    "ModelKind",
    "Delta",
    "StreamEvent",
    "ChatModel",
    "MemberSpec",
    "parse_member",
    "parse_pool",
]

ModelKind = Literal["chat", "base"]


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of generated text, as it streams."""

    text: str


StreamEvent = Delta | Completion


class ChatModel(ABC):
    """A model polyfuse can call. ``stream`` yields ``Delta``s and ends with exactly one ``Completion``.

    ``kind`` is "chat" for instruction-tuned models with a chat template and "base" for plain completion models
    (they get a transcript prompt and stop sequences). ``supports_json_schema`` says whether the backend can
    constrain decoding to a JSON schema. ``supports_logprobs``: whether ``option_logprobs`` works (None: not
    known until tried, as over HTTP).
    """

    id: str
    kind: ModelKind = "chat"
    supports_json_schema: bool = False
    supports_text_completion: bool = False  # ``stream_text``: raw prompt in, continuation out (FIM, prefix)
    supports_logprobs: bool | None = False

    @abstractmethod
    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Generate, yielding text deltas then the final Completion."""

    def stream_text(self, prompt: str, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Continue a raw text prompt (no chat template): fill-in-the-middle and prefix completion."""
        raise BadUpstreamRequestError(f"{self.id} does not support raw text completion")

    async def option_logprobs(
        self, messages: Sequence[Message], options: Options, params: GenerationParams
    ) -> OptionLogprobs:
        """The log-probability of each option (its spellings) as the next token of the reply, from one forward
        pass. Raises LogprobsUnavailableError when the model offers none."""
        raise LogprobsUnavailableError(f"{self.id} offers no log-probabilities", provider=self.id)

    async def continuation_logprobs(
        self, messages: Sequence[Message], reply: str, max_tokens: int
    ) -> ContinuationLogprobs:
        """The log-probability of each token of ``reply`` (at most ``max_tokens``) as the model's answer to
        ``messages``, from one forward pass. Raises LogprobsUnavailableError when the model offers none."""
        raise LogprobsUnavailableError(f"{self.id} offers no prompt log-probabilities", provider=self.id)

    async def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        final: Completion | None = None
        async for event in self.stream(messages, params):
            if isinstance(event, Completion):
                final = event
        if final is None:
            raise UpstreamError(f"{self.id}: stream ended without a completion")
        return final

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by this model (most share the hub's clients and hold none)."""


_REPEAT = re.compile(r"\*(\d+)$")
_PARAM_TYPES: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "max_tokens": int,
    "seed": int,
}


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One pool member: a model id plus its own sampling overrides. ``id`` is unique within a pool."""

    model: str
    id: str
    params: dict[str, Any] = field(default_factory=dict)

    def generation_params(self, base: GenerationParams) -> GenerationParams:
        return base.merged(**self.params)


def _parse_params(model: str, query: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        caster = _PARAM_TYPES.get(key)
        if caster is None:
            raise ConfigError(
                f"unknown member option '{key}' in '{model}'; valid options: {', '.join(sorted(_PARAM_TYPES))}"
            )
        try:
            params[key] = caster(raw)
        except ValueError:
            raise ConfigError(
                f"member option {key}={raw!r} in '{model}' is not a {caster.__name__}"
            ) from None
    return params


def parse_member(text: str, **extra: Any) -> list[MemberSpec]:
    """Parse ``model[?opt=v&...][*N]`` into N member specs (ids still to be made unique by ``parse_pool``).

    Repeated members (``*N``) sample the same model several times: each copy gets its own seed so the samples
    differ, and a temperature of 0.7 unless one is given (identical greedy samples would be pointless).
    """
    text = text.strip()
    if not text:
        raise ConfigError("empty pool member: remove the stray comma or name a model")
    count = 1
    m = _REPEAT.search(text)
    if m:
        count = int(m.group(1))
        text = text[: m.start()]
        if count < 1:
            raise ConfigError(f"member repeat count must be at least 1 in '{text}*{count}'")
    model, _, query = text.partition("?")
    if not model:
        raise ConfigError(f"pool member '{text}' has no model id")
    params = _parse_params(model, query)
    for key, value in extra.items():
        if value is not None:
            params.setdefault(key, value)
    if count == 1:
        return [MemberSpec(model=model, id=model, params=params)]
    base_seed = int(params.get("seed", 0))
    specs = []
    for i in range(count):
        p = dict(params)
        p["seed"] = base_seed + i
        p.setdefault("temperature", 0.7)
        specs.append(MemberSpec(model=model, id=model, params=p))
    return specs


def parse_pool(members: str | Sequence[str | MemberSpec]) -> list[MemberSpec]:
    """Parse a comma-separated pool (or a list of specs) and give each member a unique id."""
    if isinstance(members, str):
        members = [m for m in members.split(",")]
    specs: list[MemberSpec] = []
    for item in members:
        specs.extend([item] if isinstance(item, MemberSpec) else parse_member(item))
    if not specs:
        raise ConfigError("the pool is empty: name at least one model, e.g. --pool local/smollm2-135m")
    return _unique_ids(specs)


def _unique_ids(specs: list[MemberSpec]) -> list[MemberSpec]:
    totals: dict[str, int] = {}
    for s in specs:
        totals[s.id] = totals.get(s.id, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        if totals[s.id] == 1:
            out.append(s)
            continue
        seen[s.id] = seen.get(s.id, 0) + 1
        out.append(MemberSpec(model=s.model, id=f"{s.id}#{seen[s.id]}", params=s.params))
    return out
