"""The bubblewrap sandbox (``bwrap``, Debian's ``bubblewrap``, what Flatpak uses).

A run gets new user, PID, network, IPC, UTS, cgroup and mount namespaces; inside it is uid 65534 with no
capabilities, sees an empty root with the read-only view of ``_view`` bound in, its own ``/proc`` (its own
processes only) and a minimal ``/dev``, and can write only its work directory. When polyfuse runs as root and
the view is readable by other users, bwrap itself is started as uid 65534, so the sandbox is unprivileged outside
its namespace too (and the per-namespace process limit holds: the kernel exempts only real root from it).

``--die-with-parent`` and ``--unshare-pid`` make the run die whole: when the program exits or the monitor is
killed at the timeout, the namespace's pid 1 is killed and the kernel kills every process left in it.
The command is wrapped in ``prlimit`` so the resource limits are set inside the new user namespace, where
``RLIMIT_NPROC`` counts this run's processes only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from . import _seccomp
from ._cgroup import Cgroup
from ._launch import Outcome, close_fds, read_until_eof, signal_name
from ._view import GROUP, PASSWD, SANDBOX_UID, View, host_view, unreachable_by_others

__all__ = ["BwrapPlan", "BwrapLaunch", "plan", "argv_for"]


@dataclass(frozen=True)
class BwrapPlan:
    bwrap: str
    prlimit: str
    user: int | None  # the uid bwrap is started as (None: polyfuse's own)
    disable_userns: bool  # --disable-userns: no nested user namespaces (bwrap >= 0.8)


def argv_for(
    p: BwrapPlan,
    view: View,
    workdir: str,
    argv: list[str],
    env: dict[str, str],
    limits: dict[str, float | int | bool],
    *,
    passwd_fd: int,
    group_fd: int,
    info_fd: int | None = None,
    block_fd: int | None = None,
    seccomp_fd: int | None = None,
) -> list[str]:
    a = [p.bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not limits["network"]:
        a.append("--unshare-net")
    if p.disable_userns:
        a.append("--disable-userns")
    a += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--die-with-parent", "--new-session"]
    a.append("--clearenv")
    for k, v in env.items():
        a += ["--setenv", k, v]
    for path in view.system:
        if os.path.islink(path):
            a += ["--symlink", os.readlink(path), path]
        else:
            a += ["--ro-bind", path, path]
    for path in (*view.python, *view.etc):
        a += ["--ro-bind", path, path]
    a += ["--ro-bind-data", str(passwd_fd), "/etc/passwd", "--ro-bind-data", str(group_fd), "/etc/group"]
    a += ["--proc", "/proc", "--dev", "/dev", "--bind", workdir, workdir, "--chdir", workdir]
    a += ["--remount-ro", "/dev", "--remount-ro", "/"]  # the work directory is the only writable place
    if info_fd is not None:
        a += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        a += ["--block-fd", str(block_fd)]
    if seccomp_fd is not None:
        a += ["--seccomp", str(seccomp_fd)]
    cpu, mb, fs = int(limits["cpu_seconds"]), int(limits["memory_mb"]), int(limits["file_size_mb"])
    a += ["--", p.prlimit, f"--cpu={cpu}:{cpu + 1}", f"--as={mb << 20}", f"--fsize={fs << 20}", "--core=0"]
    a += [f"--nproc={int(limits['max_processes'])}", "--", *argv]
    return a


def seccomp_fd() -> int | None:
    """Read end of a pipe holding the filter (bwrap reads it), or None."""
    program = _seccomp.program("bwrap", True)
    if program is None:
        return None
    r, w = os.pipe()
    os.write(w, program)  # a few hundred bytes: never blocks
    os.close(w)
    return r


def data_fds() -> tuple[int, int]:
    """Read ends of two pipes holding the sandbox's /etc/passwd and /etc/group (bwrap copies them in)."""
    fds = []
    for text in (PASSWD, GROUP):
        r, w = os.pipe()
        os.write(w, text.encode())  # a few bytes: never blocks
        os.close(w)
        fds.append(r)
    return fds[0], fds[1]


def _try(p: BwrapPlan) -> str | None:
    """Run a trivial Python program the way candidates run; the error bwrap printed, or None."""
    view = host_view()
    with tempfile.TemporaryDirectory(prefix="polyfuse-sandbox-probe-") as work:
        if p.user is not None:
            os.chown(work, p.user, p.user)
        passwd, group = data_fds()
        seccomp = seccomp_fd()
        limits: dict[str, float | int | bool] = {
            "network": False,
            "cpu_seconds": 10,
            "memory_mb": 1024,
            "file_size_mb": 1,
            "max_processes": 16,
        }
        argv = argv_for(
            p,
            view,
            work,
            [sys.executable, "-I", "-S", "-c", "pass"],
            {"PATH": "/usr/bin:/bin"},
            limits,
            passwd_fd=passwd,
            group_fd=group,
            seccomp_fd=seccomp,
        )
        try:
            r = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=20,
                pass_fds=tuple(fd for fd in (passwd, group, seccomp) if fd is not None),
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                user=p.user,
                group=p.user,
                extra_groups=None if p.user is None else [],
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)
        finally:
            close_fds(passwd, group, seccomp)
    if r.returncode == 0:
        return None
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {r.returncode}"


@functools.cache
def plan() -> BwrapPlan | str:
    """How bwrap runs here, or why it cannot (one line). Probed once per process."""
    bwrap, prlimit = shutil.which("bwrap"), shutil.which("prlimit")
    if bwrap is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    if prlimit is None:
        return "prlimit is not installed (util-linux)"
    view = host_view()
    users: list[int | None] = [None]
    if os.geteuid() == 0 and unreachable_by_others((*view.readable, tempfile.gettempdir())) is None:
        users.insert(0, SANDBOX_UID)
    error = "bwrap did not run"
    for user in users:
        for disable in (True, False):
            candidate = BwrapPlan(bwrap, prlimit, user, disable)
            failure = _try(candidate)
            if failure is None:
                return candidate
            error = f"bwrap cannot run here: {failure}"
    return error


def parse_info(data: bytes) -> int | None:
    """The sandbox's pid 1 (as seen from outside) from bwrap's --info-fd JSON."""
    try:
        pid = json.loads(data.decode()).get("child-pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


class BwrapLaunch:
    """One run under bwrap. With a cgroup, bwrap waits (``--block-fd``) until its pid 1, named on ``--info-fd``,
    is in the cgroup, so the program and everything it starts are inside from their first instruction."""

    def __init__(
        self,
        p: BwrapPlan,
        view: View,
        workdir: str,
        argv: list[str],
        env: dict[str, str],
        limits: dict[str, float | int | bool],
        cgroup: bool,
    ) -> None:
        self.passwd: int | None
        self.seccomp: int | None
        self.group: int | None
        self.info_r: int | None
        self.info_w: int | None
        self.block_r: int | None
        self.block_w: int | None
        self.passwd, self.group = data_fds()
        self.seccomp = seccomp_fd()
        self.info_r = self.info_w = self.block_r = self.block_w = None
        if cgroup:
            self.info_r, self.info_w = os.pipe()
            self.block_r, self.block_w = os.pipe()
        self.argv = argv_for(
            p,
            view,
            workdir,
            argv,
            env,
            limits,
            passwd_fd=self.passwd,
            group_fd=self.group,
            info_fd=self.info_w,
            block_fd=self.block_r,
            seccomp_fd=self.seccomp,
        )
        child_fds = (self.passwd, self.group, self.seccomp, self.info_w, self.block_r)
        self.pass_fds = tuple(fd for fd in child_fds if fd is not None)
        self.user = p.user
        self.confinement = ["bwrap", "userns", "pidns", "mountns", "ipcns", "utsns", "rlimits"]
        if not limits["network"]:
            self.confinement.append("netns")
        if p.user is not None or os.geteuid() != 0:
            self.confinement.append("nproc")  # root (uid 0 outside) is exempt from RLIMIT_NPROC
        if p.user is not None:
            self.confinement.append(f"uid-{p.user}")
        if self.seccomp is not None:
            self.confinement.append("seccomp")

    def spawned(self) -> None:
        close_fds(self.passwd, self.group, self.seccomp, self.info_w, self.block_r)
        self.passwd = self.group = self.seccomp = self.info_w = self.block_r = (
            None  # a number closed twice may be another's
        )

    async def admit(self, pid: int, cgroup: Cgroup | None, timeout: float) -> bool:
        if self.info_r is None or self.block_w is None:
            return False
        admitted = False
        try:
            child = parse_info(await read_until_eof(self.info_r, timeout))
            if child is not None and cgroup is not None:
                try:
                    cgroup.add(child)
                    admitted = True
                except OSError:
                    pass  # bwrap failed early: its error is on stderr
            with contextlib.suppress(OSError):
                os.write(self.block_w, b"x")
        finally:
            close_fds(self.info_r, self.block_w)
            self.info_r = self.block_w = None
        return admitted

    def stop(self, pid: int) -> None:
        # --die-with-parent: the namespace's pid 1 dies with the monitor, and every process in it with pid 1
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    def outcome(self, returncode: int) -> Outcome:
        # bwrap reports a program killed by signal N as 128 + N, like a shell
        if 128 < returncode <= 128 + 64:
            return Outcome(returncode, signal_name(returncode - 128), list(self.confinement))
        if returncode < 0:
            return Outcome(returncode, signal_name(-returncode), list(self.confinement))
        return Outcome(returncode, None, list(self.confinement))

    def close(self) -> None:
        close_fds(self.passwd, self.group, self.seccomp, self.info_r, self.info_w, self.block_r, self.block_w)
        self.passwd = self.group = self.seccomp = self.info_r = self.info_w = self.block_r = self.block_w = (
            None
        )
