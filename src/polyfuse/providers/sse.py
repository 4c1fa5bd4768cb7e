"""Server-sent events: the ``data`` payloads of an ``text/event-stream`` body, comments skipped.

aiohttp has no SSE client, and the SSE clients built on it are EventSource implementations that reconnect on
their own, which is wrong for a one-shot POST stream of tokens. The part of the spec an OpenAI-style stream
uses (data lines, blank-line dispatch, ``:`` comments such as OpenRouter's keep-alives) is this small.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["iter_sse_data"]


async def iter_sse_data(lines: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Yield each event's data (multi-line data joined with newlines) from an iterable of raw lines."""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):  # comment / keep-alive
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
        # "event", "id" and "retry" carry nothing an OpenAI-style completion stream needs
    if data:
        yield "\n".join(data)
