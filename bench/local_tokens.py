"""Local provider throughput: tokens per second through polyfuse versus llama-cpp-python called directly.

Both sides load the same GGUF with the same threads and context, render the same prompt tokens, decode greedily
with the same sampling settings and the same max_tokens, and stream. Runs alternate (direct, polyfuse, direct,
...) so machine noise hits both alike; the report is the median of each and their ratio. A third side streams
through polyfuse asking for token log-probabilities (what fusion members do, for their confidence): its
ratio is the cost of reading the logits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from llama_cpp import Llama

from polyfuse.config import LocalSettings
from polyfuse.providers.local import BASE_STOPS, REPEAT_PENALTY, LocalRuntime, bundled_path
from polyfuse.types import GenerationParams, Message

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def direct_run(llm: Llama, tokens: list[int], max_tokens: int, stop: list[str]) -> tuple[int, float]:
    start = time.perf_counter()
    n = 0
    for chunk in llm.create_completion(
        prompt=tokens,
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=0.95,
        repeat_penalty=REPEAT_PENALTY,
        stop=stop,
        stream=True,
    ):
        if chunk["choices"][0]["text"]:
            n += 1
    return n, time.perf_counter() - start


async def polyfuse_run(
    runtime: LocalRuntime, name: str, max_tokens: int, logprobs: bool = False
) -> tuple[int, float]:
    model = runtime.model(name)
    start = time.perf_counter()
    n = 0
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens, logprobs=logprobs or None)
    async for event in model.stream([Message(role="user", content=PROMPT)], params):
        if hasattr(event, "text") and not hasattr(event, "usage"):
            n += 1
    return n, time.perf_counter() - start


def bench_model(name: str, runs: int, max_tokens: int) -> dict[str, float | str]:
    threads = os.cpu_count() or 1
    runtime = LocalRuntime(LocalSettings(n_threads=threads, n_ctx=2048))
    engine = runtime.engine(bundled_path(name))
    tokens = (
        engine.chat_tokens([Message(role="user", content=PROMPT)])[0]
        if engine.template
        else engine.base_tokens([Message(role="user", content=PROMPT)])
    )
    stop = [] if engine.template else list(BASE_STOPS)  # the same stops polyfuse uses for base models
    direct = Llama(model_path=str(bundled_path(name)), n_ctx=2048, n_threads=threads, verbose=False)
    direct_tps, pf_tps, lp_tps = [], [], []
    asyncio.run(polyfuse_run(runtime, name, 8))  # warm-up both
    direct_run(direct, tokens, 8, stop)
    for _ in range(runs):
        n, t = direct_run(direct, tokens, max_tokens, stop)
        direct_tps.append(n / t)
        n, t = asyncio.run(polyfuse_run(runtime, name, max_tokens))
        pf_tps.append(n / t)
        n, t = asyncio.run(polyfuse_run(runtime, name, max_tokens, logprobs=True))
        lp_tps.append(n / t)
    runtime.close()
    d, p, lp = statistics.median(direct_tps), statistics.median(pf_tps), statistics.median(lp_tps)
    return {
        "model": name,
        "direct_tokens_per_s": d,
        "polyfuse_tokens_per_s": p,
        "ratio": p / d,
        "logprobs_tokens_per_s": lp,
        "logprobs_ratio": lp / d,
    }


def main() -> list[dict[str, float | str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    results = [bench_model(name, args.runs, args.max_tokens) for name in ("smollm2-135m", "gemma3-270m")]
    print(f"local tokens/s, median of {args.runs} alternating runs, {args.max_tokens} tokens, greedy")
    print(f"{'model':<14} {'direct':>8} {'polyfuse':>9} {'ratio':>6} {'+logprobs':>10} {'ratio':>6}")
    for r in results:
        print(
            f"{r['model']:<14} {r['direct_tokens_per_s']:>8.1f} {r['polyfuse_tokens_per_s']:>9.1f} "
            f"{r['ratio']:>6.3f} {r['logprobs_tokens_per_s']:>10.1f} {r['logprobs_ratio']:>6.3f}"
        )
    return results


if __name__ == "__main__":
    main()
