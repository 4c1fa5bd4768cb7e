"""polyfuse: one prompt, a pool of LLMs, a judge, one answer.

import asyncio, polyfuse
config = polyfuse.load_config()
request = config.build_request("Why is the sky blue?", preset="local")
result = asyncio.run(polyfuse.fuse(request))
print(result.answer, result.verdict.choice, result.cost)
"""

from __future__ import annotations

import asyncio

from .config import Config, Preset, load_config
from .errors import (
    AllMembersFailedError,
    BudgetExceededError,
    ConfigError,
    NoSurvivorsError,
    PolyfuseError,
    ProviderError,
    UserError,
)
from .fusion import FusionEvent, FusionRequest, fuse, fuse_events, strategy_names
from .providers import ChatModel, MemberSpec, ProviderHub
from .types import Candidate, Check, Completion, FusionResult, GenerationParams, Message, Usage, Verdict

__version__ = "0.1.0"

__all__ = [
    "AllMembersFailedError",
    "BudgetExceededError",
    "Candidate",
    "Check",
    "ChatModel",
    "Completion",
    "Config",
    "ConfigError",
    "FusionEvent",
    "FusionRequest",
    "FusionResult",
    "GenerationParams",
    "MemberSpec",
    "NoSurvivorsError",
    "Message",
    "PolyfuseError",
    "Preset",
    "ProviderError",
    "ProviderHub",
    "Usage",
    "UserError",
    "Verdict",
    "fuse",
    "fuse_events",
    "fuse_sync",
    "load_config",
    "strategy_names",
]


def fuse_sync(request: FusionRequest, config: Config | None = None) -> FusionResult:
    """Blocking convenience for scripts: run one fusion with a fresh hub."""

    async def main() -> FusionResult:
        async with ProviderHub.from_config(config or Config()) as hub:
            return await fuse(request, hub)

    return asyncio.run(main())
