"""Budgets in the database: the period a spend belongs to, what was spent, and reservations ("holds").

The database is the record of spend (``budget_spend``, one row per scope and period, kept up to date with
every settled request). Without Redis it is also where holds are taken: one short write transaction checks
``spent + held + estimate <= budget`` and inserts the hold, with the scope's row locked (PostgreSQL ``FOR
UPDATE``; SQLite's write lock serialises writers anyway), so requests on any worker or instance cannot
overspend by more than what their estimates undercount. A hold that is never settled (a worker killed
mid-request) expires after ``hold_ttl``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta

from ..store.backends import Backend, Tx
from ..store.errors import LogError
from .errors import StoreDown
from .limits import Hold, MemoryWindows, Refusal, Window

__all__ = ["period_of", "DbBudget", "LocalStore", "add_spend"]


def period_of(period: str, now: datetime | None = None) -> tuple[str, float | None]:
    """The id of the budget period ``now`` falls in (``2026-11``, ``2026-W48``, ``2026-11-25``, ``total``)
    and the seconds until it ends (None for ``total``)."""
    now = now or datetime.now(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "day":
        end = day + timedelta(days=1)
        ident = day.strftime("%Y-%m-%d")
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        year, week, _ = start.isocalendar()
        ident = f"{year}-W{week:02d}"
    elif period == "month":
        end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
        ident = day.strftime("%Y-%m")
    else:
        return "total", None
    return ident, (end - now).total_seconds()


def add_spend(tx: Tx, scope: str, period: str, amount: float) -> None:
    tx.execute(
        "INSERT INTO budget_spend (scope, period, spent) VALUES (?, ?, ?) "
        "ON CONFLICT (scope, period) DO UPDATE SET spent = budget_spend.spent + excluded.spent",
        (scope, period, amount),
    )


class DbBudget:
    """Holds and spend in the run-log database (synchronous: call it from a worker thread)."""

    def __init__(self, backend: Backend, hold_ttl: float) -> None:
        self.backend = backend
        self.hold_ttl = hold_ttl
        self._lock = " FOR UPDATE" if backend.dialect == "postgres" else ""

    def spent(self, scope: str, period: str) -> float:
        with self.backend.transaction(write=False) as tx:
            rows = tx.query("SELECT spent FROM budget_spend WHERE scope = ? AND period = ?", (scope, period))
        return float(rows[0][0]) if rows else 0.0

    def reserve(self, ticket: str, holds: Sequence[Hold]) -> Refusal | None:
        now = time.time()
        with self.backend.transaction(write=True) as tx:
            for h in holds:
                tx.execute(
                    "INSERT INTO budget_spend (scope, period, spent) VALUES (?, ?, 0) "
                    "ON CONFLICT (scope, period) DO NOTHING",
                    (h.scope, h.period),
                )
                spent = float(
                    tx.query(
                        f"SELECT spent FROM budget_spend WHERE scope = ? AND period = ?{self._lock}",
                        (h.scope, h.period),
                    )[0][0]
                )
                tx.execute("DELETE FROM budget_holds WHERE scope = ? AND expires_at < ?", (h.scope, now))
                held = float(
                    tx.query(
                        "SELECT COALESCE(SUM(amount), 0) FROM budget_holds WHERE scope = ? AND period = ?",
                        (h.scope, h.period),
                    )[0][0]
                )
                if spent + held + h.amount > h.budget:
                    return Refusal(
                        "budget", h.scope, spent=spent, held=held, budget=h.budget, amount=h.amount
                    )
            for h in holds:
                tx.execute(
                    "INSERT INTO budget_holds (id, scope, period, amount, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (ticket, h.scope, h.period, h.amount, now + self.hold_ttl),
                )
        return None

    def settle(self, ticket: str, holds: Sequence[Hold], charges: Sequence[float]) -> None:
        """Release the holds and record the real cost, in one transaction (no moment where neither counts)."""
        with self.backend.transaction(write=True) as tx:
            for h, charge in zip(holds, charges, strict=True):
                tx.execute("DELETE FROM budget_holds WHERE id = ? AND scope = ?", (ticket, h.scope))
                if charge > 0:
                    add_spend(tx, h.scope, h.period, charge)


class LocalStore:
    """No Redis: rate limits in this process (``MemoryWindows``), budget holds in the database."""

    per_process = True

    def __init__(self, budget: DbBudget | None) -> None:
        self.windows = MemoryWindows()
        self.budget = budget

    async def admit(self, ticket: str, windows: Sequence[Window], holds: Sequence[Hold]) -> Refusal | None:
        refusal = self.windows.check(windows)
        if refusal is not None:
            return refusal
        sec = self.windows.take(windows)
        if holds:
            if self.budget is None:
                return Refusal("unavailable", holds[0].scope)
            try:
                refusal = await asyncio.to_thread(self.budget.reserve, ticket, holds)
            except LogError as exc:  # the database is down: the gateway's fail-open/closed policy decides
                self.windows.untake(windows, sec)
                raise StoreDown(f"budget database unavailable: {exc}") from exc
            if refusal is not None:
                self.windows.untake(windows, sec)
        return refusal

    def settle(
        self, ticket: str, extra: Sequence[Window], holds: Sequence[Hold], charges: Sequence[float]
    ) -> Awaitable[None] | None:
        self.windows.add(extra)
        if holds and self.budget is not None:
            return asyncio.to_thread(self.budget.settle, ticket, holds, charges)
        return None

    async def aclose(self) -> None:
        return None
