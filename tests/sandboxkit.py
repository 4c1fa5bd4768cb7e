"""Helpers of the hostile-program tests: a sandbox runner process as root or as an unprivileged user, the
"outside world" a hostile program attacks (a fake home with keys, listeners on loopback, a process, a file), and a
watch over the processes of one run (found by the run's own token on their command line)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from polyfuse.code._view import host_view

RUNNER = str(Path(__file__).with_name("sandbox_runner.py"))
NOBODY = 65534


def _blocking_ancestors(paths: list[str]) -> dict[str, set[str]]:
    """For each directory others cannot search on the way to a path: the children of it on those paths."""
    found: dict[str, set[str]] = {}
    for p in paths:
        parts = Path(os.path.realpath(p)).parts
        for i in range(1, len(parts) - 1):
            ancestor = str(Path(*parts[: i + 1]))
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                found.setdefault(ancestor, set()).add(parts[i + 1])
                break
    return found


def view_script() -> str:
    """Shell commands, for a private mount namespace, that make the interpreter and the project reachable by
    any user without changing the machine: a directory others cannot search (/root) is covered by a tmpfs
    holding only the subtrees the interpreter needs."""
    needed = [*host_view().python, os.path.dirname(RUNNER), os.path.realpath(sys.executable)]
    lines = ["set -e"]
    for n, (ancestor, children) in enumerate(sorted(_blocking_ancestors(needed).items())):
        holds = []
        for m, child in enumerate(sorted(children)):
            hold = f"/tmp/.polyfuse-view-{os.getpid()}-{n}-{m}"
            source = shlex.quote(f"{ancestor}/{child}")
            lines += [f"mkdir -p {hold}", f"mount --rbind {source} {hold}"]
            holds.append((hold, child))
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {ancestor}")
        for hold, child in holds:
            lines += [
                f"mkdir -p {ancestor}/{child}",
                f"mount --move {hold} {ancestor}/{child}",
                f"rmdir {hold}",
            ]
    return "\n".join(lines) + "\n"


def as_user_argv(who: str, argv: list[str]) -> list[str]:
    """argv run as ``who``: "root" as is; "root-view" as root with the interpreter readable by others (so the
    sandbox drops to uid 65534); "nobody" as uid 65534 in that same view."""
    if who in ("root", "self"):  # "self": the suite does not run as root, and runs as whoever it is
        return argv
    drop = (
        f'exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups -- "$@"'
        if who == "nobody"
        else 'exec "$@"'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        view_script() + drop,
        "sh",
        *argv,
    ]


class Runner:
    """The sandbox entry point in its own process; every answer is awaited with its own deadline."""

    def __init__(self, who: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            as_user_argv(who, [sys.executable, RUNNER]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
        )
        self._buf = b""
        hello = self._line(60.0)
        self.pid, self.uid = int(hello["pid"]), int(hello["uid"])

    def _line(self, timeout: float) -> dict[str, object]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.close()
                raise AssertionError(f"the sandbox runner did not answer within {timeout:.0f}s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise AssertionError(f"the sandbox runner died: {err[-2000:]}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        answer: dict[str, object] = json.loads(line)
        return answer

    def run(self, job: dict[str, object], timeout: float) -> dict[str, object]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait(timeout=10)


@dataclass
class World:
    """What a hostile program attacks, owned by the runner's user so that, unsandboxed, every attack works."""

    uid: int
    token: str
    base: Path
    home: Path
    victim: Path
    sock_path: Path
    tcp_port: int = 0
    udp_port: int = 0
    outside: subprocess.Popen[bytes] | None = None
    received: list[str] = field(default_factory=list)  # what reached the listeners
    _stop: threading.Event = field(default_factory=threading.Event)
    _socks: list[socket.socket] = field(default_factory=list)

    @classmethod
    def make(cls, uid: int, token: str) -> World:
        base = Path(tempfile.mkdtemp(prefix="polyfuse-hostile-"))
        home = base / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "id_rsa").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{token}-key\n")
        (home / ".config" / "polyfuse").mkdir(parents=True)
        (home / ".config" / "polyfuse" / "polyfuse.toml").write_text(
            f'[providers.openai]\napi_key = "{token}-config"\n'
        )
        (base / "outside").mkdir()
        victim = base / "outside" / "victim.txt"
        world = cls(uid, token, base, home, victim, base / "outside" / "agent.sock")
        world.reset_victim()
        world._listen()
        for dirpath, dirnames, filenames in os.walk(base):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, uid, uid)
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if uid else []
        world.outside = subprocess.Popen([*drop, "sleep", "600"])  # setpriv execs: the Popen's pid is sleep's
        return world

    def reset_victim(self) -> None:
        self.victim.write_text("untouched\n")
        os.chmod(self.victim, 0o600)
        os.utime(self.victim, (1_000_000_000, 1_000_000_000))
        os.chown(self.victim, self.uid, self.uid)
        with contextlib.suppress(OSError):
            os.removexattr(self.victim, "user.polyfuse")

    def _listen(self) -> None:
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(str(self.sock_path))
        unix.listen()
        os.chmod(self.sock_path, 0o700)  # its owner (the runner's user) may connect
        self.tcp_port, self.udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        self._socks = [tcp, udp, unix]
        for s, kind in ((tcp, "tcp"), (udp, "udp"), (unix, "unix")):
            s.settimeout(0.1)
            threading.Thread(target=self._serve, args=(s, kind), daemon=True).start()

    def _serve(self, s: socket.socket, kind: str) -> None:
        while not self._stop.is_set():
            try:
                if kind == "udp":
                    data = s.recv(4096)
                else:
                    conn, _ = s.accept()
                    conn.settimeout(1.0)
                    with conn:
                        data = b"connected:" + conn.recv(4096)
            except OSError:
                continue
            self.received.append(f"{kind}:{data.decode(errors='replace')}")

    def close(self) -> None:
        self._stop.set()
        if self.outside is not None:
            self.outside.kill()
            self.outside.wait(timeout=10)
        for s in self._socks:
            s.close()
        shutil.rmtree(self.base, ignore_errors=True)


def outside_pid(world: World) -> int:
    """The pid of the outside ``sleep`` (through unshare/setpriv it execs, so it is the Popen's pid)."""
    assert world.outside is not None
    return world.outside.pid


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_with(token: str) -> list[int]:
    """Live processes whose command line holds ``token`` (this run's own, whatever pid namespace they are in)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if token.encode() in cmdline and alive(int(name)):
            found.append(int(name))
    return found


def anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Watch:
    """Samples the run's processes (by token) while it runs: the most at once, and the most anonymous memory
    they held together."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.most = 0
        self.most_anon_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            pids = processes_with(self.token)
            self.most = max(self.most, len(pids))
            self.most_anon_kb = max(self.most_anon_kb, sum(anon_kb(p) for p in pids))


def none_left(token: str, within: float = 3.0) -> list[int]:
    """The run's processes still alive after ``within`` seconds (none, when containment works)."""
    deadline = time.monotonic() + within
    while True:
        left = processes_with(token)
        if not left or time.monotonic() >= deadline:
            for pid in left:  # do not leak them into the next test
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            return left
        time.sleep(0.05)
