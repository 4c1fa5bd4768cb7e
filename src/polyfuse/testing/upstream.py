"""A real OpenAI-compatible HTTP server on loopback with scripted behaviour per model name.

Used by the tests (error mapping, retries, SSE keep-alives, mid-stream errors) and by the benchmarks (an
upstream with a set latency per model that answers at once otherwise). A raw ASGI app on uvicorn: no framework
overhead, so it is never the bottleneck being measured. Needs ``uvicorn`` (the ``dev`` extra).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Behaviour", "FakeUpstream", "serve_forever"]


@dataclass
class Behaviour:
    """What the upstream does for one model. ``statuses`` are answered first, one per request, before success."""

    text: str = "Hello from the fake upstream."
    latency: float = 0.0
    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    error_body: dict[str, Any] | None = None
    keepalive: bool = False  # send ": OPENROUTER PROCESSING" comment lines before the first chunk
    midstream_error: bool = False  # after one content chunk, an error event with finish_reason "error"
    cost: float | None = None
    answered_by: str | None = None  # "model" field in the reply (fallback routing)
    chunks: int = 4
    tool_calls: list[dict[str, Any]] | None = None
    # hostile or broken upstreams: a raw 200 body instead of a completion (``body`` sent ``repeat`` times, a
    # pause of ``drip`` seconds before each piece), or ``hang``: accept the request and never answer
    body: bytes | None = None
    repeat: int = 1
    drip: float = 0.0
    content_type: str = "application/json"
    hang: bool = False


class FakeUpstream:
    """Start with ``with FakeUpstream({...}) as up: up.base_url``; ``up.requests`` records every body seen."""

    def __init__(
        self, behaviours: dict[str, Behaviour] | None = None, default: Behaviour | None = None
    ) -> None:
        self.behaviours = behaviours or {}
        self.default = default or Behaviour()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.active = 0
        self.disconnects = 0
        self._counts: dict[str, int] = defaultdict(int)
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- ASGI ---------------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            data = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.behaviours]}
            await _send_json(send, 200, data)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body or b"{}")
        request["_path"] = path  # which endpoint: /chat/completions or the legacy /completions
        self.requests.append(request)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        model = str(request.get("model", ""))
        b = self.behaviours.get(model, self.default)
        n = self._counts[model]
        self._counts[model] += 1
        self.active += 1
        try:
            if n < len(b.statuses):
                headers = [(b"retry-after", b.retry_after.encode())] if b.retry_after else []
                err = b.error_body or {
                    "error": {"code": b.statuses[n], "message": f"scripted status {b.statuses[n]}"}
                }
                await _send_json(send, b.statuses[n], err, headers)
                return
            if b.latency and await _disconnected_within(b.latency, receive):
                self.disconnects += 1  # the client gave up while we were "thinking"
                return
            if b.hang:
                await _disconnected_within(3600, receive)
                self.disconnects += 1
                return
            if b.body is not None:
                await self._raw(send, b, receive)
                return
            if request.get("stream"):
                await self._stream(send, request, b, receive)
            else:
                await _send_json(send, 200, self._completion(request, b))
        except asyncio.CancelledError:
            self.disconnects += 1
            raise
        finally:
            self.active -= 1

    async def _raw(self, send: Any, b: Behaviour, receive: Any) -> None:
        assert b.body is not None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b.content_type.encode())],
            }
        )
        for _ in range(b.repeat):
            if b.drip and await _disconnected_within(b.drip, receive):
                self.disconnects += 1
                return
            await send({"type": "http.response.body", "body": b.body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _usage(self, request: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": len(b.text.split()),
            "total_tokens": prompt + len(b.text.split()),
        }
        if b.cost is not None:
            usage["cost"] = b.cost
        return usage

    def _completion(self, request: dict[str, Any], b: Behaviour) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": b.text}
        if b.tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": b.tool_calls}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": b.answered_by or request.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if b.tool_calls else "stop"}
            ],
            "usage": self._usage(request, b),
        }

    async def _stream(self, send: Any, request: dict[str, Any], b: Behaviour, receive: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        model = b.answered_by or request.get("model")

        async def event(data: str) -> None:
            await send(
                {"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True}
            )

        if b.keepalive:
            for _ in range(2):
                await send(
                    {"type": "http.response.body", "body": b": OPENROUTER PROCESSING\n\n", "more_body": True}
                )
        size = max(1, -(-len(b.text) // max(1, b.chunks)))
        pieces = [b.text[i : i + size] for i in range(0, len(b.text), size)]
        for i, piece in enumerate(pieces):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [
                    {"index": 0, "text": piece, "finish_reason": None}
                    if "prompt" in request
                    else {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                ],
            }
            await event(json.dumps(chunk))
            if b.midstream_error and i == 0:
                err = {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "error": {"code": 502, "message": "provider disconnected"},
                    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                }
                await event(json.dumps(err))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
        if b.tool_calls:
            for idx, call in enumerate(b.tool_calls):
                args = call["function"]["arguments"]
                half = len(args) // 2
                for part, first in ((args[:half], True), (args[half:], False)):
                    delta: dict[str, Any] = {"index": idx, "function": {"arguments": part}}
                    if first:
                        delta.update(id=call["id"], type="function")
                        delta["function"]["name"] = call["function"]["name"]
                    await event(
                        json.dumps(
                            {
                                "model": model,
                                "choices": [
                                    {"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}
                                ],
                            }
                        )
                    )
        final: dict[str, Any] = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if b.tool_calls else "stop"}],
        }
        await event(json.dumps(final))
        if (request.get("stream_options") or {}).get("include_usage"):
            await event(
                json.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [],
                        "usage": self._usage(request, b),
                    }
                )
            )
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _disconnected_within(seconds: float, receive: Any) -> bool:
    """Sleep ``seconds`` unless the client disconnects first (then True): lets tests see cancellations."""

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(watch())
    done, pending = await asyncio.wait((sleeper, watcher), return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return watcher in done


async def _send_json(
    send: Any, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve_forever(
    behaviours: dict[str, Behaviour], port_queue: Any = None, default: Behaviour | None = None
) -> None:
    """Run an upstream until the process is killed (benchmarks start it in a separate process, so that its
    work does not share a GIL with what is being measured). Puts the port on ``port_queue`` once listening."""
    up = FakeUpstream(behaviours, default).start()
    if port_queue is not None:
        port_queue.put(up.port)
    assert up._thread is not None
    up._thread.join()
