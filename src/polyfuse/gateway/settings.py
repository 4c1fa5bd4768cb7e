"""The ``[gateway]`` table of polyfuse.toml: keys, teams, limits, Redis, metrics, the response cache.

Plain data that imports nothing else of polyfuse (``polyfuse.config`` imports it). Everything is off by
default: a server without ``[gateway]`` behaves as before and pays nothing for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GatewaySettings", "TeamSettings", "CacheSettings", "Period", "PERIODS", "TEAM_NAME"]

Period = Literal["day", "week", "month", "total"]
PERIODS: tuple[str, ...] = ("day", "week", "month", "total")
TEAM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamSettings(_Strict):
    """Limits shared by every key of one team (``[gateway.teams.<name>]``)."""

    budget: float | None = Field(default=None, ge=0, description="USD per period")
    period: Period = "month"
    rpm: int | None = Field(default=None, ge=1, description="requests per minute, all keys together")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute, all keys together")


class CacheSettings(_Strict):
    """The exact-match response cache (needs Redis): deterministic requests only."""

    enabled: bool = False
    ttl: int = Field(default=3600, ge=1, description="seconds an answer stays cached")
    max_entries: int = Field(default=10_000, ge=1, description="oldest entries are evicted above this")
    max_entry_bytes: int = Field(default=262_144, ge=1024, description="larger responses are not cached")


class GatewaySettings(_Strict):
    """``keys``: /v1 routes take keys made by ``polyfuse keys create`` (stored hashed in the run-log database)
    besides the operator keys of ``[server] api_keys``. ``redis_url`` shares limits, budgets and the cache
    across workers and instances; without it limits hold per worker process and budgets are reserved in the
    database. ``metrics``: ``GET /metrics`` for Prometheus."""

    keys: bool = False
    metrics: bool = False
    metrics_token: str | None = Field(default=None, repr=False)
    metrics_token_env: str | None = "POLYFUSE_METRICS_TOKEN"
    redis_url: str | None = Field(default=None, repr=False)  # may carry a password
    redis_url_env: str | None = "POLYFUSE_REDIS_URL"
    redis_timeout: float = Field(default=0.25, gt=0, le=10, description="seconds per Redis call")
    budgets_when_redis_down: Literal["closed", "open"] = "closed"
    limits_when_redis_down: Literal["closed", "open"] = "open"
    key_refresh: float = Field(default=0.5, gt=0, le=60, description="seconds between checks for key changes")
    hold_ttl: float = Field(default=900.0, ge=10, description="a budget hold of a request that never ends")
    usage_queue: int = Field(default=10_000, ge=10, description="usage records waiting to be written")
    teams: dict[str, TeamSettings] = Field(default_factory=dict)
    cache: CacheSettings = Field(default_factory=CacheSettings)

    def redis(self, env: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        if self.redis_url:
            return self.redis_url
        return (env.get(self.redis_url_env) or None) if self.redis_url_env else None

    def metrics_secret(self, env: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        if self.metrics_token:
            return self.metrics_token
        return (env.get(self.metrics_token_env) or None) if self.metrics_token_env else None

    @property
    def enabled(self) -> bool:
        return self.keys or self.metrics or self.cache.enabled
