"""The helper process that writes usage records, and the server's handle on it.

One per server worker, started with the first batch: ``python -m polyfuse.gateway.usage_sink``. The worker
sends frames on its stdin (a 4-byte length, then JSON): first how to open the database (``reopen_spec``,
which may hold a password, so never on the command line), then batches of rows and charges. The helper
answers each batch with one JSON line on its stdout: ``{"written": n}`` or ``{"error": "..."}``. It exits at
end of input, so it never outlives its worker, and it ignores SIGINT and SIGTERM, so a Ctrl-C or a
supervisor's stop reaching the whole process group cannot lose the last batch the worker flushes on its way
out. A helper that died is started again with the next batch; the batch it was writing counts as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import sys
from pathlib import Path
from typing import IO, Any

import orjson

from ..store.errors import LogError

__all__ = ["SinkProcess"]

_FRAME = struct.Struct(">I")
_CLOSE_WAIT = 30.0  # seconds the helper gets to finish writing at shutdown


class SinkProcess:
    """``await write(payload)`` sends one batch and returns how many rows the helper wrote; raises ``LogError``
    when it could not (database error, helper gone). One batch at a time: the caller awaits each."""

    def __init__(self, spec: dict[str, Any], where: str) -> None:
        self._spec = orjson.dumps(spec)
        self.where = where
        self._proc: asyncio.subprocess.Process | None = None
        self.started = 0  # helpers started so far (a restart after a crash adds one)

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        package_root = str(Path(__file__).resolve().parents[2])  # polyfuse importable as the worker sees it
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "polyfuse.gateway.usage_sink",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
        except OSError as exc:
            raise LogError(f"cannot start the usage writer process: {exc}") from None
        assert proc.stdin is not None
        proc.stdin.write(_FRAME.pack(len(self._spec)) + self._spec)
        self._proc = proc
        self.started += 1
        return proc

    async def write(self, payload: bytes) -> int:
        proc = await self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(_FRAME.pack(len(payload)) + payload)
            await proc.stdin.drain()
            line = await proc.stdout.readline()
        except (ConnectionError, OSError) as exc:
            line = b""
            reason = str(exc)
        else:
            reason = "it exited"
        if not line:
            self._proc = None
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise LogError(f"the usage writer process for {self.where} stopped ({reason}); restarting it")
        reply = orjson.loads(line)
        if "error" in reply:
            raise LogError(str(reply["error"]))
        return int(reply["written"])

    async def aclose(self) -> None:
        """End of input: the helper finishes what it has and exits (killed if it takes too long)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, OSError):
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), _CLOSE_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def main() -> None:
    """The helper: open the database, then write each batch and answer it, until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..store.backends import open_backend
    from .usage import insert_rows

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    first = _read_frame(stdin)
    if first is None:
        return
    backend = None
    opening_error = ""
    try:
        backend = open_backend(orjson.loads(first))
    except LogError as exc:
        opening_error = str(exc)
    while (frame := _read_frame(stdin)) is not None:
        reply: dict[str, Any]
        if backend is None:
            reply = {"error": opening_error}
        else:
            batch = orjson.loads(frame)
            try:
                reply = {"written": insert_rows(backend, batch["rows"], batch["charges"])}
            except LogError as exc:
                reply = {"error": str(exc)}
        stdout.write(orjson.dumps(reply) + b"\n")
        stdout.flush()
    if backend is not None:
        backend.close()


if __name__ == "__main__":
    main()
