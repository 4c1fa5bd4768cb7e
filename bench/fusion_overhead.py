"""Fusion orchestration overhead against an OpenAI-compatible upstream on loopback with set latencies.

For pools of 2, 4 and 8 members (best-of, with a judge), every run reports wall time, the critical path the
engine measured (slowest member + judge, as seen by the HTTP client) and their difference, the orchestration
overhead. The ratio wall / (set slowest latency + set judge latency) shows the whole cost over the ideal,
including HTTP. A second scenario puts one outlier member at 2 s and uses min_responses + straggler_grace.

The upstream runs in its own process so that it does not share a GIL with the engine being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import time

from polyfuse import FusionRequest, fuse
from polyfuse.config import Config
from polyfuse.providers.registry import ProviderHub
from polyfuse.testing.upstream import Behaviour, serve_forever

MEMBER_LATENCY = 0.050  # seconds; member i answers after MEMBER_LATENCY + 0.005 * i
JUDGE_LATENCY = 0.030
OUTLIER_LATENCY = 2.0
JUDGE_TEXT = json.dumps(
    {
        "scores": {"A": {"score": 8, "reason": "fine"}},
        "consensus": [],
        "contradictions": [],
        "agreement": 0.5,
        "choice": "A",
    }
)


def behaviours() -> dict[str, Behaviour]:
    out = {
        f"m{i}": Behaviour(text=f"Answer number {i} with a few words.", latency=MEMBER_LATENCY + 0.005 * i)
        for i in range(8)
    }
    out["judge"] = Behaviour(text=JUDGE_TEXT, latency=JUDGE_LATENCY)
    out["outlier"] = Behaviour(text="late answer", latency=OUTLIER_LATENCY)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


async def run_pool(hub: ProviderHub, n: int, runs: int) -> dict[str, float]:
    pool = ",".join(f"up/m{i}" for i in range(n))
    ideal = MEMBER_LATENCY + 0.005 * (n - 1) + JUDGE_LATENCY
    walls, overheads = [], []
    for i in range(runs + 2):
        request = FusionRequest.from_prompt("Question?", pool, judge="up/judge", mode="best-of")
        result = await fuse(request, hub)
        assert not result.verdict.judge_failed and all(c.ok for c in result.candidates)
        if i >= 2:  # the first runs warm up connections
            walls.append(result.wall_time)
            overheads.append(result.overhead)
    return {
        "pool": n,
        "runs": runs,
        "ideal_ms": ideal * 1000,
        "median_wall_ms": median(walls) * 1000,
        "median_ratio_wall_over_ideal": median(walls) / ideal,
        "median_overhead_ms": median(overheads) * 1000,
        "p90_overhead_ms": sorted(overheads)[int(0.9 * (len(overheads) - 1))] * 1000,
    }


async def run_straggler(hub: ProviderHub, runs: int) -> dict[str, float]:
    pool = "up/m0,up/m1,up/m2,up/outlier"
    walls = []
    for _ in range(runs):
        request = FusionRequest.from_prompt(
            "Question?", pool, judge="up/judge", mode="best-of", min_responses=3, straggler_grace=0.05
        )
        result = await fuse(request, hub)
        assert [c.status for c in result.candidates][-1] == "cut"
        walls.append(result.wall_time)
    return {
        "slowest_member_ms": OUTLIER_LATENCY * 1000,
        "median_wall_ms": median(walls) * 1000,
        "finished_before_slowest": max(walls) < OUTLIER_LATENCY,
    }


async def main_async(port: int, runs: int) -> dict[str, object]:
    cfg = Config.model_validate({"providers": {"up": {"base_url": f"http://127.0.0.1:{port}/v1"}}})
    async with ProviderHub.from_config(cfg, env={}) as hub:
        pools = [await run_pool(hub, n, runs) for n in (2, 4, 8)]
        straggler = await run_straggler(hub, max(3, runs // 5))
    return {"pools": pools, "straggler": straggler}


def main() -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    proc = ctx.Process(target=serve_forever, args=(behaviours(), ports), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=30)
        started = time.perf_counter()
        results = asyncio.run(main_async(port, args.runs))
        results["seconds"] = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.join()
    print("fusion overhead (best-of, judge on; upstream on loopback in its own process)")
    print(
        f"{'pool':>4} {'ideal ms':>9} {'wall ms':>8} {'wall/ideal':>10} {'overhead ms (median)':>21} {'p90':>6}"
    )
    for p in results["pools"]:  # type: ignore[union-attr]
        print(
            f"{p['pool']:>4} {p['ideal_ms']:>9.1f} {p['median_wall_ms']:>8.1f} {p['median_ratio_wall_over_ideal']:>10.3f}"
            f" {p['median_overhead_ms']:>21.2f} {p['p90_overhead_ms']:>6.2f}"
        )
    s = results["straggler"]
    print(
        f"straggler: slowest member {s['slowest_member_ms']:.0f} ms, fusion median {s['median_wall_ms']:.1f} ms, "  # type: ignore[index]
        f"finished before the slowest: {s['finished_before_slowest']}"
    )  # type: ignore[index]
    return results


if __name__ == "__main__":
    main()
