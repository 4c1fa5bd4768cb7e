"""Sandbox launcher: confine this process, then exec the command. ``python -m polyfuse.code._sandbox_exec SPEC -- argv``.

Runs in the child, before exec, so the parent (which has threads) never forks into Python code. The first line
written to stderr names the confinement actually in force; ``sandbox.py`` strips it from the output.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # same numbers on x86_64 and aarch64
_RULE_PATH_BENEATH = 1
_VERSION_FLAG = 1

# Landlock filesystem rights that change the filesystem; reading and executing stay allowed everywhere.
_WRITE_FILE, _REMOVE_DIR, _REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
_MAKE = sum(1 << b for b in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _set_limits(limits: dict[str, int | float | bool]) -> None:
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    size = int(limits["file_size_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    procs = int(limits["max_processes"])
    resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _new_netns() -> bool:
    return bool(_libc.unshare(_CLONE_NEWNET) == 0)


def _landlock(root: str, block_network: bool) -> list[str]:
    abi = _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION_FLAG))
    if abi < 1:
        return []
    fs = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKE
    if abi >= 2:
        fs |= _REFER
    if abi >= 3:
        fs |= _TRUNCATE
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if (block_network and abi >= 4) else 0
    attr = _RulesetAttr(fs, net)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 4 else 8
    ruleset = _libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return []
    try:
        for path, access in ((root, fs), ("/dev/null", _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneath(access, fd)
                if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                    return []
            finally:
                os.close(fd)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return []
        if _libc.syscall(_SYS_RESTRICT, ruleset, 0) != 0:
            return []
    finally:
        os.close(ruleset)
    return ["landlock-fs"] + (["landlock-net"] if net else [])


def main() -> None:
    spec = json.loads(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    limits = spec["limits"]
    applied = []
    _set_limits(limits)
    applied.append("rlimits")
    if not limits["network"] and _new_netns():
        applied.append("netns")
    applied += _landlock(spec["root"], block_network=not limits["network"])
    sys.stderr.write("polyfuse-sandbox-confinement:" + ",".join(applied) + "\n")
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"cannot run {argv[0]}: {exc.strerror}\n")
        os._exit(127)


if __name__ == "__main__":
    main()
