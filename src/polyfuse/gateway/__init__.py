"""The team gateway: API keys with budgets and rate limits shared across workers and instances (Redis), usage
records and reports, Prometheus metrics and an exact-match response cache, all for ``polyfuse serve``.

Only the settings are imported eagerly (``polyfuse.config`` needs them); the rest loads with the server.
"""

from .settings import CacheSettings, GatewaySettings, TeamSettings

__all__ = ["GatewaySettings", "TeamSettings", "CacheSettings"]
