"""Configuration: presets, provider settings and prices, from TOML, validated, passed in (never global).

Lookup order for the file: an explicit path, ``./polyfuse.toml``, then the user config dir
(``platformdirs.user_config_dir("polyfuse")/polyfuse.toml``). Presets in the file override built-ins by name.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .code.settings import CodeSettings
from .errors import ConfigError
from .fusion.request import FusionRequest
from .gateway.settings import GatewaySettings
from .providers.base import MemberSpec, parse_member, parse_pool
from .server.settings import ServerSettings
from .store.settings import LogSettings
from .types import GenerationParams, Message

__all__ = [
    "Config",
    "Preset",
    "MemberConfig",
    "ProviderSettings",
    "Price",
    "LocalSettings",
    "load_config",
    "BUILTIN_PRESETS",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Strict):
    """Settings for one OpenAI-compatible provider prefix (built-in or new)."""

    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    structured_output: Literal["json_schema", "json_object", "none"] | None = None
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
    count: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None

    def to_specs(self) -> list[MemberSpec]:
        text = self.model if self.count == 1 else f"{self.model}*{self.count}"
        return parse_member(
            text, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, seed=self.seed
        )


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

    def member_specs(self) -> list[MemberSpec]:
        specs: list[MemberSpec] = []
        for m in self.pool:
            specs.extend(m.to_specs() if isinstance(m, MemberConfig) else parse_member(m))
        return parse_pool(specs)


BUILTIN_PRESETS: dict[str, Preset] = {
    "local": Preset(
        description="Both bundled models, offline; SmolLM2 judges.",
        pool=["local/smollm2-135m", "local/gemma3-270m"],
        judge="local/smollm2-135m",
        mode="best-of",
        max_tokens=96,
        judge_max_tokens=256,
    ),
    "quality": Preset(
        description="Frontier models through OpenRouter (OPENROUTER_API_KEY).",
        pool=[
            "openrouter/openai/gpt-5",
            "openrouter/anthropic/claude-sonnet-4.5",
            "openrouter/google/gemini-2.5-pro",
        ],
        judge="openrouter/openai/gpt-5",
        mode="merge",
        straggler_grace=20.0,
        min_responses=2,
    ),
    "budget": Preset(
        description="Cheap fast models through OpenRouter (OPENROUTER_API_KEY).",
        pool=[
            "openrouter/openai/gpt-4o-mini",
            "openrouter/google/gemini-2.5-flash-lite",
            "openrouter/deepseek/deepseek-chat",
        ],
        judge="openrouter/openai/gpt-4o-mini",
        mode="best-of",
        skip_judge_on_consensus=0.9,
        straggler_grace=5.0,
        min_responses=2,
    ),
}


class Config(_Strict):
    default_preset: str = "local"
    presets: dict[str, Preset] = Field(default_factory=dict)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)
    local: LocalSettings = Field(default_factory=LocalSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    code: CodeSettings = Field(default_factory=CodeSettings)
    log: LogSettings = Field(default_factory=LogSettings)  # the run log: [log] path/url, store_text
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)  # keys, limits, metrics, cache
    source: str | None = Field(default=None, exclude=True)  # file it came from, for messages

    def all_presets(self) -> dict[str, Preset]:
        return {**BUILTIN_PRESETS, **self.presets}

    def preset(self, name: str | None = None) -> Preset:
        name = name or self.default_preset
        presets = self.all_presets()
        if name not in presets:
            raise ConfigError(f"unknown preset '{name}'; available: {', '.join(sorted(presets))}")
        return presets[name]

    def build_request(
        self,
        prompt: str | Sequence[Message],
        *,
        preset: str | None = None,
        pool: str | Sequence[str | MemberSpec] | None = None,
        judge: str | None = None,
        mode: str | None = None,
        rounds: int | None = None,
        system: str | None = None,
        **overrides: Any,
    ) -> FusionRequest:
        """Resolve a preset plus explicit overrides into a validated FusionRequest."""
        try:
            return self._build_request(prompt, preset, pool, judge, mode, rounds, system, overrides)
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None

    def _build_request(
        self,
        prompt: str | Sequence[Message],
        preset: str | None,
        pool: str | Sequence[str | MemberSpec] | None,
        judge: str | None,
        mode: str | None,
        rounds: int | None,
        system: str | None,
        overrides: dict[str, Any],
    ) -> FusionRequest:
        p = self.preset(preset)
        messages = [Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
        if system:
            messages.insert(0, Message(role="system", content=system))
        params = GenerationParams(temperature=p.temperature, max_tokens=p.max_tokens).merged(
            **{k: overrides.pop(k, None) for k in ("temperature", "max_tokens", "seed", "top_p", "stop")}
        )
        judge_params = GenerationParams(temperature=0.0, max_tokens=p.judge_max_tokens)
        fields: dict[str, Any] = {
            "member_timeout": p.member_timeout,
            "judge_timeout": p.judge_timeout,
            "min_responses": p.min_responses,
            "straggler_grace": p.straggler_grace,
            "skip_judge_on_consensus": p.skip_judge_on_consensus,
        }
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return FusionRequest(
            messages=messages,
            pool=parse_pool(pool) if pool is not None else p.member_specs(),
            judge=judge if judge is not None else p.judge,
            mode=mode or p.mode,
            rounds=rounds if rounds is not None else p.rounds,
            params=params,
            judge_params=judge_params,
            **fields,
        )


def _config_paths(explicit: str | os.PathLike[str] | None) -> list[Path]:
    if explicit is not None:
        return [Path(explicit)]
    return [Path.cwd() / "polyfuse.toml", Path(platformdirs.user_config_dir("polyfuse")) / "polyfuse.toml"]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or exc.title
    return f"{where}: {err['msg']}"


def load_config(
    path: str | os.PathLike[str] | None = None, *, data: Mapping[str, Any] | None = None
) -> Config:
    """Load and validate a Config. ``data`` (already-parsed TOML) skips the file lookup, for tests/embedding."""
    source = None
    if data is None:
        data = {}
        for candidate in _config_paths(path):
            if candidate.is_file():
                try:
                    data = tomllib.loads(candidate.read_text(encoding="utf-8"))
                except tomllib.TOMLDecodeError as exc:
                    raise ConfigError(f"invalid config {candidate}: {exc}") from None
                source = str(candidate)
                break
            if path is not None:
                raise ConfigError(f"config file {candidate} does not exist")
    try:
        cfg = Config.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"invalid config{' ' + source if source else ''}: {_first_error(exc)}") from None
    cfg.source = source
    if cfg.default_preset not in cfg.all_presets():
        raise ConfigError(f"default_preset '{cfg.default_preset}' is not a preset")
    return cfg
