"""Per-model figures over logged runs: how often a model was called and failed, how fast, how costly, and how
often the judge (or the vote) chose its answer."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from .records import RunRecord

__all__ = ["ModelStats", "model_stats"]

_FAILED = {"failed", "timeout"}


@dataclass
class ModelStats:
    model: str
    role: str  # "member" or "judge"
    runs: int = 0  # distinct runs the model took part in
    calls: int = 0  # model calls (a debate makes several per run)
    failures: int = 0  # failed or timed out
    cut: int = 0  # stopped by the straggler policy or cancelled
    cost: float = 0.0
    cost_known: bool = True
    tokens: int = 0
    chosen: int = 0  # runs where its answer was picked
    choice_runs: int = 0  # runs it took part in where a single answer was picked (best-of, vote)
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    @property
    def chosen_rate(self) -> float | None:
        return self.chosen / self.choice_runs if self.choice_runs else None

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "role": self.role,
            "runs": self.runs,
            "calls": self.calls,
            "failures": self.failures,
            "failure_rate": round(self.failure_rate, 4),
            "cut": self.cut,
            "median_latency": None if self.median_latency is None else round(self.median_latency, 4),
            "cost": round(self.cost, 8),
            "cost_known": self.cost_known,
            "tokens": self.tokens,
            "chosen": self.chosen,
            "choice_runs": self.choice_runs,
            "chosen_rate": None if self.chosen_rate is None else round(self.chosen_rate, 4),
        }


def model_stats(runs: Iterable[RunRecord]) -> list[ModelStats]:
    """Members first, then judges; each group by number of runs, most used first."""
    table: dict[tuple[str, str], ModelStats] = {}
    for run in runs:
        picked = any(c.chosen for c in run.candidates)
        seen: set[tuple[str, str]] = set()
        for c in run.candidates:
            key = (c.role, c.model)
            s = table.setdefault(key, ModelStats(model=c.model, role=c.role))
            s.calls += 1
            s.failures += c.status in _FAILED
            s.cut += c.status in ("cut", "cancelled")
            if c.status == "ok":
                s.latencies.append(c.latency)
            if c.cost is None:
                s.cost_known = False
            else:
                s.cost += c.cost
            s.tokens += c.prompt_tokens + c.completion_tokens
            if key not in seen:
                seen.add(key)
                s.runs += 1
                if picked and c.role == "member":
                    s.choice_runs += 1
                    s.chosen += any(o.chosen and o.model == c.model for o in run.candidates)
    return sorted(table.values(), key=lambda s: (s.role != "member", -s.runs, s.model))
