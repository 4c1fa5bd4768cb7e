"""The fallback sandbox's launcher, for systems where bwrap cannot run (no user namespaces, no bubblewrap).

``python -I -S _sandbox_exec.py SPEC -- argv``: a standalone script (it imports nothing of polyfuse, so it starts
fast and runs before any confinement). It stays outside the sandbox as the run's reaper:

- it becomes a child subreaper, so every process the program starts (a ``setsid`` grandchild, a double-forked
  daemon) stays its descendant, and it kills them all when the program exits or when polyfuse sends SIGTERM at
  the timeout; nothing survives the run and nothing keeps holding its pipes;
- as root, it moves the run into new network, IPC and UTS namespaces.

Its child confines itself, then ``exec``s the program: resource limits, a drop to uid 65534 when root (or to
no capabilities at all when the interpreter is not readable by that uid), Landlock (reads only beneath the view
of ``_view``, writes only beneath the work directory, no TCP, no signals or abstract UNIX sockets outside the
sandbox), and the seccomp filter polyfuse compiled with libseccomp (``_seccomp``: no sockets but socket pairs, no
connect, no changes to file metadata, no io_uring, ptrace or keyrings). What was in force is written to the
status fd as JSON, with the program's wait status.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time

_CLONE_NEWNET, _CLONE_NEWIPC, _CLONE_NEWUTS = 0x40000000, 0x08000000, 0x04000000
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 1, 24, 38, 36
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT, _SYS_CAPSET = (
    444,
    445,
    446,
    126,
)  # x86_64 and aarch64 share 444-446
_RULE_PATH_BENEATH = 1
_VERSION_FLAG = 1

# Landlock filesystem rights (ABI 1 unless noted)
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE = 1 << 4, 1 << 5
_MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_libc = ctypes.CDLL(None, use_errno=True)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _Stop(Exception):
    """SIGTERM from polyfuse: the run's time is up."""


def _set_limits(limits: dict[str, float]) -> None:
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(limits["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = int(limits["file_size_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _processes_of(uid: int) -> int:
    """How many processes ``uid`` has now: RLIMIT_NPROC counts them all, so the run's limit comes on top."""
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            n += int(line.split()[1]) == uid
                            break
            except OSError:
                continue
    return n


def _drop_capabilities() -> bool:
    """Root that cannot become uid 65534 keeps uid 0 but loses every capability, for good."""
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
        last = int(f.read())
    for cap in range(last + 1):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    return bool(_libc.syscall(_SYS_CAPSET, header, data) == 0)


def _landlock(spec: dict[str, object], block_network: bool) -> list[str]:
    abi = _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION_FLAG))
    if abi < 1:
        return []
    writes = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE
    fs = _EXECUTE | _READ_FILE | _READ_DIR | writes
    fs |= (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if (block_network and abi >= 4) else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return []
    file_read = _EXECUTE | _READ_FILE
    file_write = _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0)
    rules: list[tuple[str, int, int]] = [(str(spec["root"]), fs, fs)]
    rules += [(p, file_read | _READ_DIR, file_read) for p in spec["readable"]]  # type: ignore[attr-defined]
    rules += [(p, 0, _READ_FILE | file_write) for p in spec["devices_rw"]]  # type: ignore[attr-defined]
    rules += [(p, 0, _READ_FILE) for p in spec["devices_ro"]]  # type: ignore[attr-defined]
    try:
        for path, dir_access, file_access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this system
            try:
                access = dir_access if os.path.isdir(path) else file_access
                rule = _PathBeneath(access, fd)
                if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    return []
            finally:
                os.close(fd)
        if (
            _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or _libc.syscall(_SYS_RESTRICT, ruleset, 0) != 0
        ):
            return []
    finally:
        os.close(ruleset)
    return ["landlock-fs"] + (["landlock-net"] if net else []) + (["landlock-scope"] if scoped else [])


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _load_seccomp(program: bytes) -> bool:
    """Load a BPF program libseccomp compiled in polyfuse (8 bytes per instruction)."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return bool(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0)


def _child(spec: dict[str, object], argv: list[str], report: int) -> None:
    """Confine this process, then exec the program. Never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.write(report, json.dumps(_confine(spec)).encode() + b"\n")
        os.execvpe(argv[0], argv, spec["env"])  # type: ignore[arg-type]
    except OSError as exc:
        error = f"cannot run {argv[0]}: {exc.strerror or exc}"
        os.write(report, json.dumps({"error": error}).encode() + b"\n")
    except BaseException:  # never fall back into the launcher's own code
        os.write(report, json.dumps({"error": "the sandbox could not be set up"}).encode() + b"\n")
    os._exit(127)


def _confine(spec: dict[str, object]) -> list[str]:
    limits: dict[str, float] = spec["limits"]  # type: ignore[assignment]
    block_network = not limits["network"]
    applied = []
    os.setsid()
    _set_limits(limits)
    applied.append("rlimits")
    uid = spec["drop_uid"]
    if isinstance(uid, int):
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        applied.append(f"uid-{uid}")
    elif os.geteuid() == 0 and _drop_capabilities():
        applied.append("no-capabilities")
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid change, which clears it
    if os.geteuid() != 0:  # RLIMIT_NPROC does not bind root
        n = _processes_of(os.geteuid()) + int(limits["max_processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
        applied.append("nproc")
    applied += _landlock(spec, block_network)
    os.chdir(str(spec["root"]))
    if spec["seccomp"] and _load_seccomp(bytes.fromhex(str(spec["seccomp"]))):
        applied.append("seccomp")
    return applied


def _descendants(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _kill_all(deadline: float) -> None:
    """SIGKILL every descendant (orphans come back to us: we are their subreaper) until none is left."""
    me = os.getpid()
    while time.monotonic() < deadline:
        for pid in _descendants(me):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return  # no children left
        time.sleep(0.002)


def _on_term(signum: int, frame: object) -> None:
    raise _Stop


def main() -> None:
    spec = json.loads(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    status = int(spec["status_fd"])
    os.set_inheritable(status, False)
    if spec.get("block_fd") is not None:
        os.read(int(spec["block_fd"]), 1)  # polyfuse puts us into the run's cgroup first
        os.close(int(spec["block_fd"]))
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    applied = []
    root = os.geteuid() == 0
    if (
        root
        and not spec["limits"]["network"]
        and _libc.unshare(_CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS) == 0
    ):
        applied += ["netns", "ipcns", "utsns"]
    outcome: dict[str, object] = {}
    signal.signal(signal.SIGTERM, _on_term)
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(spec, argv, w)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):  # until the child's exec closes it
            chunks.append(chunk)
        for line in b"".join(chunks).splitlines():
            report = json.loads(line)
            if isinstance(report, dict):
                outcome["error"] = report["error"]
            else:
                applied += report
        outcome["status"] = os.waitpid(pid, 0)[1]
    except _Stop:
        outcome["stopped"] = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _kill_all(time.monotonic() + 5.0)
    outcome["confinement"] = applied
    os.write(status, json.dumps(outcome).encode())
    os._exit(0)


if __name__ == "__main__":
    main()
