"""The one model interface every provider implements, and the parsing of pool member specs."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadUpstreamRequestError, ConfigError, TooManyMembersError, UpstreamError
from ..settings import MAX_MEMBER_COUNT
from ..types import Completion, GenerationParams, Message

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
    constrain decoding to a JSON schema.
    """

    id: str
    kind: ModelKind = "chat"
    supports_json_schema: bool = False
    supports_text_completion: bool = False  # ``stream_text``: raw prompt in, continuation out (FIM, prefix)

    @abstractmethod
    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Generate, yielding text deltas then the final Completion."""

    def stream_text(self, prompt: str, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Continue a raw text prompt (no chat template): fill-in-the-middle and prefix completion."""
        raise BadUpstreamRequestError(f"{self.id} does not support raw text completion")

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
_MAX_SEED = 2**63 - 1 - MAX_MEMBER_COUNT  # repeated members get seed, seed+1, ...: stay within int64


class _MemberOptions(BaseModel):
    """``?opt=v`` values of a member spec: typed, finite and in range before anything uses them."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    seed: int | None = Field(default=None, ge=-_MAX_SEED, le=_MAX_SEED)


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One pool member: a model id plus its own sampling overrides. ``id`` is unique within a pool."""

    model: str
    id: str
    params: dict[str, Any] = field(default_factory=dict)

    def generation_params(self, base: GenerationParams) -> GenerationParams:
        return base.merged(**self.params)


def _parse_params(model: str, query: str) -> dict[str, Any]:
    raw = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    try:
        options = _MemberOptions.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            valid = ", ".join(_MemberOptions.model_fields)
            raise ConfigError(
                f"unknown member option '{key[:40]}' in '{model[:200]}'; valid options: {valid}"
            ) from None
        value = str(raw.get(key, ""))[:40]
        raise ConfigError(f"member option {key}={value!r} in '{model[:200]}': {err['msg']}") from None
    return options.model_dump(exclude_none=True)


def _split_member(text: str, max_count: int) -> tuple[str, str, int]:
    """``model?query*N`` -> (model, query, N), the count checked before anything is expanded."""
    count = 1
    m = _REPEAT.search(text)
    if m:
        digits = m.group(1)
        text = text[: m.start()]
        if len(digits) > 6 or int(digits) > max_count:
            shown = digits if len(digits) <= 12 else digits[:6] + "..."
            raise TooManyMembersError(
                f"member '{text[:200]}*{shown}' repeats more than the limit of {max_count} members"
            )
        count = int(digits)
        if count < 1:
            raise ConfigError(f"member repeat count must be at least 1 in '{text[:200]}*{count}'")
    model, _, query = text.partition("?")
    if not model:
        raise ConfigError(f"pool member '{text[:200]}' has no model id")
    return model, query, count


def parse_member(text: str, *, max_count: int = MAX_MEMBER_COUNT, **extra: Any) -> list[MemberSpec]:
    """Parse ``model[?opt=v&...][*N]`` into N member specs (ids still to be made unique by ``parse_pool``).

    Repeated members (``*N``) sample the same model several times: each copy gets its own seed so the samples
    differ, and a temperature of 0.7 unless one is given (identical greedy samples would be pointless).
    ``N`` above ``max_count`` is refused before any copy is made.
    """
    text = text.strip()
    if not text:
        raise ConfigError("empty pool member: remove the stray comma or name a model")
    model, query, count = _split_member(text, max_count)
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


def parse_pool(
    members: str | Sequence[str | MemberSpec], *, max_members: int | None = None
) -> list[MemberSpec]:
    """Parse a comma-separated pool (or a list of specs) and give each member a unique id. With
    ``max_members``, a pool that would grow past it is refused as soon as that is known, before expansion."""
    if isinstance(members, str):
        members = members.split(",")
    limit = MAX_MEMBER_COUNT if max_members is None else max_members
    specs: list[MemberSpec] = []
    for item in members:
        if isinstance(item, MemberSpec):
            specs.append(item)
        else:
            specs.extend(parse_member(item, max_count=max(1, limit - len(specs))))
        if max_members is not None and len(specs) > max_members:
            raise TooManyMembersError(
                f"the pool has more than {max_members} members; at most {max_members} are allowed"
            )
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
