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
its headers (408, or a silent close when nothing came), and refuses connections beyond ``max_connections`` at
once with a JSON 503. The body's deadline is the app's (it reads the body): ``[server] body_timeout``.
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
    max_connections: int = 512

    @classmethod
    def of(cls, settings: ServerSettings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            max_connections=settings.max_connections,
        )


def _response(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "code": code,
                "param": None,
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus ``ConnectionLimits`` (see the module docstring)."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_bytes = 0
        self._in_head = True  # reading a request line and headers (or waiting for the first byte)
        self._header_count = 0
        self._header_bytes = 0  # exact: request target plus header names and values
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            limit = self.limits.max_connections
            self._refuse(
                _response(
                    503,
                    "Service Unavailable",
                    f"too many open connections (limit {limit}); retry shortly",
                    "too_many_connections",
                )
            )
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm()
        super().data_received(data)
        if self._in_head and not self._refused and self._head_bytes > self.limits.max_header_bytes:
            self._too_large()  # no end of headers yet, and all that came is head: never buffer more

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        if self._header_count > self.limits.max_headers:
            self._refuse(
                _response(
                    431,
                    "Request Header Fields Too Large",
                    f"more than {self.limits.max_headers} request headers",
                    "too_many_headers",
                )
            )
            return
        if self._header_bytes > self.limits.max_header_bytes:
            self._too_large()
            return
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_head, self._head_bytes = True, 0  # the next request's head: timed from its first byte

    def _too_large(self) -> None:
        self._refuse(
            _response(
                431,
                "Request Header Fields Too Large",
                f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                "request_header_too_large",
            )
        )

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self._refused = True
            self.transport.close()  # nothing was asked: nothing to answer
            return
        self._refuse(
            _response(
                408,
                "Request Timeout",
                f"the request headers did not arrive within {self.limits.header_timeout:g}s",
                "request_timeout",
            )
        )

    def _refuse(self, response: bytes) -> None:
        self._refused = True
        self._disarm()
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
