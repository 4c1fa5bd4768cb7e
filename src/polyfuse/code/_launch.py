"""What the two sandboxes (bwrap, the Landlock fallback) share: how a run is launched, admitted into its cgroup,
stopped, and what it ended with."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Protocol

from ._cgroup import Cgroup

__all__ = ["Outcome", "Launch", "read_until_eof", "signal_name", "close_fds"]


@dataclass
class Outcome:
    returncode: int | None
    signal: str | None = None
    confinement: list[str] = field(default_factory=list)
    error: str | None = None  # the sandbox could not start the program


class Launch(Protocol):
    argv: list[str]
    pass_fds: tuple[int, ...]
    user: int | None  # the uid to start argv as (None: polyfuse's own)

    def spawned(self) -> None:
        """Close the ends of the pipes that now belong to the child."""

    async def admit(self, pid: int, cgroup: Cgroup | None, timeout: float) -> bool:
        """Put the run into its cgroup before the program starts (True when it is in), then let it start."""

    def stop(self, pid: int) -> None:
        """The time is up (or the caller gave up): end the whole run."""

    def outcome(self, returncode: int) -> Outcome: ...

    def close(self) -> None: ...


async def read_until_eof(fd: int, timeout: float, limit: int = 65536) -> bytes:
    """Read a pipe to its end without blocking the event loop; what came by ``timeout`` (at most ``limit``)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    data = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk and len(data) < limit:
            data.extend(chunk[: limit - len(data)])
        if not chunk and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(fd)
    return bytes(data)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def close_fds(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
