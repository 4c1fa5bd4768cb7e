"""Bounded capture of a sandboxed program's stdout and stderr.

Output arrives in chunks as the program writes it and goes into a ``CappedBuffer`` that keeps the head and the
tail and counts what it dropped in between, so the parent's memory never grows with the program's output (a
program that prints forever costs the parent a fixed few tens of kilobytes).
"""

from __future__ import annotations

import asyncio

__all__ = ["CappedBuffer", "Collector"]


class CappedBuffer:
    """The first ``limit // 2`` and the last ``limit - limit // 2`` bytes of a stream, and how many were dropped."""

    def __init__(self, limit: int) -> None:
        self._head_room = max(limit // 2, 0)
        self._tail_room = max(limit - self._head_room, 0)
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        room = self._head_room - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        if len(data) >= self._tail_room:
            self.dropped += len(self._tail) + len(data) - self._tail_room
            self._tail = bytearray(data[len(data) - self._tail_room :])
            return
        self._tail += data
        excess = len(self._tail) - self._tail_room
        if excess > 0:
            del self._tail[:excess]
            self.dropped += excess

    @property
    def size(self) -> int:
        return len(self._head) + len(self._tail)

    def text(self) -> str:
        head = self._head.decode("utf-8", "replace")
        if not self.dropped:
            return (self._head + self._tail).decode("utf-8", "replace")
        tail = self._tail.decode("utf-8", "replace")
        return f"{head}\n[... {self.dropped} bytes of output dropped ...]\n{tail}"


class Collector(asyncio.SubprocessProtocol):
    """Feeds the child's stdout (fd 1) and stderr (fd 2) into capped buffers as they arrive; ``exited`` resolves
    when the process ends and ``drained`` when both pipes are closed (which a surviving grandchild could delay:
    callers wait for it only briefly)."""

    def __init__(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = CappedBuffer(limit)
        self.stderr = CappedBuffer(limit)
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        chunk = data.encode() if isinstance(data, str) else data
        (self.stdout if fd == 1 else self.stderr).feed(chunk)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
