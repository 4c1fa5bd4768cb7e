"""The gateway a server asks, per request: who is calling, may they use this, do they fit their limits and
budgets, and, once answered, what it cost.

    principal = gateway.authenticate(authorization_header)
    gateway.check_allowed(principal, demand)             # the key's allow-list, on top of the server's policy
    ticket = await gateway.admit(principal, demand)      # limits + budget holds, one round trip to Redis
    ... run the request ...
    gateway.finish(principal, ticket, record)            # settle holds and tokens, usage record, metrics

Redis down: ``admit`` fails closed (503) for a key with a budget and open for rate limits, unless configured
otherwise (``budgets_when_redis_down``, ``limits_when_redis_down``); every outage is logged once, counted in
the metrics, and never turns into a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..store.backends import Backend
from ..types import Usage
from .errors import (
    BudgetExhausted,
    GatewayUnavailable,
    LimitExceeded,
    NotAllowed,
    PriceUnknown,
    StoreDown,
    Unauthenticated,
)
from .keys import KeyRecord
from .keystore import KeyCache, KeyStore
from .ledger import DbBudget, LocalStore, period_of
from .limits import Hold, Refusal, SharedStore, Window
from .metrics import Metrics
from .settings import GatewaySettings
from .usage import UsageRecord, UsageWriter

__all__ = ["Gateway", "Principal", "Demand", "Ticket"]

log = logging.getLogger("polyfuse.gateway")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a gateway key, or an operator (a ``[server] api_keys`` key, or nobody when the server
    has no auth at all). Operators have no limits and may read usage and metrics."""

    key: KeyRecord | None
    admin: bool

    @property
    def key_label(self) -> str:
        return self.key.id if self.key else ("operator" if self.admin else "-")

    @property
    def team_label(self) -> str:
        return self.key.team if self.key else "-"


OPERATOR = Principal(None, admin=True)


@dataclass(frozen=True, slots=True)
class Demand:
    """What a request will use, known before dispatch: every model it may call, its preset, its prompt's
    tokens and an upper-bound cost estimate (None when some model has no price)."""

    models: tuple[str, ...]
    preset: str | None
    prompt_tokens: int
    estimate: float | None


@dataclass(slots=True)
class Ticket:
    id: str
    principal: Principal
    counted_tokens: int = 0
    tpm: list[Window] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    reserved: bool = False  # holds and windows were taken in the shared store
    estimate: float = 0.0


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        operator_keys: frozenset[str] = frozenset(),
        keys: KeyCache | None = None,
        store: SharedStore | None = None,
        writer: UsageWriter | None = None,
        metrics: Metrics | None = None,
        cache: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.operator_keys = [k.encode() for k in operator_keys]
        self.keys = keys
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.cache = cache
        self.metrics_token = settings.metrics_secret(env)
        self._settling: set[asyncio.Task[Any]] = set()
        self._ticket_prefix = os.urandom(6).hex() + "-"  # unique per process; a counter after it, no syscall
        self._tickets = itertools.count()

    @classmethod
    def build(
        cls,
        settings: GatewaySettings,
        backend: Backend | None,
        operator_keys: frozenset[str],
        env: Mapping[str, str] | None = None,
    ) -> Gateway:
        """Everything the settings ask for. Keys, usage records and budgets need the run-log database."""
        keys = writer = cache = None
        store: SharedStore | None = None
        if settings.keys:
            if backend is None:
                from ..errors import ConfigError

                raise ConfigError("[gateway] keys need the run-log database: remove --no-log / [log] enabled")
            keys = KeyCache(KeyStore(backend, settings.teams), settings.key_refresh)
            keys.load()
        if backend is not None:
            writer = UsageWriter(backend, capacity=settings.usage_queue)
        url = settings.redis(env)
        budget = DbBudget(backend, settings.hold_ttl) if backend is not None else None
        if url:
            from .redis_store import RedisStore, connect

            seed = budget.spent if budget is not None else (lambda scope, period: 0.0)
            store = RedisStore(connect(url, settings.redis_timeout), seed, hold_ttl=settings.hold_ttl)
            if settings.cache.enabled:
                from .cache import ResponseCache

                cache = ResponseCache(store, settings.cache)
        elif settings.keys:
            store = LocalStore(budget)
        metrics = Metrics() if settings.metrics else None
        return cls(
            settings,
            operator_keys=operator_keys,
            keys=keys,
            store=store,
            writer=writer,
            metrics=metrics,
            cache=cache,
            env=env,
        )

    @property
    def per_process(self) -> bool:
        """True when limits hold per worker process only (no Redis)."""
        return self.store is None or self.store.per_process

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.keys is not None:
            self.keys.start()

    async def aclose(self) -> None:
        await asyncio.gather(*self._settling, return_exceptions=True)
        if self.keys is not None:
            await self.keys.aclose()
        if self.store is not None:
            await self.store.aclose()
        if self.writer is not None:
            await self.writer.aclose()
        if self.metrics is not None:
            self.metrics.close()

    # -- who ------------------------------------------------------------------------------------------------------
    def _operator(self, token: str) -> bool:
        raw = token.encode()
        return any(hmac.compare_digest(raw, k) for k in self.operator_keys)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a /v1 route; raises ``Unauthenticated`` (401)."""
        if self.keys is None and not self.operator_keys:
            return OPERATOR  # a server without auth (loopback, or --insecure-no-auth)
        token = _bearer(authorization)
        if token is not None:
            if self.keys is not None and (record := self.keys.lookup(token)) is not None:
                return Principal(record, admin=False)
            if self._operator(token):
                return OPERATOR
        raise Unauthenticated("missing or invalid API key: send 'Authorization: Bearer <key>'")

    def may_read_metrics(self, authorization: str | None) -> bool:
        token = _bearer(authorization)
        if token is not None:
            if self.metrics_token is not None and hmac.compare_digest(
                token.encode(), self.metrics_token.encode()
            ):
                return True
            if self._operator(token):
                return True
        return self.metrics_token is None and not self.operator_keys and self.keys is None

    # -- may they -------------------------------------------------------------------------------------------------
    def check_allowed(self, principal: Principal, demand: Demand) -> None:
        key = principal.key
        if key is None:
            return
        if demand.preset is not None and not key.allows_preset(demand.preset):
            self._refused("not_allowed", "key")
            raise NotAllowed(
                f"this key may not use preset '{demand.preset}' (allowed: {', '.join(key.presets or ())})"
            )
        for model in demand.models:
            if not key.allows_model(model):
                self._refused("not_allowed", "key")
                raise NotAllowed(
                    f"this key may not call model '{model}' (allowed: {', '.join(key.models or ())})"
                )

    # -- do they fit ----------------------------------------------------------------------------------------------
    def _plan(self, principal: Principal, demand: Demand) -> tuple[Ticket, list[Window]]:
        key = principal.key
        ticket = Ticket(
            f"{self._ticket_prefix}{next(self._tickets):x}", principal, counted_tokens=demand.prompt_tokens
        )
        if key is None:
            return ticket, []
        team = self.settings.teams.get(key.team)
        windows: list[Window] = []
        for scope, limits in ((f"key:{key.id}", key), (f"team:{key.team}", team)):
            if limits is None:
                continue
            if limits.rpm:
                windows.append(Window(f"{scope}:rpm", limits.rpm, 1))
            if limits.tpm:
                windows.append(Window(f"{scope}:tpm", limits.tpm, demand.prompt_tokens))
                ticket.tpm.append(Window(f"{scope}:tpm", limits.tpm, 0))
        budgets = [(f"key:{key.id}", key.budget, key.period)]
        if team is not None:
            budgets.append((f"team:{key.team}", team.budget, team.period))
        for scope, budget, period in budgets:
            if budget is None:
                continue
            if demand.estimate is None:
                raise PriceUnknown(
                    f"{scope.replace(':', ' ', 1)} has a budget, but the server has no price for a model this "
                    "request would call: ask the operator to add it under [prices]"
                )
            if demand.estimate > 0:
                ident, ttl = period_of(period)
                ticket.holds.append(Hold(scope, ident, budget, demand.estimate, ttl))
        ticket.estimate = demand.estimate or 0.0
        return ticket, windows

    async def admit(self, principal: Principal, demand: Demand) -> Ticket:
        """Take the request's place in its limits and hold its estimated cost; raises ``LimitExceeded`` (429),
        ``BudgetExhausted`` (402) or ``GatewayUnavailable`` (503)."""
        ticket, windows = self._plan(principal, demand)
        if principal.key is None or self.store is None:
            return ticket
        if not windows and not ticket.holds:
            return ticket
        try:
            refusal = await self.store.admit(ticket.id, windows, ticket.holds)
        except StoreDown:
            self._store_down(ticket, windows)
            return ticket
        if refusal is not None:
            raise self._refusal(refusal)
        ticket.reserved = True
        return ticket

    def _store_down(self, ticket: Ticket, windows: list[Window]) -> None:
        if self.metrics is not None:
            self.metrics.store_errors.inc()
        if ticket.holds and self.settings.budgets_when_redis_down == "closed":
            self._refused("unavailable", "budget")
            raise GatewayUnavailable(
                "budgets cannot be checked right now (shared store down); try again shortly"
            )
        if windows and self.settings.limits_when_redis_down == "closed":
            self._refused("unavailable", "limits")
            raise GatewayUnavailable(
                "rate limits cannot be checked right now (shared store down); try again shortly"
            )

    def _refusal(self, refusal: Refusal) -> Exception:
        scope, _, rest = refusal.name.partition(":")
        if refusal.kind == "rate":
            what = "requests" if refusal.name.endswith(":rpm") else "tokens"
            self._refused("rate", scope)
            wait = refusal.retry_after or 1.0
            return LimitExceeded(f"{scope} {what}-per-minute limit reached; retry in {wait:.1f}s", wait)
        if refusal.kind == "budget":
            self._refused("budget", scope)
            left = max(0.0, (refusal.budget or 0) - (refusal.spent or 0) - (refusal.held or 0))
            return BudgetExhausted(
                f"{scope} budget exhausted: ${left:.6f} left of ${refusal.budget or 0:.2f} this period, this "
                f"request may cost up to ${refusal.amount or 0:.6f}",
                {
                    "scope": scope,
                    "budget": refusal.budget,
                    "spent": refusal.spent,
                    "held": refusal.held,
                    "estimate": refusal.amount,
                },
            )
        self._refused("unavailable", scope)
        return GatewayUnavailable("budgets cannot be checked: this server has no database for them")

    def _refused(self, reason: str, scope: str) -> None:
        if self.metrics is not None:
            self.metrics.refused(reason, scope)

    # -- what it cost ---------------------------------------------------------------------------------------------
    def finish(
        self, principal: Principal, ticket: Ticket | None, record: UsageRecord, usage: Usage | None = None
    ) -> None:
        """After the response (``ticket`` None: refused before admission): settle the holds and tokens,
        write the usage record, count the spend."""
        if principal is not None and principal.key is not None:
            record.key_id, record.team = principal.key.id, principal.key.team
        if ticket is not None and (ticket.holds or ticket.tpm) and self.store is not None:
            charge = record.cost if record.cost_known else max(record.cost, ticket.estimate)
            extra = max(0, record.prompt_tokens + record.completion_tokens - ticket.counted_tokens)
            if not self.store.per_process:  # Redis holds: the database learns the spend from the record
                record.charges = tuple((h.scope, h.period, charge) for h in ticket.holds)
            if ticket.reserved:
                tpm = [Window(w.name, w.limit, extra) for w in ticket.tpm] if extra else []
                self._settle(ticket, tpm, [charge] * len(ticket.holds))
        if self.writer is not None:
            # the queue's depth and drops reach the metrics by sampling (server/gate.py), not per request
            self.writer.add(record)
        if self.metrics is not None and usage is not None:
            self.metrics.spend(principal.key_label, principal.team_label, record.model, usage, record.cost)

    def _settle(self, ticket: Ticket, tpm: list[Window], charges: list[float]) -> None:
        assert self.store is not None
        pending = self.store.settle(ticket.id, tpm, ticket.holds, charges)
        if pending is not None:
            self.background(asyncio.ensure_future(pending))

    def background(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to work finishing after a response (settlements, cache writes); awaited at close."""
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background gateway work failed: %s", task.exception())
