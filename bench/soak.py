"""Soak: a real `polyfuse serve` (one worker, run log on) under 64 clients for 5 minutes, once on pass-through
and once on a fused preset of 3 members + a judge, against a fake OpenAI-compatible upstream on loopback (its
own process). Load comes from Debian's ``wrk`` (one thread, its own process).

Measured per workload, each on a fresh server: responses that were not 2xx (and socket errors), the server's
RSS in the first and in the last minute (sampled every second from /proc), its open file descriptors before
the load and after it (waiting up to a minute for keep-alive connections to close), latency p50/p99 from
wrk's histogram, and the run log's write queue from /health (written, dropped) after the load.

Goals: 0 non-2xx, RSS growth under 50 MB from the first to the last minute, fds back to their baseline after
the load, fused p99 under 2 x its p50. ``--seconds`` makes a shorter run (the windows shrink to a third of it);
``--no-log-too`` measures the same workloads with ``--no-log`` as well, one after the other. ``--compare N``
measures only what the run log costs: fused latency with the log on and off, in N alternating short rounds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from polyfuse.testing.upstream import Behaviour, FakeUpstream

JUDGE = json.dumps(
    {
        "scores": {"A": {"score": 8, "reason": "fine"}},
        "consensus": ["all agree"],
        "contradictions": [],
        "agreement": 0.7,
        "choice": "A",
    }
)
LUA = """
wrk.method = "POST"
wrk.body = '{"model": "%s", "messages": [{"role": "user", "content": "Say hello to the soak test"}]}'
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
MB = 1024 * 1024


def behaviours(latency: float) -> dict[str, Behaviour]:
    out = {"fast": Behaviour(text="Hello there, soak test.", latency=latency)}
    out.update({f"m{i}": Behaviour(text=f"Hello from member {i}.", latency=latency) for i in range(3)})
    out["judge"] = Behaviour(text=JUDGE, latency=latency)
    return out


def serve_upstream(behaviours: dict[str, Behaviour], port_queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """The fake upstream until killed, forgetting the requests it records (a soak sends hundreds of thousands;
    kept, they would grow this process by gigabytes)."""
    up = FakeUpstream(behaviours).start()
    port_queue.put(up.port)
    while True:
        time.sleep(5)
        up.requests.clear()
        up.headers.clear()


@dataclass
class Result:
    workload: str
    log: bool
    seconds: float
    requests: int = 0
    rps: float = 0.0
    non_2xx: int = 0
    socket_errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rss_first_mb: float = 0.0
    rss_last_mb: float = 0.0
    rss_peak_mb: float = 0.0
    fd_baseline: int = 0
    fd_peak: int = 0
    fd_after: int = 0
    fd_settle_s: float = 0.0
    run_log: dict[str, int] = field(default_factory=dict)

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_last_mb - self.rss_first_mb

    def goals(self) -> dict[str, bool]:
        out = {
            "0 non-2xx": self.non_2xx + self.socket_errors == 0,
            "RSS growth < 50 MB": self.rss_growth_mb < 50,
            "fds back to baseline": self.fd_after <= self.fd_baseline,
        }
        if self.workload == "fused":
            out["p99 < 2 x p50"] = self.p99_ms < 2 * self.p50_ms
        return out


class Sampler(threading.Thread):
    """RSS and open fds of one process, once a second, with the time since start."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - start, rss(self.pid), fds(self.pid)))
            self.stop.wait(1.0)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def post(url: str, model: str) -> int:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "warm up"}]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.status


def start_server(tmp: Path, upstream: str, log: bool) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp / "polyfuse.toml"
    config.write_text(
        f'[log]\npath = "{tmp / "runs.db"}"\n\n'
        f'[providers.up]\nbase_url = "{upstream}"\nmax_retries = 0\n\n'
        '[presets.trio]\npool = ["up/m0", "up/m1", "up/m2"]\njudge = "up/judge"\nmode = "best-of"\n'
    )
    exe = Path(sys.executable).with_name("polyfuse")
    argv = [str(exe), "serve", "--port", "0", "--config", str(config), *([] if log else ["--no-log"])]
    err = tmp / "serve.log"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err.open("wb"))
    deadline = time.time() + 60
    while time.time() < deadline:
        found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", err.read_text())
        if found and "startup complete" in err.read_text():
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"polyfuse serve did not start:\n{err.read_text()}")


def wrk(url: str, model: str, clients: int, seconds: float, tmp: Path) -> dict[str, float]:
    script = tmp / f"post-{model.replace('/', '_')}.lua"
    script.write_text(LUA % model)
    argv = ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "60s", "--latency", "-s"]
    out = subprocess.run([*argv, str(script), url], capture_output=True, text=True, check=True).stdout

    def ms(pct: str) -> float:
        found = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s|m)\b", out)
        return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": ms("50"),
        "p99": ms("99"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def soak(workload: str, log: bool, upstream: str, args: argparse.Namespace) -> Result:
    model = "polyfuse/trio" if workload == "fused" else "up/fast"
    with tempfile.TemporaryDirectory(prefix="polyfuse-soak-") as tmpdir:
        tmp = Path(tmpdir)
        proc, base = start_server(tmp, upstream, log)
        try:
            url = base + "/v1/chat/completions"
            for _ in range(3):
                assert post(url, model) == 200
            time.sleep(1.0)
            result = Result(workload, log, args.seconds, fd_baseline=fds(proc.pid))
            sampler = Sampler(proc.pid)
            sampler.start()
            figures = wrk(url, model, args.clients, args.seconds, tmp)
            sampler.stop.set()
            sampler.join()
            settle = time.monotonic()
            while fds(proc.pid) > result.fd_baseline and time.monotonic() - settle < args.settle:
                time.sleep(0.5)
            result.fd_settle_s = time.monotonic() - settle
            result.fd_after = fds(proc.pid)
            health = get_json(base + "/health")
            result.run_log = health.get("run_log") or {}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    window = min(60.0, args.seconds / 3)
    first = [r for t, r, _ in sampler.samples if t <= window]
    last = [r for t, r, _ in sampler.samples if t >= sampler.samples[-1][0] - window]
    result.requests, result.rps = int(figures["requests"]), figures["rps"]
    result.non_2xx, result.socket_errors = int(figures["non_2xx"]), int(figures["socket_errors"])
    result.p50_ms, result.p99_ms = figures["p50"], figures["p99"]
    result.rss_first_mb, result.rss_last_mb = max(first) / MB, max(last) / MB
    result.rss_peak_mb = max(r for _, r, _ in sampler.samples) / MB
    result.fd_peak = max(f for _, _, f in sampler.samples)
    return result


def compare(upstream: str, args: argparse.Namespace) -> None:
    """What the run log costs the fused workload's latency: two servers, run log on and off, loaded in
    alternating short rounds (so the machine's changing load hits both alike); medians per arm."""
    model = "polyfuse/trio"
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="polyfuse-soak-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "on").mkdir()
        (tmp / "off").mkdir()
        servers = {name: start_server(tmp / name, upstream, name == "on") for name in runs}
        try:
            for _, base in servers.values():
                assert post(base + "/v1/chat/completions", model) == 200
            for i in range(args.compare):
                order = ["on", "off"] if i % 2 == 0 else ["off", "on"]
                for name in order:
                    url = servers[name][1] + "/v1/chat/completions"
                    runs[name].append(wrk(url, model, args.clients, args.round_seconds, tmp))
            written = get_json(servers["on"][1] + "/health")["run_log"]
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(
        f"\nrun log on vs off, fused, {args.clients} clients, {args.compare} alternating rounds of "
        f"{args.round_seconds:g} s each, upstream latency {args.latency * 1000:g} ms; medians over rounds"
    )
    for name in ("on", "off"):
        rounds = ", ".join(f"{r['rps']:.0f}/{r['p50']:.0f}/{r['p99']:.0f}" for r in runs[name])
        print(f"run log {name}, each round req/s / p50 ms / p99 ms: {rounds}")
    print("| run log | req/s | p50 ms | p99 ms | p99/p50 | non-2xx + socket errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in ("on", "off"):
        bad = sum(r["non_2xx"] + r["socket_errors"] for r in runs[name])
        p50, p99 = median(name, "p50"), median(name, "p99")
        print(f"| {name} | {median(name, 'rps'):.0f} | {p50:.1f} | {p99:.1f} | {p99 / p50:.2f} | {bad:.0f} |")
    print(
        f"on/off: p50 {median('on', 'p50') / median('off', 'p50'):.2f}, p99 "
        f"{median('on', 'p99') / median('off', 'p99'):.2f}, req/s {median('on', 'rps') / median('off', 'rps'):.2f}; "
        f"run log written {written['written']}, dropped {written['dropped']}"
    )


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nsoak: {args.clients} clients, {args.seconds:g} s per workload, upstream latency "
        f"{args.latency * 1000:g} ms per call, RSS windows {min(60.0, args.seconds / 3):g} s"
    )
    print(
        "| workload | run log | requests | req/s | non-2xx + socket errors | p50 ms | p99 ms | p99/p50 | "
        "RSS first -> last window MB (growth, peak) | fds before / peak / after (settled in) | "
        "run log written / dropped |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for r in results:
        logged = f"{r.run_log.get('written', '-')} / {r.run_log.get('dropped', '-')}" if r.log else "off"
        print(
            f"| {r.workload} | {'on' if r.log else 'off'} | {r.requests} | {r.rps:.0f} | "
            f"{r.non_2xx + r.socket_errors} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.p99_ms / r.p50_ms:.2f} | "
            f"{r.rss_first_mb:.1f} -> {r.rss_last_mb:.1f} ({r.rss_growth_mb:+.1f}, peak {r.rss_peak_mb:.1f}) | "
            f"{r.fd_baseline} / {r.fd_peak} / {r.fd_after} ({r.fd_settle_s:.1f} s) | {logged} |"
        )
    print()
    for r in results:
        goals = ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in r.goals().items())
        print(f"{r.workload}, run log {'on' if r.log else 'off'}: {goals}")


def main() -> list[Result]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300, help="load per workload (default 300)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.0, help="upstream latency per call, seconds")
    parser.add_argument("--settle", type=float, default=60, help="seconds to wait for fds to return")
    parser.add_argument("--workloads", default="passthrough,fused")
    parser.add_argument("--no-log-too", action="store_true", help="also measure with --no-log")
    parser.add_argument(
        "--compare", type=int, default=0, help="instead: N alternating rounds, run log on vs off (fused)"
    )
    parser.add_argument("--round-seconds", type=float, default=20, help="length of one --compare round")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/soak.py needs wrk: apt-get install wrk")
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    up = ctx.Process(target=serve_upstream, args=(behaviours(args.latency), ports), daemon=True)
    up.start()
    results = []
    try:
        upstream = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
        if args.compare:
            compare(upstream, args)
            return []
        for workload in args.workloads.split(","):
            for log in (True, False) if args.no_log_too else (True,):
                results.append(soak(workload, log, upstream, args))
                print(f"{workload} (run log {'on' if log else 'off'}) done", file=sys.stderr, flush=True)
    finally:
        up.terminate()
        up.join()
    report(results, args)
    return results


if __name__ == "__main__":
    main()
