"""Run untrusted code (model-written candidates, generated tests, a command being debugged) in a sandbox.

Candidate code is an attacker's program: a repository the model read can prompt-inject it. Each run gets a work
directory (the only place it can write), a wall-clock timeout after which every process it started is killed,
CPU, memory, file-size and process-count limits, and output capped as it arrives (head and tail kept). Two
sandboxes, chosen once per process:

- ``bwrap`` (bubblewrap) where it can run: new user, PID, network, IPC, UTS and mount namespaces, uid 65534,
  an empty root with a read-only view of the system, the interpreter and the project's dependencies. See
  ``_bwrap``.
- the ``landlock`` fallback elsewhere: Landlock, seccomp, resource limits and a reaper. It is weaker (see the
  README); a run needs ``allow_weak`` (``[code] allow_weak_sandbox = true``) to use it.

Where a cgroup can be made (``_cgroup``), the run's memory limit holds for all its processes together, the
process limit holds for root too, and killing the cgroup is one more way nothing survives the run.
What was in force is reported in ``SandboxResult.sandbox`` and ``SandboxResult.confinement``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..errors import UserError
from . import _bwrap, _fallback
from ._capture import Collector
from ._cgroup import Cgroup, find_parent
from ._launch import Launch
from ._view import SANDBOX_UID, host_view, unreachable_by_others

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "SandboxInfo",
    "SandboxUnavailableError",
    "sandbox_info",
    "require_sandbox",
    "run_sandboxed",
    "run_python",
]

Backend = Literal["auto", "bwrap", "landlock"]

_STOP_GRACE = 3.0  # seconds the fallback's reaper gets to kill the run before it is killed itself
_DRAIN_GRACE = 1.0  # seconds to wait for the pipes to close once the run has ended


@dataclass(frozen=True)
class SandboxLimits:
    timeout: float = 10.0  # wall clock, seconds
    cpu_seconds: int = 10  # per process
    memory_mb: int = 1024  # per process (address space) and, with a cgroup, for the whole run
    file_size_mb: int = 32  # largest file it may write
    max_processes: int = 64  # processes and threads at once
    network: bool = False
    output_bytes: int = 64_000  # kept of stdout and of stderr each (head and tail)
    backend: Backend = "auto"
    allow_weak: bool = False  # run under the Landlock fallback when bwrap cannot run


@dataclass
class SandboxResult:
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    signal: str | None = None  # name of the signal that ended the program, if any
    confinement: list[str] = field(default_factory=list)  # e.g. ["bwrap", "userns", ..., "cgroup-memory"]
    sandbox: str = ""  # which sandbox ran: "bwrap" or "landlock (weak)"
    out_of_memory: bool = False  # the run's memory limit made the kernel kill one of its processes
    stdout_dropped: int = 0  # bytes of output dropped between the head and the tail kept
    stderr_dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def summary(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration:.1f}s"
        if self.out_of_memory and self.returncode != 0:
            return "killed: out of memory (the run's memory limit)"
        if self.signal:
            return f"killed by {self.signal}"
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
            return f"exit code {self.returncode}: {tail[0][:300]}"
        return "ok"


class SandboxUnavailableError(UserError):
    """No adequate sandbox here, and the caller did not allow the weak one."""


@dataclass(frozen=True)
class SandboxInfo:
    backend: Literal["bwrap", "landlock"]
    adequate: bool
    detail: str  # one line: what runs, or what is missing
    uid: int | None  # the uid outside the namespace the program runs as (None: polyfuse's own)
    cgroup: bool

    @property
    def label(self) -> str:
        return self.backend if self.adequate else f"{self.backend} (weak)"


def sandbox_info(backend: Backend = "auto") -> SandboxInfo:
    """Which sandbox runs here and whether it is adequate (probed once per process)."""
    parent = find_parent()
    cgroup = parent is not None
    cgroups = f"cgroup v{parent.version} memory+pids" if parent is not None else "no cgroup"
    if backend != "landlock":
        p = _bwrap.plan()
        if isinstance(p, _bwrap.BwrapPlan):
            if p.user is not None or os.geteuid() != 0 or cgroup:
                outside = f"{SANDBOX_UID} outside too" if p.user is not None else f"{os.geteuid()} outside"
                if p.user is None and os.geteuid() == 0:
                    outside = "0 outside, no capabilities"
                how = f"bwrap: uid {SANDBOX_UID} in its user namespace (uid {outside}), {cgroups}"
                return SandboxInfo("bwrap", True, how, p.user, cgroup)
            blocked = unreachable_by_others(host_view().readable) or sys.prefix
            why = (
                f"bwrap runs as root with no process limit: {blocked} is not readable by uid {SANDBOX_UID}"
                " and there is no cgroup with a pids controller"
            )
            return SandboxInfo("bwrap", False, why, p.user, cgroup)
        why = p
    else:
        why = "the Landlock sandbox was asked for"
    f = _fallback.plan()
    return SandboxInfo("landlock", False, why, f.drop_uid, cgroup)


def require_sandbox(limits: SandboxLimits) -> SandboxInfo:
    """The sandbox a run with these limits would use; ``SandboxUnavailableError`` when it is not adequate and
    the weak one is not allowed (or bwrap was asked for and cannot run)."""
    info = sandbox_info(limits.backend)
    if limits.backend == "bwrap" and info.backend != "bwrap":
        raise SandboxUnavailableError(f"the bwrap sandbox cannot run here: {info.detail}")
    if not info.adequate and not limits.allow_weak:
        raise SandboxUnavailableError(
            f"refusing to run candidate code without an adequate sandbox ({info.detail}); install bubblewrap, "
            "or set [code] allow_weak_sandbox = true to run it under the weaker Landlock sandbox"
        )
    return info


def _env(root: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The program's whole environment: nothing of polyfuse's own (no API keys, no user paths)."""
    path = ":".join(dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]))
    env = {
        "PATH": path,
        "HOME": str(root),
        "TMPDIR": str(root),
        "LANG": "C.UTF-8",
        "USER": "nobody",
        "LOGNAME": "nobody",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra or {})
    return env


def _resolve(command: str, root: Path, env: Mapping[str, str]) -> str | None:
    if "/" in command:
        return command if (root / command).exists() or Path(command).exists() else None
    return shutil.which(command, path=env["PATH"])


def _chown_tree(root: Path, uid: int, gid: int, only_from: int | None = None) -> None:
    """lchown every entry under root (never following links); ``only_from``: only entries owned by that uid."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, None]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if only_from is None or os.lstat(path).st_uid == only_from:
                    os.lchown(path, uid, gid)


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
    info = await asyncio.to_thread(require_sandbox, limits)
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="polyfuse-sandbox-")) if workdir is None else workdir.resolve()
    try:
        for name, content in (files or {}).items():
            target = (root / name).resolve()
            if root not in target.parents:
                raise ValueError(f"sandbox file {name!r} would land outside the sandbox")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        info = _for_directory(info, root)
        owner = root.stat()
        if info.uid is not None:
            _chown_tree(root, info.uid, info.uid)
        try:
            return await _run(list(argv), root, stdin, limits, env, info)
        finally:
            if info.uid is not None and not own_dir:  # give the caller its directory back
                _chown_tree(root, owner.st_uid, owner.st_gid, only_from=info.uid)
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _for_directory(info: SandboxInfo, root: Path) -> SandboxInfo:
    """Root drops to uid 65534 only for a work directory that uid can reach; otherwise this run keeps uid 0
    outside (without capabilities), which is adequate only with a cgroup to bound its processes."""
    if info.uid is None or unreachable_by_others(tuple(str(p) for p in root.parents)) is None:
        return info
    if info.adequate and not info.cgroup:
        raise SandboxUnavailableError(
            f"the work directory {root} is not reachable by uid {SANDBOX_UID} and there is no cgroup to bound "
            "the processes of a run as root; use a directory others can search"
        )
    return replace(info, uid=None)


def _launch(
    info: SandboxInfo, root: Path, argv: list[str], env: dict[str, str], limits: SandboxLimits, cgroup: bool
) -> Launch:
    spec = {k: v for k, v in asdict(limits).items() if k not in ("backend", "allow_weak")}
    if info.backend == "bwrap":
        p = _bwrap.plan()
        assert isinstance(p, _bwrap.BwrapPlan)
        p = replace(p, user=info.uid)
        return _bwrap.BwrapLaunch(p, host_view(), str(root), argv, env, spec, cgroup)
    f = replace(_fallback.plan(), drop_uid=info.uid)
    return _fallback.FallbackLaunch(f, host_view(), str(root), argv, env, spec, cgroup)


async def _run(
    argv: list[str],
    root: Path,
    stdin: str | None,
    limits: SandboxLimits,
    extra_env: Mapping[str, str] | None,
    info: SandboxInfo,
) -> SandboxResult:
    env = _env(root, extra_env)
    started = time.perf_counter()
    command = _resolve(argv[0], root, env)
    if command is None:
        stderr = f"cannot run {argv[0]}: command not found\n"
        return SandboxResult(127, "", stderr, time.perf_counter() - started, sandbox=info.label)
    cgroup = _make_cgroup(limits)
    launch = _launch(info, root, [command, *argv[1:]], env, limits, cgroup is not None)
    try:
        return await _supervise(launch, stdin, limits, env, info, cgroup, started)
    finally:
        launch.close()
        if cgroup is not None:
            # Every process in it is killed already; removing the directory waits for them to be gone, which
            # the caller need not wait for.
            asyncio.get_running_loop().run_in_executor(None, cgroup.remove, time.monotonic() + 5.0)


async def _supervise(
    launch: Launch,
    stdin: str | None,
    limits: SandboxLimits,
    env: dict[str, str],
    info: SandboxInfo,
    cgroup: Cgroup | None,
    started: float,
) -> SandboxResult:
    loop = asyncio.get_running_loop()
    transport: asyncio.SubprocessTransport | None = None
    collector: Collector | None = None
    admitted = timed_out = False
    try:
        try:
            transport, collector = await loop.subprocess_exec(
                lambda: Collector(limits.output_bytes),
                *launch.argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd="/",
                env=env,  # bwrap's own environment is readable in the sandbox (/proc/1/environ): nothing more
                pass_fds=launch.pass_fds,
                start_new_session=True,
                user=launch.user,
                group=launch.user,
                extra_groups=None if launch.user is None else [],
            )
        finally:
            launch.spawned()
        admitted = await launch.admit(transport.get_pid(), cgroup, timeout=5.0)
        if stdin is not None:
            pipe = transport.get_pipe_transport(0)
            if isinstance(pipe, asyncio.WriteTransport):
                pipe.write(stdin.encode())
                pipe.close()
        try:
            await asyncio.wait_for(asyncio.shield(collector.exited), limits.timeout)
        except TimeoutError:
            timed_out = True
    finally:
        if transport is not None and collector is not None:
            await asyncio.shield(_wind_up(launch, transport, collector, cgroup))
    returncode = transport.get_returncode()
    outcome = launch.outcome(returncode if returncode is not None else -signal.SIGKILL)
    stderr = collector.stderr.text()
    if outcome.error:
        stderr += outcome.error + "\n"
    confinement = outcome.confinement + (["cgroup-memory", "cgroup-pids"] if admitted else [])
    return SandboxResult(
        returncode=outcome.returncode,
        stdout=collector.stdout.text(),
        stderr=stderr,
        duration=time.perf_counter() - started,
        timed_out=timed_out,
        signal=outcome.signal,
        confinement=confinement,
        sandbox=info.label,
        out_of_memory=cgroup is not None and cgroup.oom_killed(),
        stdout_dropped=collector.stdout.dropped,
        stderr_dropped=collector.stderr.dropped,
    )


def _make_cgroup(limits: SandboxLimits) -> Cgroup | None:
    parent = find_parent()
    if parent is None:
        return None
    try:
        return parent.create(
            limits.memory_mb << 20, limits.max_processes + 1
        )  # + bwrap's pid 1 or the reaper
    except OSError:
        return None


async def _wind_up(
    launch: Launch, transport: asyncio.SubprocessTransport, collector: Collector, cgroup: Cgroup | None
) -> None:
    """End the run whatever state it is in: nothing of it survives, and no process it left can keep the call
    waiting on its pipes."""
    pid = transport.get_pid()
    if not collector.exited.done():
        launch.stop(pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(collector.exited), _STOP_GRACE)
    if not collector.exited.done():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(collector.exited), _STOP_GRACE)
    if cgroup is not None:
        cgroup.kill()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(collector.drained), _DRAIN_GRACE)
    transport.close()


async def run_python(
    code: str,
    *,
    stdin: str | None = None,
    limits: SandboxLimits | None = None,
    extra_files: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> SandboxResult:
    """Run a Python program (``main.py`` in a fresh directory) under the sandbox."""
    files = {"main.py": code, **(extra_files or {})}
    argv = [sys.executable, "-I", "main.py", *args]
    return await run_sandboxed(argv, files=files, stdin=stdin, limits=limits)
