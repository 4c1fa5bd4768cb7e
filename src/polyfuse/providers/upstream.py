"""One OpenAI-compatible endpoint: its long-lived aiohttp session, its limits, and bounded reads of its bodies.

One ``Upstream`` per base URL and key, shared by every model on it and closed by the hub on shutdown (or when
the hub's bounded cache evicts it: closed as soon as no call is using it). aiohttp rather than httpx: measured
here, httpx spent about 5 ms of CPU per request against 0.6-1 ms for aiohttp, and a fusion issues several
requests at once (bench/README.md).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from ..errors import MalformedResponseError, ProviderError, ProviderTimeoutError, UpstreamError
from ..settings import DEFAULT_MAX_RESPONSE_BYTES
from .retry import RetryPolicy

__all__ = [
    "Upstream",
    "StructuredMode",
    "request_headers",
    "read_capped",
    "retry_after",
    "transport_error",
    "TRANSPORT_ERRORS",
]

# Extra headers for the calls made in the current context (task): the server forwards its hop count this way
# (a recursion guard) without touching the shared sessions. Tasks copy the context, so it reaches the pool.
request_headers: ContextVar[Mapping[str, str] | None] = ContextVar("polyfuse_request_headers", default=None)

# How to ask for JSON output: OpenAI's json_schema, llama.cpp's json_object+schema, plain json_object, none.
StructuredMode = Literal["json_schema", "json_object_schema", "json_object", "none"]
_ERROR_BODY_BYTES = 65536  # of an error response: enough for any real message, no more
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


@dataclass(eq=False)
class Upstream:
    """One OpenAI-compatible endpoint and its long-lived client."""

    name: str
    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    structured: StructuredMode = "json_schema"  # the form first tried; each model learns its own from there
    text_completion: bool = False  # serves /completions with raw prompts (fill-in-the-middle)
    extra_body: dict[str, Any] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    _in_flight: int = field(default=0, repr=False)
    _retired: bool = field(default=False, repr=False)
    _closing: asyncio.Task[None] | None = field(default=None, repr=False)

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
                raise_for_status=False,
            )
        return self._session

    def post(self, path: str, body: dict[str, Any], remaining: float | None) -> Any:
        """``session.post`` (an async context manager) with the hop headers and, when the call has a deadline,
        a per-request timeout whose ``total`` covers the body too (``timeout=None`` would mean none at all)."""
        extra: dict[str, Any] = {}
        if remaining is not None:
            extra["timeout"] = aiohttp.ClientTimeout(
                total=max(0.001, remaining), connect=self.connect_timeout, sock_read=self.read_timeout
            )
        return self.session.post(self.url(path), json=body, headers=request_headers.get(), **extra)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def using(self) -> _InFlight:
        """Count a call in flight, so that an evicted upstream closes only once its last call is done."""
        return _InFlight(self)

    def _release(self) -> None:
        self._in_flight -= 1
        if self._retired and self._in_flight == 0:
            self._close_soon()

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def retire(self) -> None:
        """Evicted from the hub's cache: close now if idle, else when the last call in flight ends."""
        self._retired = True
        if self._in_flight == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._session is None:
            return
        session, self._session = self._session, None
        self._closing = asyncio.get_running_loop().create_task(session.close())

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _InFlight:
    """``with upstream.using():`` (a plain class: this is on every call's path, @contextmanager costs more)."""

    __slots__ = ("upstream",)

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def __enter__(self) -> None:
        self.upstream._in_flight += 1

    def __exit__(self, *exc: object) -> None:
        self.upstream._release()


def retry_after(headers: Any) -> float | None:
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


async def read_capped(response: aiohttp.ClientResponse, cap: int, provider: str) -> bytes:
    """The whole body of a response, refused (``MalformedResponseError``) as soon as it exceeds ``cap``."""
    if response.status >= 400:
        cap, refuse = _ERROR_BODY_BYTES, False  # an error body is only read for its message: cut, not refused
    else:
        refuse = True
    declared = response.content_length
    if declared is not None and declared <= cap:
        return await response.read()  # the usual case, and the fastest: the length is known and allowed
    if refuse and declared is not None:
        raise _too_large(provider, cap)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > cap:
            if refuse:
                raise _too_large(provider, cap)
            parts.append(chunk[: cap - (size - len(chunk))])
            break
        parts.append(chunk)
    return b"".join(parts)


async def content_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in response.content.iter_any():
        yield chunk


def _too_large(provider: str, cap: int) -> MalformedResponseError:
    return MalformedResponseError(
        f"{provider}: response too large: it exceeds {cap} bytes", provider=provider
    )


def transport_error(exc: BaseException, provider: str) -> ProviderError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return ProviderTimeoutError(f"{provider}: {type(exc).__name__}: timed out", provider=provider)
    return UpstreamError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)
