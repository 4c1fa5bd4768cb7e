"""The sandboxes' seccomp filters, compiled once by libseccomp (through ``pyseccomp``) into BPF programs that
bwrap (``--seccomp``) or the fallback's launcher (one ``seccomp`` call) load. Without pyseccomp or libseccomp
there is no filter, and the run's confinement does not list "seccomp"."""

from __future__ import annotations

import errno
import functools
import socket
import tempfile
from typing import Literal

__all__ = ["program"]

# The kernel's riskiest interfaces for an unprivileged process, and the per-uid keyrings: denied in both.
_KERNEL = (
    *("io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd"),
    *("add_key", "request_key", "keyctl"),
)
# The fallback has no mount namespace: changes to files' metadata anywhere (Landlock does not cover them) and
# ways to reach other processes.
_METADATA = (
    *("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat"),
    *("utime", "utimes", "utimensat", "futimesat"),
    *("setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr"),
    *("setxattrat", "removexattrat", "ptrace", "process_vm_readv", "process_vm_writev"),
)
# ... nor a network namespace unless root: no sockets but socket pairs, nothing addressed to anyone.
_ADDRESSED = ("connect", "sendmsg", "sendmmsg")


@functools.cache
def program(kind: Literal["bwrap", "fallback"], block_network: bool) -> bytes | None:
    """The BPF program for a sandbox (denied calls fail with EPERM, or EACCES for sockets), or None."""
    try:
        import pyseccomp as sc
    except (ImportError, RuntimeError, OSError):  # not installed, or no libseccomp on this system
        return None
    denied = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(sc.ALLOW)
    names = _KERNEL if kind == "bwrap" else (*_KERNEL, *_METADATA)
    if kind == "fallback" and block_network:
        names = (*names, *_ADDRESSED)
        f.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
        f.add_rule(denied, "sendto", sc.Arg(4, sc.NE, 0))  # a datagram with an address
    for name in names:
        try:
            f.add_rule(denied, name)
        except (ValueError, OSError):
            continue  # a syscall this kernel or libseccomp does not know
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        compiled: bytes = out.read()
    return compiled
