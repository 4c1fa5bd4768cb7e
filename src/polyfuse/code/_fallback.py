"""The fallback sandbox, for systems where bwrap cannot run: the launcher ``_sandbox_exec.py`` confines the
program with what an unprivileged process can still use (Landlock, seccomp, resource limits; namespaces and a
drop to uid 65534 when root) and reaps everything it starts. Weaker than bwrap: see the README."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import _seccomp
from ._cgroup import Cgroup
from ._launch import Outcome, close_fds, signal_name
from ._view import SANDBOX_UID, View, host_view, unreachable_by_others

__all__ = ["FallbackPlan", "FallbackLaunch", "plan", "LAUNCHER"]

LAUNCHER = str(Path(__file__).with_name("_sandbox_exec.py"))


@dataclass(frozen=True)
class FallbackPlan:
    landlock_abi: int  # 0: no Landlock
    drop_uid: int | None  # root drops to this uid
    namespaces: bool  # root: new network, IPC and UTS namespaces


def _landlock_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(abi), 0)


@functools.cache
def plan() -> FallbackPlan:
    root = os.geteuid() == 0
    view = host_view()
    readable = unreachable_by_others((*view.readable, tempfile.gettempdir())) is None
    drop = SANDBOX_UID if root and readable else None
    return FallbackPlan(_landlock_abi(), drop, root)


class FallbackLaunch:
    def __init__(
        self,
        p: FallbackPlan,
        view: View,
        workdir: str,
        argv: list[str],
        env: dict[str, str],
        limits: dict[str, float | int | bool],
        cgroup: bool,
    ) -> None:
        self.status_r: int | None
        self.status_w: int | None
        self.block_r: int | None
        self.block_w: int | None
        self.status_r, self.status_w = os.pipe()
        self.block_r, self.block_w = os.pipe() if cgroup else (None, None)
        spec = {
            "root": workdir,
            "limits": limits,
            "env": env,
            "readable": list(view.readable),
            "devices_rw": list(view.devices_rw),
            "devices_ro": list(view.devices_ro),
            "drop_uid": p.drop_uid,
            "seccomp": (_seccomp.program("fallback", not limits["network"]) or b"").hex(),
            "status_fd": self.status_w,
            "block_fd": self.block_r,
        }
        self.argv = [sys.executable, "-I", "-S", LAUNCHER, json.dumps(spec), "--", *argv]
        self.pass_fds = tuple(fd for fd in (self.status_w, self.block_r) if fd is not None)
        self.user: int | None = None  # the launcher runs as polyfuse; it drops the program's uid itself

    def spawned(self) -> None:
        close_fds(self.status_w, self.block_r)
        self.status_w = self.block_r = None

    async def admit(self, pid: int, cgroup: Cgroup | None, timeout: float) -> bool:
        if self.block_w is None:
            return False
        admitted = False
        try:
            if cgroup is not None:
                try:
                    cgroup.add(pid)
                    admitted = True
                except OSError:
                    pass
            with contextlib.suppress(OSError):
                os.write(self.block_w, b"x")
        finally:
            close_fds(self.block_w)
            self.block_w = None
        return admitted

    def stop(self, pid: int) -> None:
        # the launcher kills every process of the run, then exits (polyfuse SIGKILLs it if it does not)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)

    def outcome(self, returncode: int) -> Outcome:
        report = _read_report(self.status_r) if self.status_r is not None else {}
        applied = report.get("confinement")
        confinement = (
            ["landlock-fallback", *(str(c) for c in applied if isinstance(c, str))]
            if isinstance(applied, list)
            else ["landlock-fallback"]
        )
        if report.get("error"):
            return Outcome(127, None, confinement, str(report["error"]))
        status = report.get("status")
        if isinstance(status, int):
            code = os.waitstatus_to_exitcode(status)
            return Outcome(code, signal_name(-code) if code < 0 else None, confinement)
        if report.get("stopped"):
            return Outcome(-signal.SIGKILL, "SIGKILL", confinement)
        if returncode < 0:  # the launcher itself was killed
            return Outcome(returncode, signal_name(-returncode), confinement)
        return Outcome(returncode, None, confinement)

    def close(self) -> None:
        close_fds(self.status_r, self.status_w, self.block_r, self.block_w)
        self.status_r = self.status_w = self.block_r = self.block_w = None


def _read_report(fd: int) -> dict[str, object]:
    """The launcher's JSON report; it has exited, so this never waits."""
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError, OSError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                break
    try:
        report = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}
