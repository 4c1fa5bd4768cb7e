"""One retry policy for every upstream call, streaming or not (as openai-python does): jittered exponential
backoff, the upstream's ``Retry-After`` honoured up to a cap, and a total deadline for the call. The error that
ends the retries is raised as it was, or, when the deadline cut them short, as a timeout whose cause it is."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from ..errors import ProviderError, ProviderTimeoutError, RateLimitedError

__all__ = ["RetryPolicy", "Retrying"]


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` after the first attempt; waits of ``initial_delay * 2**n`` (at most ``max_delay``),
    each shortened by up to a quarter at random so that clients that failed together do not retry together;
    ``Retry-After`` up to ``max_retry_after`` seconds; ``deadline``: seconds for the whole call."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    deadline: float | None = None

    def start(self) -> Retrying:
        return Retrying(self)


@dataclass
class Retrying:
    """The retry state of one call."""

    policy: RetryPolicy
    attempt: int = 0
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if self.policy.deadline is None:
            return None
        return max(0.0, self.policy.deadline - (time.monotonic() - self.started))

    def delay(self, exc: ProviderError) -> float:
        p = self.policy
        if (
            isinstance(exc, RateLimitedError)
            and exc.retry_after is not None
            and exc.retry_after <= p.max_retry_after
        ):
            return float(exc.retry_after)
        delay = min(p.initial_delay * 2.0**self.attempt, p.max_delay)
        return delay * (1.0 - 0.25 * random.random())

    async def backoff(self, exc: ProviderError) -> None:
        """Wait before the next attempt, or raise when there is none: ``exc`` itself when it is not worth
        retrying or the retries are spent, a ``ProviderTimeoutError`` caused by it when the deadline is near."""
        if not exc.retryable or self.attempt >= self.policy.max_retries:
            raise exc
        wait = self.delay(exc)
        left = self.remaining()
        if left is not None and wait >= left:
            raise ProviderTimeoutError(
                f"{exc.provider or 'upstream'}: gave up after {self.attempt + 1} attempt(s): the call's deadline "
                f"of {self.policy.deadline:g}s would pass before the next one (last error: {exc})",
                provider=exc.provider,
                status=exc.status,
            ) from exc
        self.attempt += 1
        await asyncio.sleep(wait)
