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
    """``api_keys`` (or a comma-separated ``api_keys_env`` variable) turn on Bearer auth for /v1 routes.

    Model policy: clients may name the presets, their members and judges, ``models``, and any model of a
    configured provider prefix; a raw ``http(s)://base#model`` id only when ``base`` is in
    ``allow_model_urls``, a ``local:/path`` id only inside one of ``local_model_dirs``. Limits bound every
    size and time a client controls: headers, bodies, idle and slow connections, pass-through calls.
    """

    model_config = ConfigDict(extra="forbid")

    api_keys: list[str] = Field(default_factory=list, repr=False)
    api_keys_env: str | None = "POLYFUSE_SERVER_KEYS"
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_pool_members: int = Field(default=8, ge=1, le=256)
    max_rounds: int = Field(default=4, ge=1)
    max_depth: int = Field(default=2, ge=0)  # a request that passed through polyfuse more often is refused
    models: list[str] = Field(
        default_factory=list
    )  # extra single-model ids clients may use (and /v1/models lists)
    allow_model_urls: list[str] = Field(
        default_factory=list
    )  # base URLs raw http(s)://base#model ids may use
    local_model_dirs: list[str] = Field(default_factory=list)  # directories local:/path ids may point into
    passthrough_timeout: float = Field(default=45.0, gt=0)  # one pass-through: every attempt and fallback
    header_timeout: float = Field(
        default=10.0, gt=0
    )  # from connecting (or the request's first byte) to its headers
    body_timeout: float = Field(default=30.0, gt=0)  # from the headers to the whole body
    keepalive_timeout: float = Field(default=5.0, gt=0)  # an idle keep-alive connection is closed after this
    max_header_bytes: int = Field(default=32768, ge=1024)  # request line plus headers
    max_headers: int = Field(default=100, ge=8)
    max_connections: int = Field(default=512, ge=1)  # beyond: a 503 and the connection closed at once

    def keys(self, env: Mapping[str, str] | None = None) -> frozenset[str]:
        """Every accepted server key: the configured ones and those in the environment variable."""
        env = os.environ if env is None else env
        extra = env.get(self.api_keys_env, "") if self.api_keys_env else ""
        return frozenset(k.strip() for k in [*self.api_keys, *extra.split(",")] if k.strip())
