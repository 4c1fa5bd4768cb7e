"""Server-sent events: the ``data`` payloads of an ``text/event-stream`` body, comments skipped, sizes bounded.

aiohttp has no SSE client, and the SSE clients built on it are EventSource implementations that reconnect on
their own, which is wrong for a one-shot POST stream of tokens. The part of the spec an OpenAI-style stream
uses (data lines, blank-line dispatch, ``:`` comments such as OpenRouter's keep-alives) is this small. The
upstream is not trusted: a line longer than ``max_line``, a stream longer than ``max_total`` or bytes that are
not UTF-8 end it with a ``MalformedResponseError``, before they can fill memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from ..errors import MalformedResponseError

__all__ = ["iter_sse_data", "iter_lines", "MAX_LINE"]

MAX_LINE = 2**21  # one SSE line (a large tool call fits; a 5 MB line does not)


async def iter_lines(
    chunks: AsyncIterable[bytes], *, max_line: int = MAX_LINE, max_total: int | None = None, source: str = ""
) -> AsyncIterator[bytes]:
    """Split raw byte chunks into lines (without the newline), refusing over-long lines and bodies. A partial
    line grows in a bytearray: a line dripped one byte at a time costs linear time, not quadratic."""
    buf = bytearray()
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if max_total is not None and total > max_total:
            raise MalformedResponseError(
                f"{source}: response too large: the stream exceeds {max_total} bytes", provider=source
            )
        newline = chunk.find(b"\n")
        if newline < 0:
            buf += chunk
            if len(buf) > max_line:
                raise _too_long(source, max_line)
            continue
        buf += chunk[:newline]
        *lines, tail = chunk[newline + 1 :].split(b"\n")
        for line in (bytes(buf), *lines):
            if len(line) > max_line:
                raise _too_long(source, max_line)
            yield line
        buf = bytearray(tail)
        if len(buf) > max_line:
            raise _too_long(source, max_line)
    if buf:
        yield bytes(buf)


def _too_long(source: str, max_line: int) -> MalformedResponseError:
    return MalformedResponseError(
        f"{source}: malformed stream: a line exceeds {max_line} bytes", provider=source
    )


async def iter_sse_data(lines: AsyncIterable[bytes], source: str = "") -> AsyncIterator[str]:
    """Yield each event's data (multi-line data joined with newlines) from an iterable of raw lines."""
    data: list[str] = []
    async for raw in lines:
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise MalformedResponseError(
                f"{source}: malformed stream: not valid UTF-8", provider=source
            ) from None
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
