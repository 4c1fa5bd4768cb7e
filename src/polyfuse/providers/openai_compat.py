"""OpenAI-compatible chat completions over HTTP: OpenRouter, OpenAI, Gemini, Anthropic, vLLM, llama.cpp, ...

Every body an upstream sends is bounded (``max_response_bytes``, one SSE line) and validated (``wire``): any
deviation is a typed ``ProviderError``, so a broken member fails with a reason and the fusion goes on. Calls are
retried by one ``RetryPolicy`` (streams only before their first token). What a backend refuses is adapted to
per request: when the upstream's error names a parameter we sent (``error.param``), or a request asking for
structured output fails without naming one, the retry goes without it (or with the next structured form).
Only when the upstream says the parameter is unsupported (``error.code``) is that remembered, for this model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BadUpstreamRequestError, MalformedResponseError, ProviderError, UpstreamError
from ..types import Completion, GenerationParams, Message, Usage
from .base import ChatModel, Delta, StreamEvent
from .pricing import PriceTable, estimate_tokens
from .sse import MAX_LINE, iter_lines, iter_sse_data
from .upstream import (
    TRANSPORT_ERRORS,
    StructuredMode,
    Upstream,
    content_chunks,
    read_capped,
    request_headers,
    retry_after,
    transport_error,
)
from .wire import (
    WireToolCallDelta,
    WireUsage,
    error_from_status,
    midstream_error,
    parse_chunk,
    parse_completion,
)

__all__ = ["Upstream", "OpenAICompatModel", "StructuredMode", "request_headers", "error_from_status"]

log = logging.getLogger("polyfuse.providers")

_FALLBACK: dict[StructuredMode, StructuredMode] = {
    "json_schema": "json_object_schema",
    "json_object_schema": "json_object",
    "json_object": "none",
}
_ORDER: tuple[StructuredMode, ...] = ("json_schema", "json_object_schema", "json_object", "none")
_DROPPABLE = frozenset({"temperature", "top_p", "seed", "stop", "stream_options"})
# error.code values by which an upstream says a parameter (or its value) is not supported by this model
_UNSUPPORTED = frozenset({"unsupported_parameter", "unsupported_value", "unknown_parameter"})
# error.code values that are about something else than a parameter: never a reason to step down
_NOT_A_PARAMETER = frozenset({"context_length_exceeded", "rate_limit_exceeded", "insufficient_quota"})


@dataclass(frozen=True)
class _Attempt:
    """What one request sends: the structured-output form and the parameters left out."""

    mode: StructuredMode
    dropped: frozenset[str]


class _ToolCallAccumulator:
    """Stream deltas carry tool calls in pieces keyed by index; join them into OpenAI's final form."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[WireToolCallDelta]) -> None:
        for d in deltas:
            call = self.calls.setdefault(
                d.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if d.id:
                call["id"] = d.id
            if d.function is not None:
                call["function"]["name"] += d.function.name or ""
                call["function"]["arguments"] += d.function.arguments or ""

    def result(self) -> list[dict[str, Any]] | None:
        return [self.calls[i] for i in sorted(self.calls)] or None


def _root(param: str | None) -> str | None:
    """``response_format.json_schema`` / ``messages[0]`` -> the top-level request field."""
    if not param:
        return None
    return param.split(".", 1)[0].split("[", 1)[0]


class OpenAICompatModel(ChatModel):
    kind = "chat"
    supports_json_schema = True

    def __init__(self, model_id: str, remote_name: str, upstream: Upstream, prices: PriceTable) -> None:
        self.id = model_id
        self.remote_name = remote_name
        self.upstream = upstream
        self.prices = prices
        self.supports_text_completion = upstream.text_completion
        # Learned from the upstream's own word that a parameter is unsupported; only ever grows.
        self.structured: StructuredMode = upstream.structured
        self.dropped: frozenset[str] = frozenset()
        self.supports_json_schema = self.structured != "none"

    # -- request building -------------------------------------------------------------------------------------
    def _body(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        stream: bool,
        attempt: _Attempt,
        prompt: str | None = None,
    ) -> dict[str, Any]:
        """A chat completions body, or with ``prompt`` a (legacy) text completions body."""
        body: dict[str, Any] = {"model": self.remote_name}
        if prompt is None:
            body["messages"] = [m.to_openai() for m in messages]
        else:
            body["prompt"] = prompt
        keys = ("temperature", "max_tokens", "top_p", "stop", "seed")
        for key in keys if prompt is not None else (*keys, "tools", "tool_choice"):
            value = getattr(params, key)
            if value is not None and key not in attempt.dropped:
                body[key] = value
        if params.json_schema is not None and attempt.mode != "none" and prompt is None:
            body["response_format"] = _response_format(attempt.mode, params.json_schema)
        if stream:
            body["stream"] = True
            if "stream_options" not in attempt.dropped:
                body["stream_options"] = {"include_usage": True}
        body.update(self.upstream.extra_body)
        return body

    def _cost(self, usage: Usage, reported: float | None) -> float | None:
        if reported is not None:
            return float(reported)
        return self.prices.cost(self.id, usage)

    def _fallback(self, exc: ProviderError, params: GenerationParams, attempt: _Attempt) -> _Attempt | None:
        """The next attempt of this request without what the upstream refused, or None (not a refusal)."""
        if not isinstance(exc, BadUpstreamRequestError) and exc.status not in (500, 422):
            return None
        param = _root(exc.param)
        unsupported = exc.code in _UNSUPPORTED
        structured = params.json_schema is not None and attempt.mode != "none"
        if param in _DROPPABLE and param not in attempt.dropped:
            nxt = _Attempt(attempt.mode, attempt.dropped | {param})
            what = param
        elif structured and (
            param == "response_format" or (param is None and exc.code not in _NOT_A_PARAMETER)
        ):
            nxt = _Attempt(_FALLBACK[attempt.mode], attempt.dropped)
            what = f"response_format {attempt.mode} (next: {nxt.mode})"
        else:
            return None
        remembered = unsupported and param is not None
        if remembered and param == "response_format":
            self.structured = max(self.structured, nxt.mode, key=_ORDER.index)  # only ever steps down
            self.supports_json_schema = self.structured != "none"
        elif remembered and param is not None:
            self.dropped = self.dropped | {param}
        log.info(
            "%s: the upstream refused %s (HTTP %s, code %s); retrying this request without it%s",
            self.id,
            what,
            exc.status,
            exc.code,
            "; remembered for this model" if remembered else "",
        )
        return nxt

    # -- calls ------------------------------------------------------------------------------------------------
    async def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        start = time.perf_counter()
        retry = self.upstream.retry.start()
        attempt = _Attempt(self.structured, self.dropped)
        while True:
            try:
                raw = await self._post_once(messages, params, attempt, retry.remaining())
                break
            except ProviderError as exc:
                nxt = self._fallback(exc, params, attempt)
                if nxt is not None:
                    attempt = nxt
                    continue
                await retry.backoff(exc)
        latency = time.perf_counter() - start
        data = parse_completion(raw, self.id)
        if data.error:
            raise midstream_error(data.error, self.id)
        if not data.choices:
            raise MalformedResponseError(f"{self.id}: malformed response: no choices", provider=self.id)
        choice = data.choices[0]
        message = choice.message
        usage, cost = self._usage(data.usage)
        return Completion(
            text=(message.content if message else None) or "",
            finish_reason=choice.finish_reason,
            usage=usage,
            cost=self._cost(usage, cost),
            model=data.model or self.remote_name,
            latency=latency,
            ttft=latency,
            tool_calls=(message.tool_calls if message else None) or None,
        )

    @staticmethod
    def _usage(raw: WireUsage | None) -> tuple[Usage, float | None]:
        if raw is None:
            return Usage(), None
        return Usage(
            prompt_tokens=raw.prompt_tokens or 0, completion_tokens=raw.completion_tokens or 0
        ), raw.cost

    async def _post_once(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        attempt: _Attempt,
        remaining: float | None,
    ) -> bytes:
        up = self.upstream
        try:
            with up.using():
                async with up.post(
                    "/chat/completions", self._body(messages, params, False, attempt), remaining
                ) as r:
                    raw = await read_capped(r, up.max_response_bytes, self.id)
                    if r.status >= 400:
                        raise error_from_status(r.status, raw, self.id, retry_after(r.headers))
                    return raw
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, self.id) from exc

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        return self._stream(messages, params, None)

    def stream_text(self, prompt: str, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Continue a raw prompt through ``/completions`` (fill-in-the-middle on vLLM, llama.cpp, Ollama...)."""
        return self._stream([], params, prompt)

    async def _stream(
        self, messages: Sequence[Message], params: GenerationParams, prompt: str | None
    ) -> AsyncIterator[StreamEvent]:
        start = time.perf_counter()
        retry = self.upstream.retry.start()
        attempt = _Attempt(self.structured, self.dropped)
        while True:
            started = False
            try:
                async for event in self._stream_once(
                    messages, params, attempt, start, prompt, retry.remaining
                ):
                    started = True
                    yield event
                return
            except ProviderError as exc:
                if started:
                    raise
                nxt = self._fallback(exc, params, attempt)
                if nxt is not None:
                    attempt = nxt
                    continue
                await retry.backoff(exc)

    async def _stream_once(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        attempt: _Attempt,
        start: float,
        prompt: str | None,
        remaining: Callable[[], float | None],
    ) -> AsyncIterator[StreamEvent]:
        body = self._body(messages, params, True, attempt, prompt)
        path = "/chat/completions" if prompt is None else "/completions"
        state = _StreamState()
        up = self.upstream
        try:
            with up.using():
                async with up.post(path, body, remaining()) as response:
                    if response.status >= 400:
                        raw = await read_capped(response, up.max_response_bytes, self.id)
                        raise error_from_status(response.status, raw, self.id, retry_after(response.headers))
                    lines = iter_lines(
                        content_chunks(response),
                        max_line=min(MAX_LINE, up.max_response_bytes),
                        max_total=up.max_response_bytes,
                        source=self.id,
                    )
                    async for data in iter_sse_data(lines, self.id):
                        text = self._read_event(data.strip(), state, prompt is not None)
                        if text:
                            if state.ttft is None:
                                state.ttft = time.perf_counter() - start
                            yield Delta(text)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, self.id) from exc
        yield self._final(state, messages, prompt, start)

    def _read_event(self, data: str, state: _StreamState, raw_prompt: bool) -> str:
        """Fold one ``data:`` payload into the stream's state; the text it adds."""
        if not data or data == "[DONE]":
            return ""  # read on to the end: a fully read response keeps the connection alive
        chunk = parse_chunk(data, self.id)
        state.events += 1
        if chunk.error:
            raise midstream_error(chunk.error, self.id)
        state.answered_by = chunk.model or state.answered_by
        if chunk.usage is not None:
            state.usage, cost = self._usage(chunk.usage)
            state.reported_cost = cost if cost is not None else state.reported_cost
        added = []
        for choice in chunk.choices or []:
            if choice.finish_reason:
                state.finish = choice.finish_reason
                if state.finish == "error":
                    raise UpstreamError(f"{self.id}: stream ended with an error", provider=self.id)
            delta = choice.delta
            if delta is not None and delta.tool_calls:
                state.tools.add(delta.tool_calls)
            text = choice.text if raw_prompt else (delta.content if delta is not None else None)
            if text:
                added.append(text)
        state.parts.extend(added)
        return "".join(added)

    def _final(
        self, state: _StreamState, messages: Sequence[Message], prompt: str | None, start: float
    ) -> Completion:
        tool_calls = state.tools.result()
        if not state.parts and not tool_calls and state.finish is None:
            what = "no completion events" if state.events == 0 else "no content and no finish_reason"
            raise MalformedResponseError(
                f"{self.id}: malformed stream: it ended with {what}", provider=self.id
            )
        usage = state.usage
        if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
            # Some servers send no usage when streaming; estimate rather than report a free call.
            usage = Usage(
                prompt_tokens=estimate_tokens(messages) if prompt is None else len(prompt) // 4 + 1,
                completion_tokens=max(1, len("".join(state.parts)) // 4) if state.parts else 0,
                estimated=True,
            )
        return Completion(
            text="".join(state.parts),
            finish_reason=state.finish,
            usage=usage,
            cost=self._cost(usage, state.reported_cost),
            model=state.answered_by or self.remote_name,
            latency=time.perf_counter() - start,
            ttft=state.ttft,
            tool_calls=tool_calls,
        )


class _StreamState:
    """What a stream has said so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.tools = _ToolCallAccumulator()
        self.usage = Usage()
        self.reported_cost: float | None = None
        self.finish: str | None = None
        self.answered_by: str | None = None
        self.ttft: float | None = None
        self.events = 0


def _response_format(mode: StructuredMode, schema: dict[str, Any]) -> dict[str, Any]:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": False}}
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}
