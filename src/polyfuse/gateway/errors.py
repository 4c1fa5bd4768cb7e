"""The gateway's errors: a user's mistake in a keys/usage command (exit 2), and a shared store that is down."""

from __future__ import annotations

from ..errors import PolyfuseError, UserError

__all__ = ["GatewayError", "UnknownKeyError", "StoreDown"]


class GatewayError(UserError):
    """Bad input to a keys or usage command (unknown team, negative budget, invalid glob, ...): exit code 2."""


class UnknownKeyError(GatewayError):
    """No key with that id."""


class StoreDown(PolyfuseError):
    """Redis (limits, budgets, cache) could not be reached; the caller applies the fail-open/closed policy."""
