"""The two ways ``polyfuse mcp`` serves: stdio (what agents launch) and streamable HTTP on a port."""

from __future__ import annotations

import hmac
import json
import socket
from typing import Any

from .server import PolyfuseTools, build_server

__all__ = ["serve_stdio", "serve_http", "BearerAuth"]


async def serve_stdio(tools: PolyfuseTools, version: str) -> None:
    """One client on stdin/stdout until it closes them."""
    from mcp.server.stdio import stdio_server

    server = build_server(tools, version)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await tools.aclose()


class BearerAuth:
    """ASGI wrapper: HTTP requests need ``Authorization: Bearer <key>`` with one of the server keys."""

    def __init__(self, app: Any, keys: frozenset[str]) -> None:
        self.app, self.keys = app, [k.encode() for k in keys]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not any(
                hmac.compare_digest(token.strip(), k) for k in self.keys
            ):
                body = json.dumps({"error": "missing or invalid API key: send 'Authorization: Bearer <key>'"})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


async def serve_http(
    tools: PolyfuseTools, version: str, sock: socket.socket, *, host: str, keys: frozenset[str]
) -> None:
    """Streamable HTTP at ``/mcp`` on an already bound socket (port 0 works: the caller reads the port)."""
    import uvicorn

    server = build_server(tools, version)
    app: Any = server.streamable_http_app(host=host)  # the SDK guards loopback hosts against DNS rebinding
    if keys:
        app = BearerAuth(app, keys)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        await tools.aclose()
