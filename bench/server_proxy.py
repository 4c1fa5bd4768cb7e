"""polyfuse serve as a proxy, side by side with LiteLLM's proxy in one run, against one fast upstream.

An OpenAI-compatible upstream (polyfuse.testing.upstream, its own process) answers model ``fast`` at once and
``slow`` after 200 ms. Both proxies run as real servers with the same worker count; ``wrk`` (Debian's, its own
process) is the load generator. Measured, for each proxy and for the upstream directly:

* single-model pass-through requests/s at 16 connections;
* median latency at one client; *added* latency = proxy median - direct median;
* median latency behind the 200 ms upstream at 64 clients (an ideal proxy stays at ~200 ms);
* polyfuse only: fused requests/s for a pool of 3 plus a judge (best-of: four upstream calls each).

LiteLLM is installed from PyPI into bench/.venv-litellm (created on first use, gitignored). Nothing here is a
pass/fail test; the figures and their reading are in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from polyfuse.testing.upstream import Behaviour, serve_forever

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
JUDGE = json.dumps(
    {
        "scores": {"A": {"score": 8, "reason": "fine"}},
        "consensus": [],
        "contradictions": [],
        "agreement": 0.5,
        "choice": "A",
    }
)
LUA = """
wrk.method = "POST"
wrk.body = '{"model": "%s", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""
KEY = "sk-bench-5f1c0e9a7d3b4c2e8f6a1d0b9c8e7f6a"  # both proxies check it, as deployed proxies would
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def behaviours() -> dict[str, Behaviour]:
    out = {
        "fast": Behaviour(text="Hello there, friend."),
        "slow": Behaviour(text="Hello, slowly.", latency=0.2),
    }
    out.update({f"m{i}": Behaviour(text=f"Answer {i}.") for i in range(3)})
    out["judge"] = Behaviour(text=JUDGE)
    return out


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "litellm[proxy]"], check=True)
    return exe


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_polyfuse(
    tmp: Path, upstream: str, port: int, workers: int, src: str | None = None
) -> subprocess.Popen[bytes]:
    """``src``: run the polyfuse found in that source tree instead (a before/after comparison in one run)."""
    config = tmp / "polyfuse.toml"
    config.write_text(
        f'[server]\napi_keys = ["{KEY}"]\n\n[providers.up]\nbase_url = "{upstream}"\nmax_retries = 0\n\n'
        '[presets.trio]\npool = ["up/m0", "up/m1", "up/m2"]\njudge = "up/judge"\nmode = "best-of"\n'
    )
    exe = Path(sys.executable).with_name("polyfuse")
    argv = [str(exe), "serve", "--port", str(port), "--workers", str(workers), "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    log = (tmp / f"polyfuse-{port}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
    wait_ready(f"http://127.0.0.1:{port}/health", proc)
    return proc


def start_litellm(tmp: Path, upstream: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    exe = ensure_litellm()
    config = tmp / "litellm.yaml"
    models = "".join(
        f"  - model_name: up/{name}\n    litellm_params:\n      model: openai/{name}\n"
        f"      api_base: {upstream}\n      api_key: sk-upstream\n"
        for name in ("fast", "slow")
    )
    config.write_text(
        f"model_list:\n{models}litellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {KEY}\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    argv = [str(exe), "--config", str(config), "--port", str(port), "--num_workers", str(workers)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(tmp / "litellm.log").open("wb"), env=env)
    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", proc)
    return proc


def tree_cpu(pid: int | None) -> float:
    """CPU seconds used so far by a process and its children (uvicorn's workers)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu(int(c)) for c in children)


def wrk(
    url: str, model: str, connections: int, seconds: int, tmp: Path, pid: int | None = None, key: str = KEY
) -> dict[str, float]:
    """One wrk run; with ``pid``, also the server's CPU per request (robust to a busy machine, unlike req/s)."""
    script = tmp / f"post-{model.replace('/', '_')}-{key[-6:]}.lua"
    script.write_text(LUA % (model, key))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    cpu = tree_cpu(pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = tree_cpu(pid) - cpu
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return {
        "rps": rps,
        "requests": requests,
        "p50_ms": float(p50.group(1)) * _UNITS[p50.group(2)] if p50 else float("nan"),
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
        "cpu_us": cpu / max(1, requests) * 1e6 if pid is not None else float("nan"),
    }


def median_of(runs: list[dict[str, float]], key: str) -> float:
    values = sorted(r[key] for r in runs)
    return values[len(values) // 2]


def measure(
    targets: dict[str, tuple[str, str, str]], pids: dict[str, int], args: argparse.Namespace, tmp: Path
) -> dict[str, dict]:
    """Interleave the targets round by round (the machine is shared and noisy), keep the median per target."""
    out: dict[str, dict] = {name: {"rps16": [], "c1": [], "slow64": []} for name in targets}
    for _ in range(args.rounds):
        for name, (url, fast, slow) in targets.items():
            out[name]["rps16"].append(wrk(url, fast, 16, args.seconds, tmp, pids.get(name)))
            out[name]["c1"].append(wrk(url, fast, 1, args.seconds, tmp))
            out[name]["slow64"].append(wrk(url, slow, 64, args.seconds, tmp))
    return {
        name: {
            "rps_16": median_of(runs["rps16"], "rps"),
            "cpu_us_16": median_of(runs["rps16"], "cpu_us"),
            "p50_c1_ms": median_of(runs["c1"], "p50_ms"),
            "p50_slow_c64_ms": median_of(runs["slow64"], "p50_ms"),
            "non_2xx": sum(r["non_2xx"] for key in runs for r in runs[key]),
        }
        for name, runs in out.items()
    }


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--baseline-src", help="also measure the polyfuse in this source tree (e.g. `git archive main src`)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/server_proxy.py needs wrk: apt-get install wrk")
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    up_proc = ctx.Process(target=serve_forever, args=(behaviours(), ports), daemon=True)
    up_proc.start()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        try:
            upstream = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
            targets = {"upstream (direct)": (upstream + "/chat/completions", "fast", "slow")}
            procs.append(start_polyfuse(tmp, upstream, 18431, args.workers))
            targets["polyfuse"] = ("http://127.0.0.1:18431/v1/chat/completions", "up/fast", "up/slow")
            if args.baseline_src:
                procs.append(start_polyfuse(tmp, upstream, 18433, args.workers, args.baseline_src))
                targets["polyfuse baseline"] = (
                    "http://127.0.0.1:18433/v1/chat/completions",
                    "up/fast",
                    "up/slow",
                )
            if not args.no_litellm:
                procs.append(start_litellm(tmp, upstream, 18432, args.workers))
                targets["litellm"] = ("http://127.0.0.1:18432/v1/chat/completions", "up/fast", "up/slow")
            pids = {
                name: procs[i].pid for i, name in enumerate(n for n in targets if n != "upstream (direct)")
            }
            results = measure(targets, pids, args, tmp)
            fused_targets = [name for name in ("polyfuse", "polyfuse baseline") if name in targets]
            fused: dict[str, list[dict[str, float]]] = {name: [] for name in fused_targets}
            for _ in range(args.rounds):  # interleaved, like the rest
                for name in fused_targets:
                    fused[name].append(
                        wrk(targets[name][0], "polyfuse/trio", 16, args.seconds, tmp, pids.get(name))
                    )
            for name, runs in fused.items():
                results[name]["fused_rps_16"] = median_of(runs, "rps")
                results[name]["fused_cpu_us"] = median_of(runs, "cpu_us")
                results[name]["fused_non_2xx"] = sum(r["non_2xx"] for r in runs)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
            up_proc.terminate()
            up_proc.join()
    report(results, args)
    return results


def report(results: dict[str, dict], args: argparse.Namespace) -> None:
    direct = results["upstream (direct)"]
    print(f"single-model pass-through, {args.workers} worker(s), wrk -t1, medians of {args.rounds} rounds")
    print(
        f"{'target':<18} {'req/s @16':>10} {'CPU us/req':>10} {'p50 @1 ms':>10} {'added ms':>9} "
        f"{'p50 200ms-upstream @64':>23} {'non-2xx':>8}"
    )
    for name, r in results.items():
        added = r["p50_c1_ms"] - direct["p50_c1_ms"]
        print(
            f"{name:<18} {r['rps_16']:>10.0f} {r['cpu_us_16']:>10.0f} {r['p50_c1_ms']:>10.2f} {added:>9.2f} "
            f"{r['p50_slow_c64_ms']:>23.1f} {r['non_2xx']:>8}"
        )
    pf = results["polyfuse"]
    for name in ("polyfuse", "polyfuse baseline"):
        if "fused_rps_16" in results.get(name, {}):
            r = results[name]
            print(
                f"{name} fused (pool of 3 + judge, best-of) req/s @16: {r['fused_rps_16']:.0f}, "
                f"server CPU {r['fused_cpu_us']:.0f} us/req (non-2xx {r['fused_non_2xx']})"
            )
    if "litellm" in results:
        ll = results["litellm"]
        print(
            f"ratios: pass-through polyfuse/litellm {pf['rps_16'] / ll['rps_16']:.1f}x; "
            f"fused polyfuse / litellm pass-through {pf['fused_rps_16'] / ll['rps_16']:.1f}x"
        )


if __name__ == "__main__":
    main()
