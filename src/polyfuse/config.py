"""Configuration: presets, provider settings and prices, from TOML, validated, passed in (never global).

Lookup order for the file: an explicit path, ``./polyfuse.toml``, then the user config dir
(``platformdirs.user_config_dir("polyfuse")/polyfuse.toml``). Presets in the file override built-ins by name.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .code.settings import CodeSettings
from .errors import ConfigError
from .fusion.request import FusionRequest
from .fusion.scoring import method_names
from .gateway.settings import GatewaySettings
from .presets import ResolvedPreset, resolve_preset
from .providers.base import MemberSpec
from .server.settings import ServerSettings
from .settings import LocalSettings, MemberConfig, Preset, Price, ProviderSettings
from .store.settings import LogSettings
from .types import Message

__all__ = [
    "Config",
    "config_paths",
    "check_workspace_config",
    "Preset",
    "MemberConfig",
    "ProviderSettings",
    "Price",
    "LocalSettings",
    "load_config",
    "request_for",
    "BUILTIN_PRESETS",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    @model_validator(mode="after")
    def _known_judge_methods(self) -> Config:
        for name, p in self.presets.items():
            if p.judge_method is not None and p.judge_method not in method_names():
                raise ValueError(
                    f"presets.{name}.judge_method: unknown judge method '{p.judge_method}'; "
                    f"valid: {', '.join(method_names())}"
                )
        return self

    def all_presets(self) -> dict[str, Preset]:
        return {**BUILTIN_PRESETS, **self.presets}

    def preset(self, name: str | None = None) -> Preset:
        name = name or self.default_preset
        presets = self.all_presets()
        if name not in presets:
            raise ConfigError(f"unknown preset '{name}'; available: {', '.join(sorted(presets))}")
        return presets[name]

    def resolve(
        self,
        *,
        preset: str | None = None,
        pool: str | Sequence[str | MemberSpec] | None = None,
        judge: str | None = None,
        mode: str | None = None,
        rounds: int | None = None,
        max_members: int | None = None,
        **overrides: Any,
    ) -> ResolvedPreset:
        """A preset plus explicit overrides, resolved to pool, judge, parameters and limits (no prompt)."""
        try:
            return resolve_preset(
                self.preset(preset),
                pool=pool,
                judge=judge,
                mode=mode,
                rounds=rounds,
                max_members=max_members,
                **overrides,
            )
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None

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
        resolved = self.resolve(preset=preset, pool=pool, judge=judge, mode=mode, rounds=rounds, **overrides)
        return request_for(resolved, prompt, system=system)


def request_for(
    resolved: ResolvedPreset, prompt: str | Sequence[Message], *, system: str | None = None
) -> FusionRequest:
    """The FusionRequest of a resolved preset for one prompt (or conversation)."""
    messages = [Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
    if system:
        messages.insert(0, Message(role="system", content=system))
    try:
        return FusionRequest(
            messages=messages,
            pool=resolved.pool,
            judge=resolved.judge,
            mode=resolved.mode,
            rounds=resolved.rounds,
            params=resolved.params,
            judge_params=resolved.judge_params,
            **resolved.limits,
        )
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None


def config_paths(explicit: str | os.PathLike[str] | None) -> list[Path]:
    """Where a config is looked for, first found wins: the explicit file, else ./polyfuse.toml, then the user's."""
    if explicit is not None:
        return [Path(explicit)]
    return [Path.cwd() / "polyfuse.toml", Path(platformdirs.user_config_dir("polyfuse")) / "polyfuse.toml"]


def check_workspace_config(config: Config, path: str, command: str) -> None:
    """A repository's own polyfuse.toml, read because a tool was started in it (an editor's language server, an
    agent's MCP server), may not set what would take the user's secrets or safety elsewhere: provider settings
    (a base URL of its own, any environment variable as the key), a run-log server, a weak sandbox. Raises
    ``ConfigError``; ``COMMAND --config FILE`` trusts a file explicitly."""
    found = [
        what
        for what, present in (
            ("[providers] (your provider keys would go to hosts it names)", bool(config.providers)),
            ("[log] url (your prompts would be stored on its server)", config.log.url is not None),
            ("[code] allow_weak_sandbox (candidate code would run without an adequate sandbox)",
             config.code.allow_weak_sandbox),
        )
        if present
    ]  # fmt: skip
    if found:
        raise ConfigError(
            f"the workspace's {path} sets {found[0]}; a repository may not: keep these in your user config, or "
            f"trust this file with `{command} --config FILE`"
        )


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
        for candidate in config_paths(path):
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
