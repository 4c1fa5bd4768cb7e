"""Presets resolved to what a run needs, without a prompt: the pool's member specs, the judge, the mode, the
sampling parameters and the limits. ``Config.build_request`` adds the messages; a server can check the
resolved pool and judge against its policy before any prompt is looked at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .providers.base import MemberSpec, parse_member, parse_pool
from .settings import MemberConfig, Preset
from .types import GenerationParams

__all__ = ["ResolvedPreset", "member_specs", "resolve_preset", "SAMPLING_KEYS"]

SAMPLING_KEYS = ("temperature", "max_tokens", "seed", "top_p", "stop")


@dataclass
class ResolvedPreset:
    """Everything of a fusion run but its messages. ``limits`` holds the FusionRequest's remaining fields
    (``member_timeout``, ``judge_timeout``, ``min_responses``, ``straggler_grace``, ...)."""

    pool: list[MemberSpec]
    judge: str | None
    mode: str
    rounds: int
    params: GenerationParams
    judge_params: GenerationParams
    limits: dict[str, Any] = field(default_factory=dict)

    def model_ids(self) -> list[str]:
        """Every model id this run would resolve: the members', then the judge's."""
        return [*(s.model for s in self.pool), *([self.judge] if self.judge else [])]


def _member_config_specs(m: MemberConfig, max_count: int) -> list[MemberSpec]:
    text = m.model if m.count == 1 else f"{m.model}*{m.count}"
    return parse_member(
        text,
        max_count=max_count,
        temperature=m.temperature,
        top_p=m.top_p,
        max_tokens=m.max_tokens,
        seed=m.seed,
    )


def member_specs(preset: Preset, max_members: int | None = None) -> list[MemberSpec]:
    """The preset's pool as member specs with unique ids."""
    specs: list[MemberSpec] = []
    for m in preset.pool:
        if isinstance(m, MemberConfig):
            specs.extend(_member_config_specs(m, m.count))
        else:
            specs.extend(parse_member(m))
    return parse_pool(specs, max_members=max_members)


def resolve_preset(
    preset: Preset,
    *,
    pool: str | Sequence[str | MemberSpec] | None = None,
    judge: str | None = None,
    mode: str | None = None,
    rounds: int | None = None,
    max_members: int | None = None,
    **overrides: Any,
) -> ResolvedPreset:
    """A preset plus explicit overrides. Sampling keys (``temperature``, ``max_tokens``, ``seed``, ``top_p``,
    ``stop``) go to the members' parameters; every other non-None override to ``limits``. A pool larger than
    ``max_members`` is refused before it is expanded."""
    sampling = {k: overrides.pop(k, None) for k in SAMPLING_KEYS}
    params = GenerationParams(temperature=preset.temperature, max_tokens=preset.max_tokens).merged(**sampling)
    limits: dict[str, Any] = {
        "member_timeout": preset.member_timeout,
        "judge_timeout": preset.judge_timeout,
        "min_responses": preset.min_responses,
        "straggler_grace": preset.straggler_grace,
        "skip_judge_on_consensus": preset.skip_judge_on_consensus,
    }
    limits.update({k: v for k, v in overrides.items() if v is not None})
    return ResolvedPreset(
        pool=(
            parse_pool(pool, max_members=max_members)
            if pool is not None
            else member_specs(preset, max_members)
        ),
        judge=judge if judge is not None else preset.judge,
        mode=mode or preset.mode,
        rounds=rounds if rounds is not None else preset.rounds,
        params=params,
        judge_params=GenerationParams(temperature=0.0, max_tokens=preset.judge_max_tokens),
        limits=limits,
    )
