"""A cgroup per sandboxed run, where the system lets polyfuse make one: ``memory`` bounds the whole process tree
(not each process) and ``pids`` bounds the number of processes even for root; killing the cgroup kills every
process of the run.

cgroup v2 is used when the parent of polyfuse's own cgroup delegates the memory and pids controllers to it and
is writable (a systemd ``Delegate=`` unit, a user's own service manager, root on most systems). cgroup v1
(hybrid systems, older containers) is used when its memory and pids hierarchies are writable (root). Otherwise
there is none, and the sandbox falls back to per-process limits (``SandboxResult.confinement`` says which).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupParent", "Cgroup", "find_parent"]

_PREFIX = "polyfuse-sandbox-"


@dataclass(frozen=True)
class CgroupParent:
    """Where a run's cgroup is made: one directory on v2, one per controller hierarchy on v1."""

    version: int
    memory: Path
    pids: Path

    def create(self, memory_bytes: int, max_pids: int) -> Cgroup:
        name = _PREFIX + secrets.token_hex(6)
        dirs = list(dict.fromkeys([self.memory / name, self.pids / name]))
        made: list[Path] = []
        try:
            for d in dirs:
                d.mkdir(mode=0o755)
                made.append(d)
            cg = Cgroup(self.version, made)
            cg.limit(memory_bytes, max_pids)
            return cg
        except OSError:
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise


class Cgroup:
    def __init__(self, version: int, dirs: list[Path]) -> None:
        self.version = version
        self.dirs = dirs

    @property
    def memory_dir(self) -> Path:
        return self.dirs[0]

    @property
    def pids_dir(self) -> Path:
        return self.dirs[-1]

    def limit(self, memory_bytes: int, max_pids: int) -> None:
        if self.version == 2:
            _write(self.memory_dir / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting on this system
                _write(self.memory_dir / "memory.swap.max", "0")
            _write(self.pids_dir / "pids.max", str(max_pids))
        else:
            _write(self.memory_dir / "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting (memsw) on this system
                _write(self.memory_dir / "memory.memsw.limit_in_bytes", str(memory_bytes))
            _write(self.pids_dir / "pids.max", str(max_pids))

    def add(self, pid: int) -> None:
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return sorted(found)

    def oom_killed(self) -> bool:
        """Whether the memory limit made the kernel kill a process of this run."""
        try:
            if self.version == 2:
                events = (self.memory_dir / "memory.events").read_text()
            else:
                events = (self.memory_dir / "memory.oom_control").read_text()
        except OSError:
            return False
        counts = dict(line.split() for line in events.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (v2's cgroup.kill where the kernel has it)."""
        kill_file = self.dirs[0] / "cgroup.kill"
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
                return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, deadline: float) -> bool:
        """Kill what is left and remove the cgroup; gives up at ``deadline`` (``time.monotonic()``)."""
        while True:
            self.kill()
            for d in list(self.dirs):
                try:
                    d.rmdir()
                    self.dirs.remove(d)
                except FileNotFoundError:
                    self.dirs.remove(d)
                except OSError:
                    pass  # EBUSY: processes still exiting
            if not self.dirs:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _own_cgroups() -> dict[str, str]:
    """controller name (or "" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of each cgroup mount."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], rfields[0], set(rfields[2].split(","))))
    return out


def _v2_parent(mounts: list[tuple[str, str, set[str]]], own: dict[str, str]) -> CgroupParent | None:
    mount = next((m for m, fs, _ in mounts if fs == "cgroup2"), None)
    if mount is None or "" not in own:
        return None
    current = Path(mount) / own[""].lstrip("/")
    # A v2 cgroup with processes cannot enable controllers for children, so a run's cgroup is a sibling of
    # ours; at the top (a cgroup namespace's root) it can only be a child.
    for parent in (current.parent, current) if current != Path(mount) else (current,):
        try:
            enabled = set((parent / "cgroup.subtree_control").read_text().split())
        except OSError:
            continue
        if {"memory", "pids"} <= enabled and os.access(parent, os.W_OK):
            return CgroupParent(2, parent, parent)
    return None


def _v1_parent(mounts: list[tuple[str, str, set[str]]], own: dict[str, str]) -> CgroupParent | None:
    where: dict[str, Path] = {}
    for point, fs, opts in mounts:
        for c in ("memory", "pids"):
            if fs == "cgroup" and c in opts and c in own:
                where[c] = Path(point) / own[c].lstrip("/")
    if set(where) != {"memory", "pids"} or not all(os.access(p, os.W_OK) for p in where.values()):
        return None
    return CgroupParent(1, where["memory"], where["pids"])


@functools.cache
def find_parent() -> CgroupParent | None:
    """Where this process may make cgroups with memory and pids limits, checked once by making one."""
    try:
        mounts, own = _mounts(), _own_cgroups()
    except (OSError, ValueError):
        return None
    for find in (_v2_parent, _v1_parent):
        parent = find(mounts, own)
        if parent is None:
            continue
        try:
            cg = parent.create(64 << 20, 16)
        except OSError:
            continue
        cg.remove(time.monotonic() + 1.0)
        return parent
    return None
