"""Hostile programs against the sandbox: each attack is run unsandboxed first (as the same user, to show it works
there) and then through the sandbox's entry point, under bwrap and under the Landlock fallback, as root (as CI
runs), as root where the interpreter is readable by others (the sandbox then drops to uid 65534) and as an
unprivileged user. Every run asserts its outcome (blocked, killed, capped), that the caller got its answer within
its timeout plus a few seconds and without its memory growing, and that no process of the run is left."""

from __future__ import annotations

import errno
import json
import os
import platform
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sandboxkit import NOBODY, Runner, Watch, World, alive, none_left, outside_pid

WHO = ["root", "root-view", "nobody"] if os.geteuid() == 0 else ["self"]
BACKENDS = ["bwrap", "landlock"]
RSS_GROWTH_LIMIT_KB = 64 * 1024  # the caller's peak memory during a run, above what it had before
WIND_UP = 8.0  # seconds a call may take past its timeout (reaper grace, pipes, cgroup removal)


@dataclass
class Ctx:
    who: str
    world: World
    runner: Runner


@pytest.fixture(scope="module", params=WHO)
def ctx(request: pytest.FixtureRequest) -> Iterator[Ctx]:
    who = request.param
    token = "secret" + secrets.token_hex(8)
    world = World.make(NOBODY if who == "nobody" else os.geteuid(), token)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(world.home),
        "LANG": "C.UTF-8",
        "OPENAI_API_KEY": f"sk-{token}-env",
        "XDG_DATA_HOME": str(world.base / "data"),
    }
    runner = Runner(who, env)
    try:
        assert runner.uid == world.uid
        yield Ctx(who, world, runner)
    finally:
        runner.close()
        world.close()


def new_token() -> str:
    return "run" + secrets.token_hex(6)


def sandboxed(
    ctx: Ctx, backend: str, code: str, timeout: float = 5.0, token: str | None = None, **limits: Any
) -> tuple[dict[str, Any], str]:
    """Run ``code`` through the sandbox (``sys.argv[1]`` is the run's token); check the caller's time and memory
    and that no process of the run is left."""
    run_token = token or new_token()
    job = {
        "code": code,
        "args": [run_token],
        "limits": {"backend": backend, "allow_weak": True, "timeout": timeout, **limits},
    }
    answer = ctx.runner.run(job, timeout=timeout + 30)
    assert "error" not in answer, answer.get("error")
    result: dict[str, Any] = answer["result"]  # type: ignore[assignment]
    assert result["sandbox"].split()[0] == backend, result["sandbox"]
    assert answer["elapsed"] < timeout + WIND_UP, (
        f"the call took {answer['elapsed']:.1f}s (timeout {timeout}s)"
    )
    assert answer["rss_growth_kb"] < RSS_GROWTH_LIMIT_KB, f"the caller grew by {answer['rss_growth_kb']} kB"
    assert none_left(run_token) == [], "processes of the run survived it"
    return result, run_token


def control(ctx: Ctx, code: str) -> dict[str, Any]:
    """The same program unsandboxed, as the runner's user."""
    answer = ctx.runner.run(
        {"code": code, "args": ["control"], "limits": {"timeout": 10}, "control": True}, timeout=30
    )
    assert "error" not in answer, answer.get("error")
    out: dict[str, Any] = answer["control"]  # type: ignore[assignment]
    return out


def output(r: dict[str, Any]) -> str:
    return str(r["stdout"]) + str(r["stderr"])


def report(r: dict[str, Any]) -> dict[str, str]:
    """The JSON a probing program printed last."""
    lines = str(r["stdout"]).strip().splitlines()
    assert lines, f"the program printed nothing: {r['stderr'][-500:]}"
    data: dict[str, str] = json.loads(lines[-1])
    return data


PROBE = """
import json, sys
out = {}
def attempt(name, fn):
    try:
        out[name] = "ok: " + str(fn())[:300]
    except Exception as exc:
        out[name] = "blocked: " + type(exc).__name__
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_home_keys_and_polyfuse_config_are_not_readable(ctx: Ctx, backend: str) -> None:
    home = ctx.world.home
    code = PROBE + (
        f"attempt('key', lambda: open({str(home / '.ssh/id_rsa')!r}).read())\n"
        f"attempt('config', lambda: open({str(home / '.config/polyfuse/polyfuse.toml')!r}).read())\n"
        f"attempt('listing', lambda: __import__('os').listdir({str(home)!r}))\n"
        "print(json.dumps(out))\n"
    )
    seen = control(ctx, code)["stdout"]
    assert f"{ctx.world.token}-key" in seen and f"{ctx.world.token}-config" in seen
    r, _ = sandboxed(ctx, backend, code)
    assert ctx.world.token not in output(r)
    assert all(v.startswith("blocked") for v in report(r).values()), report(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_etc_shadow_is_not_readable(ctx: Ctx, backend: str) -> None:
    code = PROBE + "attempt('shadow', lambda: open('/etc/shadow').read())\nprint(json.dumps(out))\n"
    if ctx.world.uid == 0:
        assert "root:" in control(ctx, code)["stdout"]
    r, _ = sandboxed(ctx, backend, code)
    assert report(r)["shadow"].startswith("blocked") and "root:" not in output(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_process_environment_is_readable(ctx: Ctx, backend: str) -> None:
    secret = f"sk-{ctx.world.token}-env"
    code = PROBE + (
        "import os\n"
        f"attempt('pid1', lambda: open('/proc/1/environ', 'rb').read())\n"
        f"attempt('parent', lambda: open('/proc/{ctx.runner.pid}/environ', 'rb').read())\n"
        "found = []\n"
        "try:\n"
        "    pids = os.listdir('/proc')\n"
        "except OSError:\n"
        "    pids = []\n"
        "for p in pids:\n"
        "    try:\n"
        "        data = open(f'/proc/{p}/environ', 'rb').read()\n"
        "        if b'OPENAI_API_KEY' in data:\n"
        "            found.append(data.decode(errors='replace'))\n"
        "    except OSError:\n"
        "        pass\n"
        "out['all'] = ' '.join(found)\n"
        "print(json.dumps(out))\n"
    )
    seen = control(ctx, code)["stdout"]
    assert secret in seen
    r, _ = sandboxed(ctx, backend, code)
    assert secret not in output(r) and "OPENAI_API_KEY" not in output(r)
    assert report(r)["parent"].startswith("blocked")


NETWORK = {
    "tcp": "s = socket.create_connection(('127.0.0.1', {tcp}), timeout=2); s.sendall(MARK); s.close()",
    "udp": "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(MARK, ('127.0.0.1', {udp}))",
    "unix": "s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect({sock!r}); s.sendall(MARK); s.close()",
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", sorted(NETWORK))
def test_listeners_outside_are_unreachable(ctx: Ctx, backend: str, kind: str) -> None:
    w = ctx.world
    attack = NETWORK[kind].format(tcp=w.tcp_port, udp=w.udp_port, sock=str(w.sock_path))
    code = "import socket, sys\nMARK = sys.argv[1].encode()\n" + attack + "\nprint('sent')\n"
    control(ctx, code)
    assert _arrived(w, "control"), f"the {kind} listener got nothing even unsandboxed: {w.received}"
    r, token = sandboxed(ctx, backend, code)
    time.sleep(0.3)  # what was sent would have arrived by now
    assert not any(token in m for m in w.received), w.received
    if kind != "udp":  # a datagram to the sandbox's own loopback is "sent" (and lost): only arrival matters
        assert "sent" not in r["stdout"] and r["returncode"] != 0


def _arrived(w: World, mark: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(mark in m for m in w.received):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_dns_and_the_internet_are_unreachable(ctx: Ctx, backend: str) -> None:
    code = PROBE + (
        "import socket\n"
        "attempt('resolve', lambda: socket.getaddrinfo('example.com', 443))\n"
        "attempt('udp53', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53)))\n"
        "attempt('tcp443', lambda: socket.create_connection(('1.1.1.1', 443), timeout=2))\n"
        "print(json.dumps(out))\n"
    )
    r, _ = sandboxed(ctx, backend, code)
    assert all(v.startswith("blocked") for v in report(r).values()), report(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_outside_cannot_be_changed(ctx: Ctx, backend: str) -> None:
    v = ctx.world.victim
    code = PROBE + (
        "import os\n"
        f"p = {str(v)!r}\n"
        "attempt('chmod', lambda: os.chmod(p, 0o777))\n"
        "attempt('chown', lambda: os.chown(p, 4242 if os.getuid() == 0 else os.getuid(), -1))\n"
        "attempt('utime', lambda: os.utime(p, (5, 5)))\n"
        "attempt('setxattr', lambda: os.setxattr(p, 'user.polyfuse', b'x'))\n"
        "attempt('write', lambda: open(p, 'a').write('changed'))\n"
        "attempt('create', lambda: open(p + '.new', 'w'))\n"
        "print(json.dumps(out))\n"
    )
    assert all(x.startswith("ok") for x in json.loads(control(ctx, code)["stdout"]).values())
    ctx.world.reset_victim()
    (v.parent / "victim.txt.new").unlink()
    before = os.stat(v)
    r, _ = sandboxed(ctx, backend, code)
    assert all(x.startswith("blocked") for x in report(r).values()), report(r)
    after = os.stat(v)
    assert (after.st_mode, after.st_uid, after.st_mtime) == (before.st_mode, before.st_uid, before.st_mtime)
    assert (
        os.listxattr(v) == []
        and v.read_text() == "untouched\n"
        and not (v.parent / "victim.txt.new").exists()
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_process_outside_cannot_be_killed(ctx: Ctx, backend: str) -> None:
    pid = outside_pid(ctx.world)
    probe = (
        PROBE + f"import os, signal\nattempt('kill', lambda: os.kill({pid}, SIG))\nprint(json.dumps(out))\n"
    )
    assert report_of(control(ctx, probe.replace("SIG", "0")))["kill"].startswith("ok")  # it may signal it
    r, _ = sandboxed(ctx, backend, probe.replace("SIG", "signal.SIGKILL"))
    time.sleep(0.2)
    assert alive(pid) and report(r)["kill"].startswith("blocked")


# io_uring_setup (its ring bypasses syscall filters) and keyctl (the user's keyrings), by architecture
KERNEL_CALLS = {"x86_64": (425, 250), "aarch64": (425, 219)}.get(platform.machine())
KERNEL_PROBE = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
ring = libc.syscall({io_uring}, 8, params)
out = {{"io_uring": "ok" if ring >= 0 else os.strerror(ctypes.get_errno())}}
keyring = libc.syscall({keyctl}, 0, -4, 0)  # KEYCTL_GET_KEYRING_ID of the user keyring
out["keyctl"] = "ok" if keyring >= 0 else os.strerror(ctypes.get_errno())
print(json.dumps(out))
"""


@pytest.mark.skipif(KERNEL_CALLS is None, reason=f"no syscall numbers for {platform.machine()}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_io_uring_and_the_keyrings_are_denied(ctx: Ctx, backend: str) -> None:
    assert KERNEL_CALLS is not None
    code = KERNEL_PROBE.format(io_uring=KERNEL_CALLS[0], keyctl=KERNEL_CALLS[1])
    assert report_of(control(ctx, code)) == {"io_uring": "ok", "keyctl": "ok"}
    r, _ = sandboxed(ctx, backend, code)
    assert report(r) == {"io_uring": os.strerror(errno.EPERM), "keyctl": os.strerror(errno.EPERM)}
    assert "seccomp" in r["confinement"]


def report_of(c: dict[str, Any]) -> dict[str, str]:
    return report({"stdout": c["stdout"], "stderr": c["stderr"]})


FORK_BOMB = """
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.05)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fork_bomb_is_bounded_and_dies_whole(ctx: Ctx, backend: str) -> None:
    limit = 128
    token = new_token()
    with Watch(token) as watch:
        r, _ = sandboxed(ctx, backend, FORK_BOMB, timeout=3.0, token=token, max_processes=limit)
    assert r["timed_out"]
    assert 10 <= watch.most <= limit + 3, watch.most  # + bwrap's monitor and pid 1, or the reaper


MEMORY_BOMB = """
import os, sys, time
kids = []
for i in range(12):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            block = bytearray(120 << 20)
            for j in range(0, len(block), 4096):
                block[j] = 1
            time.sleep(1.5)
        finally:
            os._exit(0)
    kids.append(pid)
print([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in kids])
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_multi_process_memory_bomb_is_bounded(ctx: Ctx, backend: str) -> None:
    memory_mb, procs = 200, 6
    token = new_token()
    with Watch(token) as watch:
        r, _ = sandboxed(ctx, backend, MEMORY_BOMB, 8.0, token, memory_mb=memory_mb, max_processes=procs)
    held_mb = watch.most_anon_kb / 1024
    if "cgroup-memory" in r["confinement"]:
        # the whole run: at most one 120 MB block at a time (plus each process's own interpreter)
        assert held_mb <= memory_mb + 12 * 12, held_mb
        assert r["out_of_memory"]
    else:
        assert held_mb <= memory_mb * procs, (
            held_mb
        )  # per-process limit x process limit; 12 x 120 MB unbounded
    assert held_mb >= 100, f"the bomb never held its memory ({held_mb:.0f} MB): the test proves nothing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_infinite_output_is_capped_without_the_caller_growing(ctx: Ctx, backend: str) -> None:
    code = "import sys\nb = b'x' * 65536\nwhile True:\n    sys.stdout.buffer.write(b)\n    sys.stderr.buffer.write(b)\n"
    r, _ = sandboxed(ctx, backend, code, timeout=2.0, output_bytes=32_000)
    assert r["timed_out"]
    assert r["stdout_dropped"] > 10 << 20 and r["stderr_dropped"] > 10 << 20
    assert 32_000 <= len(r["stdout"]) < 32_200 and "bytes of output dropped" in r["stdout"]


SETSID = """
import subprocess, sys, time
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]], start_new_session=True)
print('spawned', flush=True)
{rest}
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_setsid_grandchild_holding_the_pipes_does_not_hold_the_call(ctx: Ctx, backend: str) -> None:
    started = time.monotonic()
    r, _ = sandboxed(ctx, backend, SETSID.format(rest=""), timeout=20.0)
    assert r["returncode"] == 0 and r["stdout"] == "spawned\n" and not r["timed_out"]
    assert time.monotonic() - started < 20.0  # it did not wait for the grandchild (which sleeps 300 s)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_setsid_grandchild_dies_with_a_timed_out_run(ctx: Ctx, backend: str) -> None:
    r, _ = sandboxed(ctx, backend, SETSID.format(rest="time.sleep(300)"), timeout=1.5)
    assert r["timed_out"] and r["stdout"] == "spawned\n"


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open('/dev/null', os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]])
    os._exit(0)
time.sleep(0.3)
print('daemon started')
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_detached_daemon_does_not_survive_the_run(ctx: Ctx, backend: str) -> None:
    r, _ = sandboxed(ctx, backend, DAEMON)  # sandboxed() checks no process of the run is left
    assert r["returncode"] == 0 and r["stdout"] == "daemon started\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_busy_loop_is_killed_at_the_timeout(ctx: Ctx, backend: str) -> None:
    r, _ = sandboxed(ctx, backend, "while True: pass", timeout=1.0, cpu_seconds=60)
    assert r["timed_out"] and r["returncode"] != 0
