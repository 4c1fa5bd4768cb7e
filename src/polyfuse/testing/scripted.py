"""A scripted in-process provider for tests (ours and yours): queued answers, delays, hangs and failures.

judge = ScriptedModel("judge", [Reply(text='{"choice": "A", ...}')])
hub = scripted_hub({"a": ScriptedModel("a", ["Paris"]), "judge": judge})
result = await fuse(FusionRequest.from_prompt("Capital of France?", "scripted/a", judge="scripted/judge"), hub)
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..config import Config
from ..errors import UnknownModelError
from ..providers.base import ChatModel, Delta, ModelKind, StreamEvent
from ..providers.registry import ProviderHub
from ..types import Completion, GenerationParams, Message, Usage

__all__ = ["Reply", "ScriptedModel", "scripted_hub", "label_of"]


@dataclass
class Reply:
    """One scripted answer. ``fn`` computes the text from the messages (e.g. a judge picking by content)."""

    text: str = ""
    delay: float = 0.0
    error: Exception | None = None
    hang: bool = False
    chunks: int = 3
    fn: Callable[[Sequence[Message]], str] | None = None
    usage: Usage | None = None
    cost: float | None = 0.0
    tool_calls: list[dict[str, object]] | None = None


@dataclass
class ScriptedModel(ChatModel):
    name: str
    replies: Iterable[Reply | str] = ()
    default: Reply | str | None = None
    kind: ModelKind = "chat"
    supports_json_schema: bool = False
    calls: list[tuple[list[Message], GenerationParams]] = field(default_factory=list)
    active: int = 0
    cancelled: int = 0
    finished: int = 0

    def __post_init__(self) -> None:
        self.id = f"scripted/{self.name}"
        self._queue: list[Reply | str] = list(self.replies)

    def queue(self, *replies: Reply | str) -> None:
        self._queue.extend(replies)

    def _next(self) -> Reply:
        if self._queue:
            item = self._queue.pop(0)
        elif self.default is not None:
            item = self.default
        else:
            raise AssertionError(f"{self.id}: no scripted reply left")
        return Reply(text=item) if isinstance(item, str) else item

    async def stream(
        self, messages: Sequence[Message], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        reply = self._next()
        self.calls.append((list(messages), params))
        start = time.perf_counter()
        self.active += 1
        try:
            if reply.hang:
                await asyncio.Event().wait()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.error is not None:
                raise reply.error
            text = reply.fn(messages) if reply.fn else reply.text
            ttft = None
            if text:
                size = max(1, -(-len(text) // max(1, reply.chunks)))
                for i in range(0, len(text), size):
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    yield Delta(text[i : i + size])
                    await asyncio.sleep(0)
            usage = reply.usage or Usage(
                prompt_tokens=sum(len((m.content or "").split()) for m in messages),
                completion_tokens=len(text.split()),
            )
            self.finished += 1
            yield Completion(
                text=text,
                finish_reason="tool_calls" if reply.tool_calls else "stop",
                usage=usage,
                cost=reply.cost,
                model=self.id,
                latency=time.perf_counter() - start,
                ttft=ttft,
                tool_calls=reply.tool_calls,
            )
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


def scripted_hub(models: Mapping[str, ScriptedModel], config: Config | None = None) -> ProviderHub:
    """A hub where ``scripted/<name>`` resolves to the given models (other prefixes work as usual)."""
    hub = ProviderHub.from_config(config or Config(), env={})

    def factory(name: str, _hub: ProviderHub) -> ChatModel:
        if name not in models:
            raise UnknownModelError(f"no scripted model '{name}'")
        return models[name]

    hub.register("scripted", factory)
    return hub


_FENCE = re.compile(r"<<<ANSWER (\w+) [0-9a-f]+>>>\n(.*?)\n<<<END ANSWER", re.S)


def label_of(messages: Sequence[Message], needle: str) -> str:
    """In a judge prompt, the anonymous label of the first candidate whose text contains ``needle``."""
    for m in messages:
        for label, body in _FENCE.findall(m.content or ""):
            if needle in body:
                return str(label)
    raise AssertionError(f"no candidate containing {needle!r} in the judge prompt")
