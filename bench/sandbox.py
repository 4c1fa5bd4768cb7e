"""What the sandbox adds to one check: the same program run unsandboxed and sandboxed, interleaved in one run.

Two programs: ``print`` (the interpreter starting and printing, the floor of any check) and ``doctest`` (the
examples check polyfuse runs on generated code: a module with three doctest examples through the same runner
script ``examples_check`` uses). Each is run N times unsandboxed (a plain asyncio subprocess in a fresh temporary
directory, output captured: what any careful runner does at least) and N times through ``run_sandboxed`` with
each sandbox, in alternation, so load on this shared machine falls on all sides alike. *added* is the
sandboxed time minus the unsandboxed time of the same round.

Wall time on a loaded machine mostly measures waiting for a CPU (a sandboxed run is a chain of processes, each
queued behind the load), so where a cgroup v1 ``cpuacct`` hierarchy is writable (root) the benchmark also puts
itself in a cgroup of its own and reports the CPU time each run cost (polyfuse's side included), which the
load barely changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from polyfuse.code.checks import _EXAMPLES_RUNNER
from polyfuse.code.sandbox import SandboxLimits, run_sandboxed, sandbox_info

DOCTESTED = '''
def add(a, b):
    """
    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    >>> add(10, 5)
    15
    """
    return a + b
'''

PROGRAMS = {
    "print": ({"main.py": "print('ok')\n"}, [sys.executable, "-I", "main.py"]),
    "doctest": (
        {"solution.py": DOCTESTED, "_polyfuse_examples.py": _EXAMPLES_RUNNER},
        [sys.executable, "-I", "_polyfuse_examples.py", "solution.py"],
    ),
}


async def unsandboxed(files: dict[str, str], argv: list[str]) -> float:
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="polyfuse-bench-"))
    try:
        for name, text in files.items():
            (root / name).write_text(text)
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return time.perf_counter() - started


async def sandboxed(files: dict[str, str], argv: list[str], backend: str) -> float:
    started = time.perf_counter()
    limits = SandboxLimits(timeout=30, backend=backend, allow_weak=True)  # type: ignore[arg-type]
    r = await run_sandboxed(argv, files=files, limits=limits)
    assert r.ok, r.stderr
    return time.perf_counter() - started


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1]


class CpuClock:
    """CPU time used by this process and every process it starts (cgroup v1 cpuacct), where available."""

    def __init__(self) -> None:
        self.dir: Path | None = Path(f"/sys/fs/cgroup/cpuacct/polyfuse-bench-{os.getpid()}")
        try:
            self.dir.mkdir()
            (self.dir / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            self.dir = None

    def now(self) -> float:
        return int((self.dir / "cpuacct.usage").read_text()) / 1e9 if self.dir else 0.0

    def close(self) -> None:
        if self.dir is not None:
            with contextlib.suppress(OSError):
                Path("/sys/fs/cgroup/cpuacct/cgroup.procs").write_text(str(os.getpid()))
                self.dir.rmdir()


async def measured(clock: CpuClock, run: Awaitable[float]) -> tuple[float, float]:
    cpu = clock.now()
    wall = await run
    return wall, clock.now() - cpu


async def main(n: int) -> None:
    backends = ["bwrap", "landlock"]
    clock = CpuClock()
    print(f"sandbox here: {sandbox_info().detail}; fallback: {sandbox_info('landlock').detail}")
    print(
        f"{n} rounds per program after 3 warm-up rounds, interleaved; milliseconds; load {os.getloadavg()[0]:.1f}"
    )
    print(
        "| program | sandbox | unsandboxed median | sandboxed median | added median | added p90 | CPU added median |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    try:
        for name, (files, argv) in PROGRAMS.items():
            base: list[float] = []
            runs: dict[str, list[float]] = {b: [] for b in backends}
            added: dict[str, list[float]] = {b: [] for b in backends}
            cpu_added: dict[str, list[float]] = {b: [] for b in backends}
            for i in range(n + 3):
                t0, c0 = await measured(clock, unsandboxed(files, argv))
                times = {b: await measured(clock, sandboxed(files, argv, b)) for b in backends}
                if i < 3:
                    continue
                base.append(t0)
                for b in backends:
                    runs[b].append(times[b][0])
                    added[b].append(times[b][0] - t0)
                    cpu_added[b].append(times[b][1] - c0)
            for b in backends:
                row = [
                    statistics.median(base),
                    statistics.median(runs[b]),
                    statistics.median(added[b]),
                    p90(added[b]),
                ]
                cpu = f"{statistics.median(cpu_added[b]) * 1000:.1f}" if clock.dir else "n/a"
                print(f"| {name} | {b} | " + " | ".join(f"{x * 1000:.1f}" for x in row) + f" | {cpu} |")
    finally:
        clock.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=40, help="rounds per program")
    asyncio.run(main(parser.parse_args().n))
