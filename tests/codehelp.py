"""Helpers for the code assistant tests: a CodeEnv over scripted models."""

from __future__ import annotations

from polyfuse.code.task import CodeEnv
from polyfuse.config import load_config
from polyfuse.testing import ScriptedModel, scripted_hub


def make_env(models: dict[str, ScriptedModel], pool: list[str], judge: str = "judge", **settings):
    config = load_config(
        data={"code": {"pool": [f"scripted/{m}" for m in pool], "judge": f"scripted/{judge}", **settings}}
    )
    hub = scripted_hub(models, config)
    return CodeEnv.create(config, hub)
