"""What a sandboxed program may read: the system's programs and libraries, this interpreter and the project's
dependencies, and a few files of /etc. Nothing of the home directory, no secrets of /etc, no other process.

Both sandboxes use the same view: bwrap bind-mounts it read-only into an empty root; the Landlock fallback
allows reading beneath it and nowhere else.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["View", "host_view", "unreachable_by_others", "SANDBOX_UID", "PASSWD", "GROUP"]

SANDBOX_UID = 65534  # "nobody": the uid candidates run as, inside the namespace and (when root) outside too

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The loader's cache, time zone, and the alternatives links some /usr/bin commands resolve through.
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
_DEVICES_RW = ("/dev/null", "/dev/full")
_DEVICES_RO = ("/dev/zero", "/dev/random", "/dev/urandom")

PASSWD = (
    "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class View:
    system: tuple[str, ...]  # top-level system paths that exist (directories or symlinks to them)
    python: tuple[str, ...]  # interpreter and dependency directories, outermost only
    etc: tuple[str, ...]  # existing /etc files and directories
    devices_rw: tuple[str, ...] = _DEVICES_RW
    devices_ro: tuple[str, ...] = _DEVICES_RO

    @property
    def readable(self) -> tuple[str, ...]:
        """Every path beneath which reading is allowed (symlinks resolved)."""
        return _outermost(os.path.realpath(p) for p in (*self.system, *self.python, *self.etc))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _outermost(paths: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not _under(p, out):
            out.append(p)
    return tuple(out)


def _pth_dirs(site_dir: str) -> list[str]:
    """Directories that .pth files add to sys.path (an editable install's source tree)."""
    found = []
    try:
        names = sorted(n for n in os.listdir(site_dir) if n.endswith(".pth"))
    except OSError:
        return []
    for name in names:
        try:
            lines = Path(site_dir, name).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines[:50]:
            line = line.strip()
            code = line.startswith(("#", "import ", "import\t"))
            if line and not code and os.path.isabs(line) and os.path.isdir(line):
                found.append(line)
    return found


def _python_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    sites = {sysconfig.get_path(k) for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    for entry in sys.path:
        # site directories of this interpreter (a system python's dist-packages live outside its prefix)
        if entry.rstrip("/").endswith(("site-packages", "dist-packages")):
            sites.add(entry)
    for site in sorted(s for s in sites if s):
        paths.add(site)
        paths.update(_pth_dirs(site))
    out = []
    for p in paths:
        if p and os.path.isdir(p):
            out.append(os.path.abspath(p))
            out.append(os.path.realpath(p))
    return out


@functools.cache
def host_view() -> View:
    system = tuple(p for p in _SYSTEM if os.path.lexists(p))
    etc = tuple(p for p in _ETC if os.path.exists(p))
    python = tuple(p for p in _outermost(_python_paths()) if not _under(p, system))  # /usr is there already
    return View(system, python, etc)


def unreachable_by_others(paths: tuple[str, ...]) -> str | None:
    """The first path a user with no relation to the files' owners (uid 65534) cannot reach and read (each
    ancestor searchable by others, the path itself readable and, for a directory, searchable), or None."""
    for p in paths:
        real = Path(os.path.realpath(p))
        try:
            for ancestor in real.parents:
                if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                    return p
            mode = os.stat(real).st_mode
        except OSError:
            return p
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if mode & need != need:
            return p
    return None
