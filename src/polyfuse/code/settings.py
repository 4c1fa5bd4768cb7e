"""``[code]`` settings in polyfuse.toml (and the language server's initialization options)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CodeSettings", "SEVERITIES"]

SEVERITIES = ("low", "medium", "high", "critical")


class CodeSettings(BaseModel):
    """How the code assistant fuses: which pool (a preset, or an explicit pool and judge), how much context,
    what leaves the machine, and its limits."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None  # default: the config's default preset
    pool: list[str] | None = None
    judge: str | None = None
    context_tokens: int = Field(default=1500, ge=0)
    redact: Literal["remote", "always", "never"] = "remote"  # remote: when any model is not in-process
    complete_max_tokens: int = Field(default=64, ge=1)
    max_tokens: int = Field(default=512, ge=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    latency_budget: float = Field(default=2.0, ge=0)  # complete's fast path: first good candidate within this
    sandbox_timeout: float = Field(default=20.0, gt=0)
    # Run candidates under the Landlock fallback where bwrap cannot run (see the README's sandbox section).
    allow_weak_sandbox: bool = False
    fim_templates: dict[str, str] = Field(default_factory=dict)  # model id -> template name
    styleguide: str = ".polyfuse/styleguide.md"
    min_severity: Literal["low", "medium", "high", "critical"] = "low"

    def merged(self, **overrides: object) -> CodeSettings:
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return CodeSettings.model_validate(data)
