"""The figures of an evaluation, per arm: accuracy with a Wilson interval, the oracle, judge accuracy, losses
against the pool's best member, paired wins and losses against the best single model, tokens, cost, latency.

Definitions (n = items the arm ran on):
- accuracy: right answers / n, with a 95% Wilson score interval.
- oracle (fusion arms): share of items where at least one candidate the judge (or vote) saw was right.
- judge accuracy: among those oracle items, the share where the fused answer was right.
- lost: items where some candidate was right but the fused answer was not (fusion below its best member).
- vs best single: on the same items, how often this arm was right where the best single model was wrong
  (wins) and the reverse (losses), with an exact two-sided sign test on those discordant pairs.
- cost per correct answer: total cost / right answers (tokens per correct answer likewise).
- position bias (best-of with a judge): among items where the judge chose between different answers, the
  share where presenting the candidates in the reverse order changed its choice.
- Brier score (probability methods): mean squared gap between the verdict's confidence and whether the
  answer was right (0 is perfect; always saying 0.5 scores 0.25).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .results import ArmResult

__all__ = ["ArmMetrics", "Paired", "arm_metrics", "wilson", "percentile", "sign_test", "best_single"]

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; (0, 1) when there is no data."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value that wins and losses are equally likely (1.0 with no discordance)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / float(2**n)
    return min(1.0, 2 * tail)


@dataclass
class Paired:
    against: str
    items: int
    wins: int
    losses: int
    p_value: float


@dataclass
class ArmMetrics:
    arm: str
    kind: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    errors: int
    tokens_total: int
    tokens_mean: float
    cost_total: float
    cost_known: bool
    latency_median: float | None
    latency_p90: float | None
    cost_per_correct: float | None
    tokens_per_correct: float | None
    oracle: float | None = None
    oracle_items: int | None = None
    judge_accuracy: float | None = None
    lost: int | None = None
    judge_failures: int = 0
    vs_best_single: Paired | None = None
    judge: str | None = None
    judge_method: str | None = None  # the method configured
    method: str | None = None  # the method the verdicts used (most often), e.g. json after a fallback
    judge_tokens_mean: float | None = None
    position_bias: float | None = None
    position_probed: int = 0
    brier: float | None = None
    writer_rejected: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one(arm: str, rows: list[ArmResult]) -> ArmMetrics:
    n = len(rows)
    correct = sum(r.correct for r in rows)
    lo, hi = wilson(correct, n)
    tokens = sum(r.tokens for r in rows)
    cost = sum(r.cost for r in rows)
    latencies = [r.latency for r in rows if r.error is None]
    m = ArmMetrics(
        arm=arm,
        kind=rows[0].kind,
        n=n,
        correct=correct,
        accuracy=correct / n if n else 0.0,
        ci_low=lo,
        ci_high=hi,
        errors=sum(r.error is not None for r in rows),
        tokens_total=tokens,
        tokens_mean=tokens / n if n else 0.0,
        cost_total=cost,
        cost_known=all(r.cost_known for r in rows),
        latency_median=statistics.median(latencies) if latencies else None,
        latency_p90=percentile(latencies, 0.9),
        cost_per_correct=cost / correct if correct else None,
        tokens_per_correct=tokens / correct if correct else None,
    )
    if m.kind != "single":
        oracle_rows = [r for r in rows if r.oracle]
        m.oracle_items = len(oracle_rows)
        m.oracle = len(oracle_rows) / n if n else 0.0
        m.judge_accuracy = sum(r.correct for r in oracle_rows) / len(oracle_rows) if oracle_rows else None
        m.lost = sum(not r.correct for r in oracle_rows)
        m.judge_failures = sum(r.judge_failed for r in rows)
        _judge_figures(m, rows)
    return m


def _judge_figures(m: ArmMetrics, rows: list[ArmResult]) -> None:
    m.judge = next((r.judge for r in rows if r.judge), None)
    m.judge_method = next((r.judge_method for r in rows if r.judge_method), None)
    methods = [r.method for r in rows if r.method and r.method != "vote"]
    if methods:
        m.method = max(set(methods), key=methods.count)
    if m.judge is not None:
        m.judge_tokens_mean = sum(r.judge_tokens for r in rows) / len(rows) if rows else 0.0
    probed = [r.position_flip for r in rows if r.position_flip is not None]
    m.position_probed = len(probed)
    m.position_bias = sum(probed) / len(probed) if probed else None
    rated = [(r.confidence, r.correct) for r in rows if r.confidence is not None]
    m.brier = sum((c - float(ok)) ** 2 for c, ok in rated) / len(rated) if rated else None
    m.writer_rejected = sum(r.writer_rejected for r in rows)


def best_single(metrics: Iterable[ArmMetrics]) -> ArmMetrics | None:
    """The most accurate single model; ties go to the one using fewer tokens, then to pool order."""
    singles = [m for m in metrics if m.kind == "single"]
    return min(singles, key=lambda m: (-m.accuracy, m.tokens_mean)) if singles else None


def arm_metrics(results: Iterable[ArmResult], order: Sequence[str] | None = None) -> list[ArmMetrics]:
    """Metrics for every arm present, in ``order`` (then any others in first-seen order)."""
    by_arm: dict[str, list[ArmResult]] = {}
    for r in results:
        by_arm.setdefault(r.arm, []).append(r)
    arms = [a for a in (order or []) if a in by_arm] + [a for a in by_arm if a not in (order or [])]
    metrics = [_one(a, by_arm[a]) for a in arms]
    best = best_single(metrics)
    if best is not None:
        right = {r.item: r.correct for r in by_arm[best.arm]}
        for m in metrics:
            if m.arm == best.arm:
                continue
            pairs = [(r.correct, right[r.item]) for r in by_arm[m.arm] if r.item in right]
            wins = sum(a and not b for a, b in pairs)
            losses = sum(b and not a for a, b in pairs)
            m.vs_best_single = Paired(best.arm, len(pairs), wins, losses, sign_test(wins, losses))
    return metrics
