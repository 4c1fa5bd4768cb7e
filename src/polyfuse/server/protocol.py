"""uvicorn's httptools protocol with the limits it lacks: header size and count, a header deadline, and a cap
on open connections answered with a clean 503.

What uvicorn and httptools bound on their own, measured here: uvicorn closes an idle keep-alive connection after
``timeout_keep_alive`` (used, from ``[server] keepalive_timeout``), but only after a first response: a connection
that never sends a byte, or sends its headers slowly, is kept for ever. httptools (llhttp) has no limit on the
size of a header: it buffers a header value until it ends (20 connections each sending an unfinished 50 MB header
took the server from 220 MB to 1.48 GB), and uvicorn's ``h11_max_incomplete_event_size`` applies to h11 only.
uvicorn's ``limit_concurrency`` answers plain text, and only once a request's headers have arrived, so idle
connections beyond it still hold file descriptors. Hence this subclass: it counts the bytes of a request head
as they arrive (refused with 431 past ``max_header_bytes``, before httptools can buffer more than one read), the
headers (431 past ``max_headers``), arms a timer from the connection (or a request's first byte) to the end of
its headers (408, or a silent close when nothing came) and from the headers to the end of the body (408), and
refuses connections beyond ``max_connections`` at once with a JSON 503.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import ServerSettings

__all__ = ["ConnectionLimits", "BoundedHttpToolsProtocol", "protocol_factory", "uvicorn_config"]


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 32768
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 512

    @classmethod
    def of(cls, settings: ServerSettings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections,
        )


def _response(status: int, reason: str, message: str, code: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


_IDLE, _HEAD, _BODY, _HANDLING = range(4)  # what the connection is waiting for


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus ``ConnectionLimits`` (see the module docstring).

    The deadlines cost nothing per request: a request only notes when its current phase (head, then body)
    began; one timer per connection, armed when none is pending, checks on firing and re-arms for what is left.
    (A timer armed and cancelled per request, or an ``asyncio.timeout`` in the app, measurably slowed the
    pass-through.)"""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._phase = _HEAD  # a new connection owes its first request's head
        self._since = 0.0
        self._head_bytes = 0  # bytes received while the head is incomplete (all of them are head)
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            limit = self.limits.max_connections
            message = f"too many open connections (limit {limit}); retry shortly"
            self._refuse(_response(503, "Service Unavailable", message, "too_many_connections"))
            return
        self._enter(_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._phase == _IDLE:  # the first byte of the next request on a keep-alive connection
            self._enter(_HEAD)
        if self._phase == _HEAD:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._phase == _HEAD and not self._refused and self._head_bytes > self.limits.max_header_bytes:
            self._too_large()  # no end of headers yet, and all that came is head: never buffer more

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.limits.max_headers:
            message = f"more than {self.limits.max_headers} request headers"
            self._refuse(_response(431, "Request Header Fields Too Large", message, "too_many_headers"))
            return
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            self._too_large()
            return
        self._enter(_BODY)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            self._phase = _HANDLING
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._phase, self._head_bytes = _IDLE, 0  # idle keep-alive: uvicorn's own timer closes it

    def _enter(self, phase: int) -> None:
        self._phase, self._since = phase, self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(self._limit(phase), self._check)

    def _limit(self, phase: int) -> float:
        return self.limits.header_timeout if phase == _HEAD else self.limits.body_timeout

    def _check(self) -> None:
        self._timer = None
        if self._phase not in (_HEAD, _BODY) or self.transport.is_closing():
            return
        left = self._since + self._limit(self._phase) - self.loop.time()
        if left > 0:
            self._timer = self.loop.call_later(left, self._check)
        elif self._phase == _HEAD and self._head_bytes == 0:
            self._refused = True
            self.transport.close()  # nothing was asked: nothing to answer
        elif self._phase == _HEAD:
            message = f"the request headers did not arrive within {self.limits.header_timeout:g}s"
            self._refuse(_response(408, "Request Timeout", message, "request_timeout"))
        elif self.cycle is not None and self.cycle.response_started:
            self._refused = True
            self.transport.close()  # the app already answered (e.g. 413): just stop waiting for the body
        else:
            message = f"the request body did not arrive within {self.limits.body_timeout:g}s"
            self._refuse(_response(408, "Request Timeout", message, "request_timeout"))

    def _too_large(self) -> None:
        message = f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
        self._refuse(_response(431, "Request Header Fields Too Large", message, "request_header_too_large"))

    def _refuse(self, response: bytes) -> None:
        self._refused = True
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def protocol_factory(settings: ServerSettings) -> Any:
    """What to pass as uvicorn's ``http``: the protocol class with this server's limits bound (picklable, so
    ``--workers N`` can hand it to each worker process)."""
    return functools.partial(BoundedHttpToolsProtocol, limits=ConnectionLimits.of(settings))


def uvicorn_config(app: Any, settings: ServerSettings, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` (an ASGI app or an import string) under this server's limits."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=protocol_factory(settings),
        timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]  # a float works: call_later
        **kwargs,
    )
