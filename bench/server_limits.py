"""What the server's connection limits actually bound, measured on a real `polyfuse serve` (one worker, empty
config, ``ulimit -n 1024``): the peak RSS while 20 clients each send an unfinished 50 MB header; whether
/health still answers with 1,100 idle sockets open; and the server's file descriptors once they went quiet for
the header timeout. ``--baseline-src DIR`` runs the same against another source tree (e.g. ``git archive main
src``) for a before/after comparison. Not a pass/fail test; the figures are in bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

POLYFUSE = str(Path(sys.executable).with_name("polyfuse"))


def start(tmp: Path, src: str | None) -> tuple[subprocess.Popen[bytes], int]:
    (tmp / "p.toml").write_text("")
    log = tmp / "serve.log"
    env = {**os.environ, "PYTHONPATH": src} if src else None

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        [POLYFUSE, "serve", "--port", "0", "--config", str(tmp / "p.toml"), "--no-log"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
        preexec_fn=limit_fds,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        text = log.read_text()
        found = re.search(r"serving on http://[^ ]*:(\d+) ", text)
        if found and "startup complete" in text:
            return proc, int(found.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"polyfuse serve did not start: {log.read_text()}")


def peak_mb(pid: int) -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024  # type: ignore[union-attr]


def health(port: int) -> str:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        return str(r.status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def measure(label: str, src: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, port = start(Path(tmpdir), src)
        try:
            before = peak_mb(proc.pid)
            started = time.monotonic()
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.settimeout(5)
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: ")
                    try:
                        for _ in range(800):  # 50 MB in 64 kB pieces
                            s.sendall(b"a" * 65536)
                    except OSError:
                        pass  # refused and closed by the server
            took = time.monotonic() - started
            print(
                f"{label}: 20 unfinished 50 MB headers: peak RSS {before:.0f} -> {peak_mb(proc.pid):.0f} MB ({took:.1f} s)"
            )
            idle = []
            try:
                for _ in range(1100):
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError as exc:
                print(f"{label}: could open {len(idle)} sockets: {exc}")
            time.sleep(1)
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            print(f"{label}: {len(idle)} idle sockets: /health {health(port)}, server fds {fds}")
            time.sleep(12)
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            print(f"{label}: 12 s later: /health {health(port)}, server fds {fds}")
            for s in idle:
                s.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline-src", help="also measure the polyfuse in this source tree")
    args = parser.parse_args()
    if args.baseline_src:
        measure("baseline", args.baseline_src)
    measure("polyfuse", None)


if __name__ == "__main__":
    main()
