"""Which runs a log query covers: model, mode, source, date range, cost range, status."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..errors import InvalidRequestError

__all__ = ["LogFilter", "parse_when"]

_RELATIVE = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_when(text: str, *, end_of_day: bool = False, now: datetime | None = None) -> str:
    """A date (``2025-06-01``), a datetime (``2025-06-01T12:00``, UTC unless it says otherwise) or an age
    (``7d``, ``12h``, ``30m`` ago) as the log's timestamp format. ``end_of_day`` makes a bare date inclusive."""
    text = text.strip()
    now = now or datetime.now(UTC)
    rel = _RELATIVE.match(text)
    if rel:
        return _stamp(now - timedelta(**{_UNITS[rel.group(2)]: int(rel.group(1))}))
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None and len(text) == 10:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return _stamp(start + timedelta(days=1) if end_of_day else start)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"cannot read the date {text!r}: use 2025-06-01, 2025-06-01T12:00 or an age such as 7d, 12h, 30m"
        ) from None
    return _stamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


@dataclass(frozen=True)
class LogFilter:
    """All given conditions must hold. ``model`` matches runs where any member or judge used a model whose id
    contains it; ``since`` is inclusive, ``until`` exclusive (a bare date covers that whole day)."""

    model: str | None = None
    mode: str | None = None
    source: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    min_cost: float | None = None
    max_cost: float | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, *, since: str | None = None, until: str | None = None, **kw: Any) -> LogFilter:
        """From user input: dates in any form ``parse_when`` reads."""
        if kw.get("limit") is not None and kw["limit"] < 1:
            raise InvalidRequestError(f"--limit must be at least 1 (got {kw['limit']})")
        return cls(
            since=parse_when(since) if since else None,
            until=parse_when(until, end_of_day=True) if until else None,
            **kw,
        )

    def sql(self) -> tuple[str, list[Any]]:
        """A ``WHERE`` clause over ``runs`` (empty when nothing is filtered) and its parameters."""
        conds: list[str] = []
        params: list[Any] = []
        simple = (("mode", self.mode), ("source", self.source), ("status", self.status))
        for column, value in simple:
            if value is not None:
                conds.append(f"{column} = ?")
                params.append(value)
        ranges: tuple[tuple[str, str | float | None], ...] = (
            ("created_at >= ?", self.since),
            ("created_at < ?", self.until),
            ("cost >= ?", self.min_cost),
            ("cost <= ?", self.max_cost),
        )
        for cond, bound in ranges:
            if bound is not None:
                conds.append(cond)
                params.append(bound)
        if self.model is not None:
            conds.append("id IN (SELECT run_id FROM candidates WHERE model LIKE ? ESCAPE '\\')")
            params.append("%" + _escape_like(self.model) + "%")
        return ("WHERE " + " AND ".join(conds) if conds else ""), params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
