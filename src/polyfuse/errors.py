"""One typed error tree. Provider SDK/HTTP errors are translated into these at the boundary.

``UserError`` marks mistakes a user can fix (bad input, missing key, invalid config): interfaces print its
message on one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PolyfuseError",
    "UserError",
    "ConfigError",
    "UnknownModelError",
    "ModelNotAllowedError",
    "TooManyMembersError",
    "MissingKeyError",
    "InvalidRequestError",
    "BudgetExceededError",
    "ProviderError",
    "AuthenticationError",
    "RateLimitedError",
    "ProviderTimeoutError",
    "UpstreamError",
    "BadUpstreamRequestError",
    "MalformedResponseError",
    "ModelNotAvailableError",
    "FusionError",
    "AllMembersFailedError",
    "NoSurvivorsError",
]


class PolyfuseError(Exception):
    """Base of every error polyfuse raises on purpose."""


class UserError(PolyfuseError):
    """A mistake the user can fix; shown as one line, exit code 2."""


class ConfigError(UserError):
    """Invalid configuration or option value."""


class UnknownModelError(ConfigError):
    """A model id whose prefix or name polyfuse does not know."""


class ModelNotAllowedError(ConfigError):
    """A model id the hub's ``ModelPolicy`` refuses (a raw URL or a local path a server was not told to allow).
    Raised before anything is fetched or opened."""


class MissingKeyError(ConfigError):
    """A provider needs an API key that is not set."""

    def __init__(self, provider: str, env_var: str) -> None:
        super().__init__(
            f"provider '{provider}' needs an API key: set the environment variable {env_var} "
            f"or [providers.{provider}] api_key in polyfuse.toml"
        )
        self.provider = provider
        self.env_var = env_var


class InvalidRequestError(UserError):
    """A request that cannot run as given (empty prompt, empty pool, rounds < 1, ...)."""


class TooManyMembersError(InvalidRequestError):
    """A pool (or a member's ``*N``) larger than allowed, refused before it is expanded."""


class BudgetExceededError(UserError):
    """The estimated cost of a run exceeds the caller's ``max_cost``."""

    def __init__(self, estimate: float, max_cost: float) -> None:
        super().__init__(
            f"estimated cost ${estimate:.6f} exceeds max_cost ${max_cost:.6f}; raise max_cost or use a smaller pool"
        )
        self.estimate = estimate
        self.max_cost = max_cost


class ProviderError(PolyfuseError):
    """A model call failed. ``retryable`` says whether trying again may help. ``code`` and ``param`` are what
    the upstream's error body said (OpenAI's ``error.code`` / ``error.param``), when it said."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.code = code
        self.param = param


class AuthenticationError(ProviderError):
    """The upstream refused the credentials (401/403)."""


class RateLimitedError(ProviderError):
    """429 from the upstream; ``retry_after`` in seconds when the upstream said."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderError):
    """Connect or read timeout, or a member's own deadline."""

    retryable = True


class UpstreamError(ProviderError):
    """5xx, broken connection, a malformed or mid-stream error from the upstream."""

    retryable = True


class BadUpstreamRequestError(ProviderError):
    """The upstream rejected the request as invalid (400/404/422): retrying will not help."""


class MalformedResponseError(UpstreamError):
    """The upstream answered something that is not a valid completion (not JSON, wrong shapes, invalid UTF-8,
    an over-long line, over the size cap, a stream without content): retrying the same bytes will not help."""

    retryable = False


class ModelNotAvailableError(ProviderError):
    """A local model file or backend is missing on this machine."""


class FusionError(PolyfuseError):
    """The fusion run could not produce an answer."""


class NoSurvivorsError(FusionError):
    """Every answer was rejected by the candidate checks; ``candidates`` holds them with their check results."""

    def __init__(self, candidates: list[Any]) -> None:
        super().__init__(f"no candidate passed the checks ({len(candidates)} answers rejected)")
        self.candidates = candidates


class AllMembersFailedError(FusionError):
    """Every pool member failed; the message lists each reason."""

    def __init__(self, reasons: dict[str, str]) -> None:
        detail = "; ".join(f"{m}: {r}" for m, r in reasons.items())
        super().__init__(f"all {len(reasons)} pool members failed: {detail}")
        self.reasons = reasons
