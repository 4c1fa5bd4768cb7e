"""The few ASGI pieces the server needs: reading a bounded body, sending JSON or a stream, and running work
that is cancelled when the client goes away. No framework: a proxy's hot path is mostly this file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .errors import ApiError

if TYPE_CHECKING:
    from .gate import Call

__all__ = [
    "Scope",
    "Receive",
    "Send",
    "Request",
    "Response",
    "JSONResponse",
    "StreamResponse",
    "ClientGone",
    "encode",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # ask reverse proxies not to buffer the stream
]


def encode(model: BaseModel, *, exclude_none: bool = False) -> bytes:
    """A response model as JSON bytes (pydantic's Rust serializer: no intermediate dict)."""
    return model.__pydantic_serializer__.to_json(model, exclude_none=exclude_none)


class ClientGone(Exception):
    """The client disconnected before the response was complete."""


@dataclass(slots=True)
class Request:
    scope: Scope
    receive: Receive
    _headers: dict[str, str] | None = None
    call: Call | None = None  # what the request did, for metrics and usage (only when the gateway is on)

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    @property
    def query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        raw = bytes(self.scope.get("query_string", b"")).decode("latin-1")
        return dict(parse_qsl(raw, keep_blank_values=True))

    @property
    def headers(self) -> Mapping[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 as soon as it is known to exceed ``limit`` bytes."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        first = await self.receive()
        chunk: bytes = first.get("body", b"")
        if not first.get("more_body"):
            if len(chunk) > limit:
                raise _too_large(limit)
            return chunk
        parts, size = [chunk], len(chunk)
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
            if not message.get("more_body"):
                return b"".join(parts)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body exceeds the limit of {limit} bytes", code="request_too_large")


@dataclass(slots=True)
class JSONResponse:
    body: bytes
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = b"application/json"

    async def send_to(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.content_type), *self.headers],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


@dataclass(slots=True)
class StreamResponse:
    """A text/event-stream body. The iterator is closed (cancelling its upstream calls) if the client leaves."""

    chunks: AsyncIterator[bytes]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send_to(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *self.headers]})
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


Response = JSONResponse | StreamResponse


def json_response(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(encode(model), status)


async def until_disconnect(receive: Receive, work: Awaitable[None]) -> None:
    """Run ``work``; if the client disconnects first, cancel it (which closes every upstream call it made)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task in done:
        task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
