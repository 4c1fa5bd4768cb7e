"""The OpenAI-compatible fusion server and its web panel (``polyfuse serve``; needs the ``server`` extra).

Imports lazily: ``polyfuse.config`` imports ``server.settings``, and the app imports the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ServerSettings

if TYPE_CHECKING:
    from .app import ServerApp, create_app

__all__ = ["ServerApp", "ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("ServerApp", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
