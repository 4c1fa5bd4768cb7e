"""Runs programs through the sandbox's entry point (``run_python``) for the hostile-program tests, in its own
process so a test can run it as root or as an unprivileged user and measure what a run costs the caller.

Reads one JSON job per line on stdin, answers one JSON line on stdout:
job: {"code", "args", "limits", "control", "workdir"}; with "control" the program runs unsandboxed (a plain
subprocess as the same user, same environment) to show that the attack works without the sandbox; with
"workdir" it runs in that directory (the caller's) instead of a fresh one.
answer: {"result" | "control" | "error", "elapsed" (seconds), "rss_growth_kb" (peak RSS during the job above
the RSS before it)}. The first line it writes is {"pid": ..., "uid": ...}.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from polyfuse.code.sandbox import SandboxLimits, run_python, run_sandboxed


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # resets VmHWM, the peak resident set size


def _control(code: str, args: list[str], timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as work:
        try:
            r = subprocess.run(
                [sys.executable, "-I", "-c", code, *args],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            return {"returncode": None, "stdout": str(exc.stdout or ""), "stderr": "timed out"}
    return {"returncode": r.returncode, "stdout": r.stdout[-20000:], "stderr": r.stderr[-20000:]}


def main() -> None:
    print(json.dumps({"pid": os.getpid(), "uid": os.geteuid()}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        limits = SandboxLimits(**job["limits"])
        before = _status("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        answer: dict[str, object] = {}
        try:
            if job.get("control"):
                answer["control"] = _control(job["code"], job["args"], limits.timeout)
            elif job.get("workdir"):  # the caller's own directory
                argv = [sys.executable, "-I", "-c", job["code"], *job["args"]]
                result = asyncio.run(run_sandboxed(argv, workdir=Path(job["workdir"]), limits=limits))
                answer["result"] = dataclasses.asdict(result)
            else:
                result = asyncio.run(run_python(job["code"], limits=limits, args=job["args"]))
                answer["result"] = dataclasses.asdict(result)
        except Exception as exc:  # reported to the test, which fails with it
            answer["error"] = f"{type(exc).__name__}: {exc}"
        answer["elapsed"] = time.perf_counter() - started
        answer["rss_growth_kb"] = max(_status("VmHWM") - before, 0)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
