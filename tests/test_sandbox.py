"""The sandbox really confines: timeouts kill the process group, writes outside its directory and network
connections are refused, resource limits hold."""

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

from polyfuse.code.sandbox import SandboxLimits, run_python, run_sandboxed


async def test_runs_code_and_captures_output():
    r = await run_python(
        "import sys\nprint('hi', sys.stdin.read())\nprint('err', file=sys.stderr)", stdin="there"
    )
    assert r.ok and r.stdout == "hi there\n" and r.stderr == "err\n"
    assert "rlimits" in r.confinement


async def test_failing_code_reports_exit_code_and_last_error_line():
    r = await run_python("raise ValueError('bad input')")
    assert not r.ok and r.returncode == 1
    assert r.summary() == "exit code 1: ValueError: bad input"


async def test_infinite_loop_is_stopped_by_the_timeout_with_its_children():
    code = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'while True: pass'])\nwhile True: pass"
    r = await run_python(code, limits=SandboxLimits(timeout=1.0, cpu_seconds=30))
    assert r.timed_out and not r.ok and r.summary().startswith("timed out")
    assert r.duration < 30


async def test_cpu_limit_kills_a_busy_loop():
    r = await run_python("while True: pass", limits=SandboxLimits(timeout=30, cpu_seconds=1))
    assert not r.timed_out and r.signal in ("SIGXCPU", "SIGKILL")


async def test_memory_limit_holds():
    r = await run_python(
        "x = bytearray(800 * 1024 * 1024)\nprint('allocated')", limits=SandboxLimits(memory_mb=256)
    )
    assert not r.ok and "MemoryError" in r.stderr and "allocated" not in r.stdout


async def test_writes_outside_the_sandbox_directory_are_refused(tmp_path):
    target = tmp_path / "escape.txt"
    code = (
        "from pathlib import Path\n"
        "Path('inside.txt').write_text('fine')\n"
        f"Path({str(target)!r}).write_text('escaped')\n"
    )
    r = await run_python(code)
    assert "landlock-fs" in r.confinement, r.confinement
    assert not r.ok and "PermissionError" in r.stderr
    assert not target.exists()


async def test_workdir_mode_lets_the_caller_keep_results(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    r = await run_sandboxed([sys.executable, "-c", "open('out.txt', 'w').write('kept')"], workdir=work)
    assert r.ok and (work / "out.txt").read_text() == "kept"
    r = await run_sandboxed([sys.executable, "-c", f"open({str(tmp_path / 'x')!r}, 'w')"], workdir=work)
    assert not r.ok and not (tmp_path / "x").exists()


async def test_network_connections_are_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    done = threading.Event()
    server.settimeout(0.1)

    def accept():
        while not done.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept)
    t.start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('connected')"
    r = await run_python(code, limits=SandboxLimits(timeout=10))
    done.set()
    t.join()
    server.close()
    assert {"netns", "landlock-net"} & set(r.confinement), r.confinement
    assert not r.ok and "connected" not in r.stdout and accepted == []


async def test_missing_command_is_a_clear_failure():
    r = await run_sandboxed(["definitely-not-a-command-xyz"])
    assert r.returncode == 127 and "cannot run definitely-not-a-command-xyz" in r.stderr


def test_sandbox_files_cannot_be_placed_outside():
    import asyncio

    with pytest.raises(ValueError, match="outside the sandbox"):
        asyncio.run(run_sandboxed(["true"], files={"../evil.py": "x"}))


def test_temp_directories_are_removed():
    import asyncio
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("polyfuse-sandbox-*"))
    asyncio.run(run_python("print(1)"))
    assert set(Path(tempfile.gettempdir()).glob("polyfuse-sandbox-*")) == before
    assert os.path.isdir(tempfile.gettempdir())
