"""Model settings as plain data: providers, prices, local models, pool members and presets.

A leaf: it imports nothing else of polyfuse, so the provider layer (``ProviderHub``) and the preset resolution
can be built from these without the whole ``Config`` (which composes them with the server, code and log tables).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ProviderSettings",
    "Price",
    "LocalSettings",
    "MemberConfig",
    "Preset",
    "MAX_MEMBER_COUNT",
    "DEFAULT_MAX_RESPONSE_BYTES",
]

MAX_MEMBER_COUNT = 256  # copies of one pool member (``model*N``): checked before anything is expanded
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20  # one upstream response (or whole stream); a member over it fails


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Strict):
    """Settings for one OpenAI-compatible provider prefix (built-in or new)."""

    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=300.0, gt=0)  # the longest silence while a response is read
    max_retries: int = Field(default=2, ge=0, le=10)
    # one call, every attempt and every wait included; None: only read_timeout bounds a stalled attempt
    total_timeout: float | None = Field(default=None, gt=0)
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024)
    structured_output: Literal["json_schema", "json_object_schema", "json_object", "none"] | None = None
    # serves /completions with raw prompts (fill-in-the-middle); default: yes for self-hosted servers
    text_completion: bool | None = None


class Price(_Strict):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class LocalSettings(_Strict):
    n_threads: int | None = Field(default=None, ge=1)
    n_ctx: int = Field(default=4096, ge=256)
    models: dict[str, str] = Field(default_factory=dict)  # extra aliases: local/<alias> -> gguf path


class MemberConfig(_Strict):
    model: str
    count: int = Field(default=1, ge=1, le=MAX_MEMBER_COUNT)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None


class Preset(_Strict):
    description: str = ""
    pool: list[str | MemberConfig]
    judge: str | None = None
    mode: str = "best-of"
    rounds: int = Field(default=2, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    judge_max_tokens: int = Field(default=512, ge=16)
    member_timeout: float | None = Field(default=120.0, gt=0)
    judge_timeout: float | None = Field(default=180.0, gt=0)
    min_responses: int | None = Field(default=None, ge=1)
    straggler_grace: float | None = Field(default=None, ge=0)
    skip_judge_on_consensus: float | None = Field(default=None, ge=0, le=1)
