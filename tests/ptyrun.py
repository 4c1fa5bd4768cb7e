"""Run a command with a pseudo-terminal for its stdout and stderr (live progress only draws on a terminal)."""

from __future__ import annotations

import os
import pty
from pathlib import Path


def run_in_pty(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """(exit code, everything the command wrote to the terminal)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout and stderr are the terminal
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")
