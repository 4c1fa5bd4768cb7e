"""Server settings: the ``[server]`` table of polyfuse.toml (kept apart from the app so config can import it)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

CONFIG_ENV = "POLYFUSE_SERVER_CONFIG"  # config path handed to worker processes by `polyfuse serve`
NO_LOG_ENV = "POLYFUSE_SERVER_NO_LOG"  # set by `polyfuse serve --no-log`

__all__ = ["ServerSettings", "DEPTH_HEADER"]

# How many polyfuse servers a request has already passed through; each hop sends its own depth + 1 upstream.
DEPTH_HEADER = "x-polyfuse-depth"


class ServerSettings(BaseModel):
    """``api_keys`` (or a comma-separated ``api_keys_env`` variable) turn on Bearer auth for /v1 routes."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=list, repr=False)
    api_keys_env: str | None = "POLYFUSE_SERVER_KEYS"
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_pool_members: int = Field(default=8, ge=1)
    max_rounds: int = Field(default=4, ge=1)
    max_depth: int = Field(default=2, ge=0)  # a request that passed through polyfuse more often is refused
    models: list[str] = Field(default_factory=list)  # extra single-model ids to list in GET /v1/models
    # model ids or polyfuse/<preset>: their in-process (local) models are loaded at startup, in the background
    preload: list[str] = Field(default_factory=list)

    def keys(self, env: Mapping[str, str] | None = None) -> frozenset[str]:
        """Every accepted server key: the configured ones and those in the environment variable."""
        env = os.environ if env is None else env
        extra = env.get(self.api_keys_env, "") if self.api_keys_env else ""
        return frozenset(k.strip() for k in [*self.api_keys, *extra.split(",")] if k.strip())
