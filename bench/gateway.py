"""The team gateway's cost, side by side in one run: pass-through through `polyfuse serve` with one worker and
everything off, the same with keys, Redis rate limits, metrics and the run-log database all on, and LiteLLM's
proxy with its key and rate limits counted in Redis (see ``litellm_on`` for why not its virtual keys).

Reuses bench/server_proxy.py: the same upstream process (model ``fast`` answers at once), the same ``wrk``
load (one thread, 16 connections, interleaved rounds, medians), the same LiteLLM install in
bench/.venv-litellm. A real redis-server (Debian's) runs on loopback for both proxies. The polyfuse key has a
requests- and a tokens-per-minute limit far above what the run reaches, so every request pays the full
admission (one Lua script in Redis) and settlement (batched), a usage record (SQLite) and the metrics updates.
Nothing here is a pass/fail test; the figures and their reading are in bench/README.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from server_proxy import KEY, behaviours, ensure_litellm, median_of, wait_ready, wrk  # noqa: E402

from polyfuse.config import load_config  # noqa: E402
from polyfuse.gateway.keystore import KeyStore  # noqa: E402
from polyfuse.store import open_log  # noqa: E402
from polyfuse.testing.upstream import serve_forever  # noqa: E402
from redisserver import RedisServer  # noqa: E402

POLYFUSE = str(Path(sys.executable).with_name("polyfuse"))
OPERATOR = "sk-bench-operator-8c1d2e3f4a5b6c7d"
LIMITS = {"rpm": 10_000_000, "tpm": 1_000_000_000}  # on, checked on every request, never reached


def start_serve(tmp: Path, name: str, config: str, port: int, args: list[str]) -> subprocess.Popen[bytes]:
    (tmp / name).mkdir()
    path = tmp / name / "polyfuse.toml"
    path.write_text(config)
    argv = [POLYFUSE, "serve", "--port", str(port), "--workers", "1", "--config", str(path), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(tmp / f"{name}.log").open("wb"))
    wait_ready(f"http://127.0.0.1:{port}/health", proc)
    return proc


def polyfuse_off(tmp: Path, upstream: str, port: int) -> subprocess.Popen[bytes]:
    config = f'[server]\napi_keys = ["{KEY}"]\n\n[providers.up]\nbase_url = "{upstream}"\nmax_retries = 0\n'
    return start_serve(tmp, "off", config, port, ["--no-log"])


def polyfuse_on(tmp: Path, upstream: str, redis_url: str, port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Keys (a key of team 'bench' with rpm and tpm limits), Redis, metrics and the run log, all on."""
    config = (
        f'[server]\napi_keys = ["{OPERATOR}"]\n\n[providers.up]\nbase_url = "{upstream}"\nmax_retries = 0\n\n'
        f'[log]\npath = "{tmp / "runs.db"}"\n\n'
        f'[gateway]\nkeys = true\nmetrics = true\nredis_url = "{redis_url}"\n\n[gateway.teams.bench]\n'
    )
    (tmp / "on-config.toml").write_text(config)
    cfg = load_config(tmp / "on-config.toml")
    with open_log(cfg.log) as log:
        _, secret = KeyStore(log.backend, cfg.gateway.teams).create("bench", name="wrk", **LIMITS)
    return start_serve(tmp, "on", config, port, []), secret


def litellm_on(tmp: Path, upstream: str, redis: RedisServer, port: int) -> subprocess.Popen[bytes]:
    """LiteLLM's proxy with its key checked on every request and rpm/tpm limits counted in Redis.

    LiteLLM's virtual keys (and their per-key limits) need its PostgreSQL database through Prisma, whose query
    engine Prisma downloads at run time from its own host, which this machine cannot reach; so LiteLLM runs
    with its master key and the same rpm/tpm limits on the deployment, tracked in Redis by its router
    (``usage-based-routing-v2``): the nearest configuration it offers without the database.
    """
    exe = ensure_litellm()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: up/fast\n    litellm_params:\n      model: openai/fast\n"
        f"      api_base: {upstream}\n      api_key: sk-upstream\n"
        f"      rpm: {LIMITS['rpm']}\n      tpm: {LIMITS['tpm']}\n"
        "litellm_settings:\n  telemetry: false\n"
        "router_settings:\n  routing_strategy: usage-based-routing-v2\n  enable_pre_call_checks: true\n"
        f"  redis_host: 127.0.0.1\n  redis_port: {redis.port}\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    argv = [str(exe), "--config", str(config), "--port", str(port), "--num_workers", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(tmp / "litellm.log").open("wb"), env=env)
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc, seconds=300)
    return proc


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    up_proc = ctx.Process(target=serve_forever, args=(behaviours(), ports), daemon=True)
    up_proc.start()
    redis = RedisServer().start()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        try:
            upstream = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
            targets: dict[str, tuple[str, str]] = {}
            procs.append(polyfuse_off(tmp, upstream, 18441))
            targets["polyfuse, gateway off"] = ("http://127.0.0.1:18441/v1/chat/completions", KEY)
            proc, secret = polyfuse_on(tmp, upstream, redis.url, 18442)
            procs.append(proc)
            targets["polyfuse, gateway on"] = ("http://127.0.0.1:18442/v1/chat/completions", secret)
            if not args.no_litellm:
                procs.append(litellm_on(tmp, upstream, redis, 18443))
                targets["litellm, key + Redis limits"] = ("http://127.0.0.1:18443/v1/chat/completions", KEY)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
            pids = dict(zip(targets, (p.pid for p in procs), strict=True))
            for _ in range(args.rounds):  # interleaved: the machine is shared and noisy
                for name, (url, key) in targets.items():
                    runs[name].append(wrk(url, "up/fast", 16, args.seconds, tmp, pid=pids[name], key=key))
            with urllib.request.urlopen(
                urllib.request.Request(
                    "http://127.0.0.1:18442/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}
                ),
                timeout=10,
            ) as r:
                metrics = r.read().decode()
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
            up_proc.terminate()
            up_proc.join()
            redis.close()
    from polyfuse.gateway.metrics import sum_samples

    results = {
        name: {
            "rps_16": median_of(r, "rps"),
            "p50_ms": median_of(r, "p50_ms"),
            "non_2xx": sum(x["non_2xx"] for x in r),
            "requests": sum(x["requests"] for x in r),
            "cpu_us": median_of(r, "cpu_us"),
        }
        for name, r in runs.items()
    }
    results["polyfuse, gateway on"]["metrics_count"] = sum_samples(
        metrics, "polyfuse_requests_total", model="up/fast", status="200"
    )
    return results


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"pass-through, 1 worker, wrk -t1 -c16, {args.rounds} interleaved rounds of {args.seconds}s, medians"
    )
    print(f"{'target':<32} {'req/s':>8} {'p50 ms':>8} {'CPU us/req':>11} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:<32} {r['rps_16']:>8.0f} {r['p50_ms']:>8.2f} {r['cpu_us']:>11.0f} {r['non_2xx']:>8}")
    off, on = results["polyfuse, gateway off"], results["polyfuse, gateway on"]
    print(f"gateway on / off: {on['rps_16'] / off['rps_16']:.2f} in req/s (goal >= 0.80)")
    print(f"gateway off / on in server CPU per request: {off['cpu_us'] / on['cpu_us']:.2f}")
    print(f"/metrics counted {on['metrics_count']:.0f} answered requests; wrk completed {on['requests']:.0f}")
    ll = results.get("litellm, key + Redis limits")
    if ll:
        print(f"gateway on / litellm: {on['rps_16'] / ll['rps_16']:.1f}x (goal >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/gateway.py needs wrk: apt-get install wrk")
    started = time.time()
    results = run(args)
    report(results, args)
    print(f"({time.time() - started:.0f}s)")


if __name__ == "__main__":
    main()
