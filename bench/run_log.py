"""Run log cost: what recording a run adds, single writer against several processes writing at once, on SQLite
and on PostgreSQL; and what opening a log costs (integrity check + migrations) as it grows.

Every record is a real FusionResult of a 3-member best-of run (scripted models), so rows have the usual width.
PostgreSQL is a throwaway cluster started here (Debian's binaries, as the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgcluster import PostgresCluster  # noqa: E402
from polyfuse import FusionRequest, FusionResult, fuse  # noqa: E402
from polyfuse.store import LogSettings, open_log  # noqa: E402
from polyfuse.testing import Reply, ScriptedModel, label_of, scripted_hub  # noqa: E402


def _judge(messages: object) -> str:
    label = label_of(messages, "France")  # type: ignore[arg-type]
    return json.dumps(
        {"scores": {}, "consensus": [], "contradictions": [], "agreement": 0.5, "choice": label}
    )


def one_run() -> tuple[FusionRequest, FusionResult]:
    models = {
        "a": ScriptedModel("a", default="Paris is the capital of France, on the Seine."),
        "b": ScriptedModel("b", default="Paris."),
        "c": ScriptedModel("c", default="Lyon"),
        "judge": ScriptedModel("judge", default=Reply(fn=_judge)),
    }
    request = FusionRequest.from_prompt(
        "What is the capital of France?", "scripted/a,scripted/b,scripted/c", judge="scripted/judge"
    )

    async def go() -> FusionResult:
        async with scripted_hub(models) as hub:
            return await fuse(request, hub)

    return request, asyncio.run(go())


def writer(settings_json: str, count: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    settings = LogSettings.model_validate_json(settings_json)
    request, result = one_run()
    times = []
    with open_log(settings) as log:
        for _ in range(count):
            start = time.perf_counter()
            log.record(request, result, source="bench")
            times.append(time.perf_counter() - start)
    out.put(times)


def measure(settings: LogSettings, procs: int, per_proc: int) -> tuple[float, float, float]:
    """(runs per second over all writers, median ms per record, p90 ms per record)."""
    queue: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    workers = [
        mp.Process(target=writer, args=(settings.model_dump_json(), per_proc, queue)) for _ in range(procs)
    ]
    start = time.perf_counter()
    for w in workers:
        w.start()
    times = [t for _ in workers for t in queue.get()]
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    times.sort()
    return procs * per_proc / wall, 1000 * statistics.median(times), 1000 * times[int(0.9 * (len(times) - 1))]


def open_cost(path: Path, runs: int) -> float:
    request, result = one_run()
    with open_log(LogSettings(path=str(path))) as log:
        have = log.count()
        for _ in range(runs - have):
            log.record(request, result, source="bench")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        with open_log(LogSettings(path=str(path))):
            pass
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="records per writer")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="polyfuse-bench-log-"))
    cluster = PostgresCluster().start()
    try:
        print("| database | writers | runs/s (all writers) | ms per record (median) | p90 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, make in (
            ("SQLite", lambda i: LogSettings(path=str(tmp / f"w{i}.db"))),
            ("PostgreSQL", lambda i: LogSettings(url=cluster.create_database(f"bench{i}"))),
        ):
            for i, procs in enumerate((1, 4)):
                rate, median, p90 = measure(make(i), procs, args.runs)
                print(f"| {name} | {procs} | {rate:.0f} | {median:.2f} | {p90:.2f} |")
        print()
        print("| SQLite log size (runs) | open + quick_check + migrate, ms (median of 5) |")
        print("| ---: | ---: |")
        for size in (1_000, 10_000):
            print(f"| {size} | {open_cost(tmp / 'open.db', size):.1f} |")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
