"""The sandbox runs programs and reports what they did, under bwrap and under the Landlock fallback: output,
exit codes, timeouts, CPU and memory limits, its work directory, which sandbox ran, and refusing the weak
sandbox unless allowed. Hostile programs are in test_sandbox_hostile.py."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from polyfuse.code._capture import CappedBuffer
from polyfuse.code.sandbox import (
    SandboxLimits,
    SandboxUnavailableError,
    require_sandbox,
    run_python,
    run_sandboxed,
    sandbox_info,
)
from polyfuse.errors import UserError
from sandboxkit import Runner, none_left

BACKENDS = ["bwrap", "landlock"]


def limits(backend: str, **kw: object) -> SandboxLimits:
    return SandboxLimits(backend=backend, allow_weak=True, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_runs_code_and_says_which_sandbox_ran(backend: str) -> None:
    r = await run_python(
        "import sys\nprint('hi', sys.stdin.read())\nprint('err', file=sys.stderr)",
        stdin="there",
        limits=limits(backend),
    )
    assert r.ok and r.stdout == "hi there\n" and r.stderr == "err\n"
    assert r.sandbox == ("bwrap" if backend == "bwrap" else "landlock (weak)")
    expected = (
        {"bwrap", "userns", "pidns", "netns", "mountns"} if backend == "bwrap" else {"landlock-fs", "seccomp"}
    )
    assert expected | {"rlimits"} <= set(r.confinement), r.confinement


@pytest.mark.parametrize("backend", BACKENDS)
async def test_failing_code_reports_exit_code_and_last_error_line(backend: str) -> None:
    r = await run_python("raise ValueError('bad input')", limits=limits(backend))
    assert not r.ok and r.returncode == 1
    assert r.summary() == "exit code 1: ValueError: bad input"
    r = await run_python("import sys; sys.exit(3)", limits=limits(backend))
    assert r.returncode == 3 and r.signal is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_timeout_stops_the_program_with_its_children(backend: str) -> None:
    token = "tok" + secrets.token_hex(6)
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'while True: pass', sys.argv[1]])\n"
        "while True: pass"
    )
    r = await run_python(code, limits=limits(backend, timeout=1.0, cpu_seconds=30), args=[token])
    assert r.timed_out and not r.ok and r.summary().startswith("timed out after 1.")
    assert none_left(token) == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_cpu_limit_kills_a_busy_loop(backend: str) -> None:
    r = await run_python("while True: pass", limits=limits(backend, timeout=30, cpu_seconds=1))
    assert not r.timed_out and r.signal in ("SIGXCPU", "SIGKILL") and r.summary() == f"killed by {r.signal}"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_memory_limit_holds_for_one_process(backend: str) -> None:
    r = await run_python(
        "x = bytearray(800 * 1024 * 1024)\nprint('allocated')", limits=limits(backend, memory_mb=256)
    )
    assert not r.ok and "MemoryError" in r.stderr and "allocated" not in r.stdout


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_work_directory_is_the_only_writable_place(backend: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = tmp_path / "escape.txt"
    code = f"open('inside.txt', 'w').write('kept')\nopen({str(target)!r}, 'w').write('escaped')\n"
    r = await run_sandboxed([sys.executable, "-I", "-c", code], workdir=work, limits=limits(backend))
    assert not r.ok and ("Permission" in r.stderr or "Read-only file system" in r.stderr), r.stderr
    assert (work / "inside.txt").read_text() == "kept" and not target.exists()
    assert (work / "inside.txt").stat().st_uid == work.stat().st_uid  # the caller's, whatever uid ran it


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_missing_command_is_a_clear_failure(backend: str) -> None:
    r = await run_sandboxed(["definitely-not-a-command-xyz"], limits=limits(backend))
    assert r.returncode == 127 and "cannot run definitely-not-a-command-xyz" in r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
async def test_runs_at_the_same_time_each_get_their_own_input_and_output(backend: str) -> None:
    code = "import sys, time\ndata = sys.stdin.read()\ntime.sleep(0.2)\nprint(data * 2)\nprint(data, file=sys.stderr)"
    runs = [run_python(code, stdin=f"run{i}-", limits=limits(backend)) for i in range(8)]
    runs.append(run_python("while True: pass", limits=limits(backend, timeout=1.0)))
    results = await asyncio.gather(*runs)
    for i, r in enumerate(results[:-1]):
        assert r.ok and r.stdout == f"run{i}-run{i}-\n" and r.stderr == f"run{i}-\n", (i, r)
    assert results[-1].timed_out


def test_sandbox_files_cannot_be_placed_outside() -> None:
    with pytest.raises(ValueError, match="outside the sandbox"):
        asyncio.run(run_sandboxed(["true"], files={"../evil.py": "x"}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_run_removes_its_own_directory(backend: str) -> None:
    r = asyncio.run(run_python("import os\nprint(os.getcwd())", limits=limits(backend)))
    own = Path(r.stdout.strip())
    assert own.name.startswith("polyfuse-sandbox-") and not own.exists()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_cancelled_run_leaves_nothing_behind(backend: str) -> None:
    token = "tok" + secrets.token_hex(6)
    code = "import subprocess, sys, time\nsubprocess.Popen(['sleep', '300', sys.argv[1]], start_new_session=True)\ntime.sleep(300)"
    task = asyncio.create_task(run_python(code, limits=limits(backend, timeout=60), args=[token]))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)
    assert time.monotonic() - started < 15
    assert none_left(token) == []


def test_the_weak_sandbox_is_refused_unless_allowed() -> None:
    weak = SandboxLimits(backend="landlock")
    with pytest.raises(SandboxUnavailableError, match=r"allow_weak_sandbox = true") as caught:
        asyncio.run(run_python("print(1)", limits=weak))
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    assert require_sandbox(SandboxLimits(backend="landlock", allow_weak=True)).backend == "landlock"


def test_bwrap_is_the_adequate_sandbox_here() -> None:
    info = sandbox_info()
    assert info.backend == "bwrap" and info.adequate, info.detail  # scripts/test installs bubblewrap


def test_the_output_buffer_keeps_head_and_tail_and_counts_the_rest() -> None:
    buf = CappedBuffer(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"q" * 100, b"rstuv"):
        buf.feed(chunk)
    assert buf.size == 10 and buf.dropped == 3 + 5 + 8 + 100 + 5 - 10
    assert buf.text() == "abcde\n[... 111 bytes of output dropped ...]\nrstuv"
    small = CappedBuffer(100)
    small.feed(b"short")
    assert small.text() == "short" and small.dropped == 0


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the sandbox drops to uid 65534 only when it runs as root"
)
def test_as_root_the_program_runs_as_uid_65534_and_the_caller_gets_its_directory_back(tmp_path: Path) -> None:
    reachable = Path(tempfile.mkdtemp(prefix="polyfuse-test-work-"))  # in /tmp: uid 65534 can reach it
    hidden = tmp_path / "work"  # beneath pytest's 0700 directory: it cannot
    hidden.mkdir()
    code = "import os\nopen('made.txt', 'w').write(str(os.getuid()))\nos.mkdir('sub')\nprint(open('given.txt').read())"
    runner = Runner(
        "root-view", {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    )  # interpreter readable by others
    try:
        for work, dropped in ((reachable, True), (hidden, False)):
            for backend in BACKENDS:
                (work / "given.txt").write_text("from the caller\n")
                limits = {"backend": backend, "allow_weak": True}
                answer = runner.run(
                    {"code": code, "args": [], "limits": limits, "workdir": str(work)}, timeout=60
                )
                r = answer["result"]
                assert isinstance(r, dict) and r["returncode"] == 0, answer
                assert ("uid-65534" in r["confinement"]) is dropped, r["confinement"]
                inside = (
                    "65534" if dropped or backend == "bwrap" else "0"
                )  # the fallback keeps uid 0, no capabilities
                assert r["stdout"] == "from the caller\n\n" and (work / "made.txt").read_text() == inside
                for path in (work, work / "given.txt", work / "made.txt", work / "sub"):
                    assert path.stat().st_uid == os.geteuid(), path  # handed back to the caller
                (work / "made.txt").unlink()
                (work / "sub").rmdir()
    finally:
        runner.close()
        shutil.rmtree(reachable, ignore_errors=True)
