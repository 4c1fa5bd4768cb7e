"""The gateway's errors: a user's mistake in a keys/usage command (exit 2), and a shared store that is down."""

from __future__ import annotations

from ..errors import PolyfuseError, UserError

__all__ = [
    "GatewayError",
    "UnknownKeyError",
    "StoreDown",
    "Unauthenticated",
    "NotAllowed",
    "LimitExceeded",
    "BudgetExhausted",
    "PriceUnknown",
    "GatewayUnavailable",
]


class GatewayError(UserError):
    """Bad input to a keys or usage command (unknown team, negative budget, invalid glob, ...): exit code 2."""


class UnknownKeyError(GatewayError):
    """No key with that id."""


class StoreDown(PolyfuseError):
    """Redis (limits, budgets, cache) could not be reached; the caller applies the fail-open/closed policy."""


class Unauthenticated(UserError):
    """No key, or a key that is unknown or revoked: 401."""


class NotAllowed(UserError):
    """The key may not use this model or preset: 403."""


class LimitExceeded(UserError):
    """Over a requests- or tokens-per-minute limit: 429 with Retry-After."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(UserError):
    """The request's estimated cost does not fit what is left of a budget: 402."""

    def __init__(self, message: str, metadata: dict[str, object]) -> None:
        super().__init__(message)
        self.metadata = metadata


class PriceUnknown(UserError):
    """A budget applies but the server has no price for a model the request would call: 400."""


class GatewayUnavailable(PolyfuseError):
    """Redis is down and the policy for this request is to fail closed: 503 with Retry-After."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
