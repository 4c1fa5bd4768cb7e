"""The server's model policy: clients are not the operator, so only what the config names may be resolved."""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Config
from ..presets import member_specs
from ..providers.policy import ModelPolicy
from ..providers.registry import ProviderHub

__all__ = ["server_policy"]


def server_policy(config: Config, env: Mapping[str, str] | None = None) -> ModelPolicy:
    """Every preset's members and judge and ``[server] models`` exactly; ``<prefix>/<name>`` for the local
    models and the configured providers (a ``[providers.X]`` table, or a built-in prefix whose key is set);
    raw URLs and ``local:`` paths only as ``[server] allow_model_urls`` and ``local_model_dirs`` allow."""
    models: set[str] = set(config.server.models)
    for preset in config.all_presets().values():
        models.update(s.model for s in member_specs(preset))
        if preset.judge:
            models.add(preset.judge)
    prefixes = ProviderHub.from_config(config, env=env).configured_prefixes()  # reads keys, opens nothing
    return ModelPolicy.restrictive(
        models=models,
        prefixes={"local", *prefixes},
        urls=config.server.allow_model_urls,
        local_dirs=config.server.local_model_dirs,
    )
