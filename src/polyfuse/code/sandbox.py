"""Run untrusted code (model-written candidates, generated tests) in a confined subprocess.

Each run gets a fresh temporary directory, a wall-clock timeout (the whole process group is killed), CPU,
memory, file-size and process-count limits, and, where the kernel allows, no way out:

- Landlock (Linux 5.13+, unprivileged): writes anywhere but the run's directory (and /dev/null) are refused;
  from Landlock ABI 4 on, TCP connect and bind are refused too.
- A fresh network namespace (when permitted, e.g. as root): no network interfaces at all but loopback.

The confinement is applied by a small launcher (``python -m polyfuse.code._sandbox_exec``) in the child itself,
then it ``exec``s the command, so nothing runs in a ``preexec_fn`` of a threaded parent. What was actually
enforced is reported in ``SandboxResult.confinement``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["SandboxLimits", "SandboxResult", "run_sandboxed", "run_python"]

_OUTPUT_LIMIT = 64_000  # characters of stdout/stderr kept


@dataclass(frozen=True)
class SandboxLimits:
    timeout: float = 10.0  # wall clock, seconds
    cpu_seconds: int = 10
    memory_mb: int = 1024  # address space
    file_size_mb: int = 32
    max_processes: int = 64
    network: bool = False


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    signal: str | None = None  # name of the signal that ended the process, if any
    confinement: list[str] = field(default_factory=list)  # e.g. ["rlimits", "landlock-fs", "netns"]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def summary(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration:.1f}s"
        if self.signal:
            return f"killed by {self.signal}"
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
            return f"exit code {self.returncode}: {tail[0][:300]}"
        return "ok"


def _clip(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= _OUTPUT_LIMIT else text[:_OUTPUT_LIMIT] + "\n[... output clipped]"


async def run_sandboxed(
    argv: Sequence[str],
    *,
    files: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    stdin: str | None = None,
    limits: SandboxLimits | None = None,
    env: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run ``argv`` confined to a directory: ``workdir`` if given (the caller owns it), else a fresh temporary
    one (removed afterwards) holding ``files``."""
    limits = limits or SandboxLimits()
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="polyfuse-sandbox-")) if workdir is None else workdir.resolve()
    try:
        for name, content in (files or {}).items():
            target = (root / name).resolve()
            if root not in target.parents:
                raise ValueError(f"sandbox file {name!r} would land outside the sandbox")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        return await _run(list(argv), root, stdin, limits, env)
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


async def _run(
    argv: list[str], root: Path, stdin: str | None, limits: SandboxLimits, env: Mapping[str, str] | None
) -> SandboxResult:
    spec = json.dumps({"root": str(root), "limits": asdict(limits)})
    launcher = [sys.executable, "-I", "-m", "polyfuse.code._sandbox_exec", spec, "--", *argv]
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "TMPDIR": str(root),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *launcher,
        cwd=root,
        env=child_env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: a timeout kills everything it started
    )
    timed_out = False
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout=limits.timeout
        )
    except TimeoutError:
        timed_out = True
        _kill_group(proc.pid)
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        await proc.wait()
        raise
    finally:
        _kill_group(proc.pid)  # stragglers it left in its group
    duration = time.perf_counter() - started
    stderr = _clip(err)
    confinement: list[str] = []
    marker = "polyfuse-sandbox-confinement:"
    lines = stderr.splitlines(keepends=True)
    if lines and lines[0].startswith(marker):
        confinement = [c for c in lines[0][len(marker) :].strip().split(",") if c]
        stderr = "".join(lines[1:])
    rc = proc.returncode
    sig = signal.Signals(-rc).name if rc is not None and rc < 0 else None
    return SandboxResult(rc, _clip(out), stderr, duration, timed_out, sig, confinement)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_python(
    code: str,
    *,
    stdin: str | None = None,
    limits: SandboxLimits | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run a Python program (``main.py`` in a fresh directory) under the sandbox."""
    files = {"main.py": code, **(extra_files or {})}
    return await run_sandboxed([sys.executable, "-I", "main.py"], files=files, stdin=stdin, limits=limits)
