"""Loading ``[server] preload`` models at startup, in the background, so that the first request after the
server starts does not pay for loading a local model. Requests that come earlier wait for the load (the local
runtime loads each model once, under a lock); a model that cannot load is logged and the server goes on."""

from __future__ import annotations

import logging

from ..code.complete import load_models
from ..config import Config
from ..errors import PolyfuseError
from ..presets import member_specs
from ..providers.registry import ProviderHub
from .translate import preset_name

__all__ = ["preload"]

log = logging.getLogger("polyfuse.server")


def _ids(config: Config) -> list[str]:
    ids: list[str] = []
    for item in config.server.preload:
        preset = preset_name(item, config)
        if preset is None:
            ids.append(item)
            continue
        p = config.preset(preset)
        ids += [s.model for s in member_specs(p)] + ([p.judge] if p.judge else [])
    return ids


async def preload(config: Config, hub: ProviderHub) -> None:
    try:
        loaded = await load_models(hub, _ids(config))
    except PolyfuseError as exc:
        log.warning("could not preload the models in [server] preload: %s", exc)
        return
    if loaded:
        log.info("preloaded %s", ", ".join(loaded))
