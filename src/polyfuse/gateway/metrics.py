"""Prometheus metrics of one server (``GET /metrics``), with ``prometheus-client``.

With several workers, ``polyfuse serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the
workers start: each worker then writes its counters to memory-mapped files there, and whichever worker
answers ``/metrics`` sums every worker's files (``MultiProcessCollector``). Without it (one process, tests)
the values live in this object's own registry. Nothing is registered in prometheus-client's global registry.

Label values are bounded: models and presets are labelled only once the server resolved them (an unknown or
refused id is counted as ``-``), keys and teams only after authentication.
"""

from __future__ import annotations

import os
from typing import Any

from ..types import FusionResult, Usage

__all__ = ["Metrics", "MULTIPROC_ENV", "CONTENT_TYPE", "sum_samples"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """Every metric the server exports, and the calls that update them."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            from ..errors import ConfigError

            raise ConfigError(
                "[gateway] metrics needs the gateway extra: pip install 'polyfuse[gateway]'"
            ) from None
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "polyfuse_requests",
            "HTTP requests by route, status, model, preset and mode",
            ["route", "status", "model", "preset", "mode"],
            registry=r,
        )
        self.duration = Histogram(
            "polyfuse_request_duration_seconds",
            "Time to the whole response (a stream: to its end), by route and mode",
            ["route", "mode"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.member_duration = Histogram(
            "polyfuse_member_duration_seconds",
            "Latency of each pool member's call in a fusion",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.judge_duration = Histogram(
            "polyfuse_judge_duration_seconds",
            "Latency of each judge call",
            ["model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "polyfuse_tokens",
            "Tokens by key, team, model and type",
            ["key", "team", "model", "type"],
            registry=r,
        )
        self.cost = Counter(
            "polyfuse_cost_usd", "USD spent by key, team and model", ["key", "team", "model"], registry=r
        )
        self.member_failures = Counter(
            "polyfuse_member_failures",
            "Pool members that failed, by model and reason",
            ["model", "reason"],
            registry=r,
        )
        self.judge_fallbacks = Counter(
            "polyfuse_judge_fallbacks",
            "Fusions whose judge failed and fell back to a vote",
            ["mode"],
            registry=r,
        )
        self.refusals = Counter(
            "polyfuse_refusals",
            "Requests refused by the gateway: rate (429), budget (402), unavailable (503), not_allowed (403)",
            ["reason", "scope"],
            registry=r,
        )
        self.cache = Counter(
            "polyfuse_cache", "Response cache lookups: hit, miss, bypass, stored", ["result"], registry=r
        )
        self.store_errors = Counter(
            "polyfuse_shared_store_errors",
            "Calls to Redis that failed (the fail-open/closed policy applied)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "polyfuse_write_queue_depth",
            "Records waiting to be written to the database, by queue",
            ["queue"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.queue_dropped = Counter(
            "polyfuse_write_queue_dropped",
            "Records dropped because a write queue was full",
            ["queue"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._dropped_seen: dict[str, int] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)``, memoised: the hot path then costs one dict lookup per update."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- updates ------------------------------------------------------------------------------------------------
    def request(self, route: str, status: int, model: str, preset: str, mode: str, seconds: float) -> None:
        self._child(self.requests, route, str(status), model, preset, mode).inc()
        self._child(self.duration, route, mode).observe(seconds)

    def spend(self, key: str, team: str, model: str, usage: Usage, cost: float | None) -> None:
        if usage.prompt_tokens:
            self._child(self.tokens, key, team, model, "prompt").inc(usage.prompt_tokens)
        if usage.completion_tokens:
            self._child(self.tokens, key, team, model, "completion").inc(usage.completion_tokens)
        if cost:
            self._child(self.cost, key, team, model).inc(cost)

    def fusion(self, result: FusionResult, key: str, team: str) -> None:
        """Per-member and judge latencies, tokens and cost per model, failures, a judge fallback. Every model
        call once: each debate round's (the final candidates alone would miss the earlier rounds, and count
        twice a first answer that debate offers the judge again as ``<member>@round0``)."""
        for c in (c for rnd in (result.rounds or [result.candidates]) for c in rnd):
            if c.ok:
                self._child(self.member_duration, c.model).observe(c.latency)
            elif c.status in ("failed", "timeout", "rejected"):
                self._child(self.member_failures, c.model, c.status).inc()
            self.spend(key, team, c.model, c.usage, c.cost)
        for call in result.judge_calls:
            self._child(self.judge_duration, call.model).observe(call.latency)
            self.spend(key, team, call.model, call.usage, call.cost)
        if result.judge_failed:
            self._child(self.judge_fallbacks, result.mode).inc()

    def refused(self, reason: str, scope: str) -> None:
        self._child(self.refusals, reason, scope).inc()

    def cache_event(self, result: str) -> None:
        self._child(self.cache, result).inc()

    def queue(self, name: str, depth: int, dropped_total: int) -> None:
        """A write queue's depth now and its drops since the worker started (counted from the last sample)."""
        self._child(self.queue_depth, name).set(depth)
        new = dropped_total - self._dropped_seen.get(name, 0)
        if new > 0:
            self._child(self.queue_dropped, name).inc(new)
            self._dropped_seen[name] = dropped_total

    # -- exposition ---------------------------------------------------------------------------------------------
    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))

    def close(self) -> None:
        """At worker exit: its live gauges stop counting (counters stay, as Prometheus expects)."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def sum_samples(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels`` (for tests and the bench)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
