"""OpenAI-compatible chat completions over HTTP: OpenRouter, OpenAI, Gemini, Anthropic, vLLM, llama.cpp, ...

One ``Upstream`` (a long-lived ``aiohttp.ClientSession``) per base URL and key, shared by every model on it
and closed by the hub on shutdown. aiohttp rather than httpx: measured here, httpx spent about 5 ms of CPU per
request against 0.6-1 ms for aiohttp, and a fusion issues several requests at once (bench/README.md). HTTP statuses and ``{"error": {...}}`` bodies become typed errors here; 429 and
5xx are retried with backoff honouring ``Retry-After``, but only before any token has been streamed.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from ..errors import (
    AuthenticationError,
    BadUpstreamRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UpstreamError,
)
from ..types import Completion, GenerationParams, Message, Usage
from .base import ChatModel, Delta, StreamEvent
from .logprobs import MeanLogprob, OptionLogprobs, Options, http_option_logprobs
from .pricing import PriceTable, estimate_tokens
from .sse import iter_sse_data

__all__ = ["Upstream", "OpenAICompatModel", "StructuredMode", "request_headers"]

# Extra headers for the calls made in the current context (task): the server forwards its hop count this way
# (a recursion guard) without touching the shared sessions. Tasks copy the context, so it reaches the pool.
request_headers: ContextVar[Mapping[str, str] | None] = ContextVar("polyfuse_request_headers", default=None)

# How to ask for JSON output: OpenAI's json_schema, llama.cpp's json_object+schema, plain json_object, none.
StructuredMode = Literal["json_schema", "json_object_schema", "json_object", "none"]
_FALLBACK: dict[StructuredMode, StructuredMode] = {
    "json_schema": "json_object_schema",
    "json_object_schema": "json_object",
    "json_object": "none",
}
_MAX_RETRY_AFTER = 60.0
_DROPPABLE = ("temperature", "top_p", "seed", "stop", "stream_options", "logprobs")


@dataclass
class Upstream:
    """One OpenAI-compatible endpoint and its long-lived client."""

    name: str
    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    max_retries: int = 2
    structured: StructuredMode = "json_schema"
    text_completion: bool = False  # serves /completions with raw prompts (fill-in-the-middle)
    extra_body: dict[str, Any] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use inside the running loop."""
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "polyfuse", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=30),
                read_bufsize=2**20,  # one SSE line may carry a large tool call
                raise_for_status=False,
            )
        return self._session

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _error_message(body: bytes, fallback: str) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or fallback
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or fallback)
    if isinstance(err, str):
        return err
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:300]
    return fallback


def error_from_status(
    status: int, body: bytes, provider: str, retry_after: float | None = None
) -> ProviderError:
    """Translate an HTTP error status (and OpenAI-style body) into the typed error tree."""
    msg = f"{provider}: HTTP {status}: {_error_message(body, 'no detail')}"
    if status in (401, 403):
        return AuthenticationError(msg, status=status, provider=provider)
    if status == 429:
        return RateLimitedError(msg, retry_after=retry_after, status=status, provider=provider)
    if status in (408, 504, 524):
        return ProviderTimeoutError(msg, status=status, provider=provider)
    if status >= 500:
        return UpstreamError(msg, status=status, provider=provider)
    return BadUpstreamRequestError(msg, status=status, provider=provider)


def _backoff(exc: ProviderError, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): the upstream's Retry-After when it gave one."""
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        return float(min(exc.retry_after, _MAX_RETRY_AFTER))
    return min(0.5 * 2.0 ** (attempt - 1), 8.0)


def _transport_error(exc: BaseException, provider: str) -> ProviderError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return ProviderTimeoutError(f"{provider}: {type(exc).__name__}: timed out", provider=provider)
    return UpstreamError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)


_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class _ToolCallAccumulator:
    """Stream deltas carry tool calls in pieces keyed by index; join them into OpenAI's final form."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            call = self.calls.setdefault(
                int(d.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if d.get("id"):
                call["id"] = d["id"]
            fn = d.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            call["function"]["arguments"] += fn.get("arguments") or ""

    def result(self) -> list[dict[str, Any]] | None:
        return [self.calls[i] for i in sorted(self.calls)] or None


class OpenAICompatModel(ChatModel):
    kind = "chat"
    supports_json_schema = True

    def __init__(self, model_id: str, remote_name: str, upstream: Upstream, prices: PriceTable) -> None:
        self.id = model_id
        self.remote_name = remote_name
        self.upstream = upstream
        self.prices = prices
        self.supports_json_schema = upstream.structured != "none"
        self.supports_text_completion = upstream.text_completion
        self.dropped: set[str] = set()  # optional parameters this backend refused
        self.supports_logprobs: bool | None = None  # learned on the first probability-scoring call

    # -- request building -------------------------------------------------------------------------------------
    def _body(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        stream: bool,
        mode: StructuredMode,
        prompt: str | None = None,
    ) -> dict[str, Any]:
        """A chat completions body, or with ``prompt`` a (legacy) text completions body."""
        body: dict[str, Any] = {"model": self.remote_name}
        if prompt is None:
            body["messages"] = [m.to_openai() for m in messages]
        else:
            body["prompt"] = prompt
        keys = ("temperature", "max_tokens", "top_p", "stop", "seed")
        for key in keys if prompt is not None else (*keys, "tools", "tool_choice", "logprobs"):
            value = getattr(params, key)
            if value is not None and key not in self.dropped:
                body[key] = value
        if params.json_schema is not None and mode != "none" and prompt is None:
            body["response_format"] = _response_format(mode, params.json_schema)
        if stream:
            body["stream"] = True
            if "stream_options" not in self.dropped:
                body["stream_options"] = {"include_usage": True}
        body.update(self.upstream.extra_body)
        return body

    def _cost(self, usage: Usage, reported: Any) -> float | None:
        if isinstance(reported, int | float):
            return float(reported)
        return self.prices.cost(self.id, usage)

    def _step_down(self, exc: ProviderError, params: GenerationParams, mode: StructuredMode) -> bool:
        """Adapt to what this backend refuses, remember it, and say whether to try again at once:
        - a response_format it does not know (a 4xx, or a 500 naming it, as llama_cpp.server answers): step
          down to the next form for this upstream;
        - an optional parameter it rejects by name (reasoning models refuse temperature, some servers
          stream_options): stop sending it to this model."""
        if (
            params.json_schema is not None
            and mode != "none"
            and (isinstance(exc, BadUpstreamRequestError) or "response_format" in str(exc))
        ):
            self.upstream.structured = _FALLBACK[mode]
            self.supports_json_schema = self.upstream.structured != "none"
            return True
        if isinstance(exc, BadUpstreamRequestError):
            message = str(exc)
            for key in _DROPPABLE:
                if key in message and key not in self.dropped:
                    self.dropped.add(key)
                    return True
        return False

    # -- calls ------------------------------------------------------------------------------------------------
    async def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        start = time.perf_counter()
        data = await self._with_retries(lambda mode: self._post_once(messages, params, mode), params)
        latency = time.perf_counter() - start
        if "error" in data and data.get("error"):
            raise UpstreamError(
                f"{self.id}: {_error_message(json.dumps(data).encode(), 'error')}", provider=self.id
            )
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"{self.id}: malformed response without choices", provider=self.id) from None
        usage_raw = data.get("usage") or {}
        usage = Usage(
            prompt_tokens=int(usage_raw.get("prompt_tokens") or 0),
            completion_tokens=int(usage_raw.get("completion_tokens") or 0),
        )
        return Completion(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            cost=self._cost(usage, usage_raw.get("cost")),
            model=str(data.get("model") or self.remote_name),
            latency=latency,
            ttft=latency,
            tool_calls=message.get("tool_calls") or None,
            logprob=_mean_logprob(choice.get("logprobs")),
        )

    async def _post_once(
        self, messages: Sequence[Message], params: GenerationParams, mode: StructuredMode
    ) -> Any:
        up = self.upstream
        try:
            async with up.session.post(
                up.url("/chat/completions"),
                json=self._body(messages, params, False, mode),
                headers=request_headers.get(),
            ) as r:
                raw = await r.read()
                if r.status >= 400:
                    raise error_from_status(r.status, raw, self.id, _retry_after(r.headers))
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, self.id) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise UpstreamError(f"{self.id}: response is not JSON", provider=self.id) from None

    async def _with_retries(self, call: Any, params: GenerationParams) -> Any:
        attempt = 0
        while True:
            mode = self.upstream.structured
            try:
                return await call(mode)
            except ProviderError as exc:
                if self._step_down(exc, params, mode):
                    continue
                if not exc.retryable or attempt >= self.upstream.max_retries:
                    raise
                attempt += 1
                await asyncio.sleep(_backoff(exc, attempt))

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[StreamEvent]:
        return self._stream(messages, params, None)

    def stream_text(self, prompt: str, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Continue a raw prompt through ``/completions`` (fill-in-the-middle on vLLM, llama.cpp, Ollama...)."""
        return self._stream([], params, prompt)

    async def _stream(
        self, messages: Sequence[Message], params: GenerationParams, prompt: str | None
    ) -> AsyncIterator[StreamEvent]:
        start = time.perf_counter()
        attempt = 0
        while True:
            mode = self.upstream.structured
            started = False
            try:
                async for event in self._stream_once(messages, params, mode, start, prompt):
                    started = True
                    yield event
                return
            except ProviderError as exc:
                if not started and self._step_down(exc, params, mode):
                    continue
                if started or not exc.retryable or attempt >= self.upstream.max_retries:
                    raise
                attempt += 1
                await asyncio.sleep(_backoff(exc, attempt))

    async def _stream_once(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        mode: StructuredMode,
        start: float,
        prompt: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        body = self._body(messages, params, True, mode, prompt)
        path = "/chat/completions" if prompt is None else "/completions"
        parts: list[str] = []
        tools = _ToolCallAccumulator()
        usage = Usage()
        reported_cost: Any = None
        finish: str | None = None
        answered_by = self.remote_name
        ttft: float | None = None
        token_logprobs = MeanLogprob()
        up = self.upstream
        try:
            async with up.session.post(up.url(path), json=body, headers=request_headers.get()) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise error_from_status(response.status, raw, self.id, _retry_after(response.headers))
                async for data in iter_sse_data(response.content):
                    data = data.strip()
                    if not data or data == "[DONE]":
                        continue  # read on to the end: a fully read response keeps the connection alive
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise UpstreamError(f"{self.id}: malformed stream event", provider=self.id) from None
                    if chunk.get("error"):
                        raise UpstreamError(
                            f"{self.id}: error mid-stream: {_error_message(data.encode(), 'error')}",
                            provider=self.id,
                        )
                    answered_by = str(chunk.get("model") or answered_by)
                    if chunk.get("usage"):
                        u = chunk["usage"]
                        usage = Usage(
                            prompt_tokens=int(u.get("prompt_tokens") or 0),
                            completion_tokens=int(u.get("completion_tokens") or 0),
                        )
                        reported_cost = u.get("cost", reported_cost)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                            if finish == "error":
                                raise UpstreamError(
                                    f"{self.id}: stream ended with an error", provider=self.id
                                )
                        if delta.get("tool_calls"):
                            tools.add(delta["tool_calls"])
                        token_logprobs.add_openai(choice.get("logprobs"))
                        text = delta.get("content") if prompt is None else choice.get("text")
                        if text:
                            if ttft is None:
                                ttft = time.perf_counter() - start
                            parts.append(text)
                            yield Delta(text)
        except _TRANSPORT_ERRORS as exc:
            raise _transport_error(exc, self.id) from None
        if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
            # Some servers send no usage when streaming; estimate rather than report a free call.
            usage = Usage(
                prompt_tokens=estimate_tokens(messages) if prompt is None else len(prompt) // 4 + 1,
                completion_tokens=max(1, len("".join(parts)) // 4) if parts else 0,
                estimated=True,
            )
        yield Completion(
            text="".join(parts),
            finish_reason=finish,
            usage=usage,
            cost=self._cost(usage, reported_cost),
            model=answered_by,
            latency=time.perf_counter() - start,
            ttft=ttft,
            tool_calls=tools.result(),
            logprob=token_logprobs.mean(),
        )

    # -- probability scoring (providers/logprobs.py) ----------------------------------------------------------
    async def option_logprobs(
        self, messages: Sequence[Message], options: Options, params: GenerationParams
    ) -> OptionLogprobs:
        return await http_option_logprobs(self, messages, options)

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST a ready-made body to ``path`` (retried like any call); the parsed JSON reply."""

        async def once(mode: StructuredMode) -> Any:
            up = self.upstream
            try:
                async with up.session.post(up.url(path), json=body, headers=request_headers.get()) as r:
                    raw = await r.read()
                    if r.status >= 400:
                        raise error_from_status(r.status, raw, self.id, _retry_after(r.headers))
            except _TRANSPORT_ERRORS as exc:
                raise _transport_error(exc, self.id) from None
            try:
                return json.loads(raw)
            except ValueError:
                raise UpstreamError(f"{self.id}: response is not JSON", provider=self.id) from None

        return await self._with_retries(once, GenerationParams())


def _mean_logprob(logprobs: Any) -> float | None:
    acc = MeanLogprob()
    acc.add_openai(logprobs)
    return acc.mean()


def _response_format(mode: StructuredMode, schema: dict[str, Any]) -> dict[str, Any]:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": False}}
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_object"}
