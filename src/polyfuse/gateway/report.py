"""Usage reports: requests, tokens, cost, failures and latency percentiles per key, team, model or preset,
from the ``api_usage`` records; per model also the editor suggestions shown and accepted (the ``suggestions``
table the language server fills; they carry no key, so other groupings have none). Shared by ``polyfuse
usage`` and the web panel's admin page."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from ..store.backends import Backend
from .errors import GatewayError

__all__ = ["UsageRow", "usage_report", "GROUPS", "to_csv", "to_json"]

Group = Literal["key", "team", "model", "preset"]
GROUPS: tuple[str, ...] = ("key", "team", "model", "preset")
_COLUMN = {"key": "u.key_id", "team": "u.team", "model": "u.model", "preset": "u.preset"}
_REFUSED = (401, 402, 403, 429)


@dataclass
class UsageRow:
    group: str  # the key id, team, model or preset ("-" for none: pass-through has no preset)
    label: str  # a key's name and team; else the same as group
    requests: int = 0
    ok: int = 0
    refused: int = 0  # over a limit or budget, or not allowed for the key
    failed: int = 0  # any other error
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_known: bool = True
    p50: float | None = None  # seconds, answered requests only
    p90: float | None = None
    suggestions_shown: int = 0  # editor completions (``--by model`` only)
    suggestions_accepted: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        del out["latencies"]
        out["cost"] = round(self.cost, 8)
        return out


def _percentile(values: Sequence[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 4)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 4)


def usage_report(
    backend: Backend, by: str = "key", since: str | None = None, until: str | None = None
) -> list[UsageRow]:
    """One row per group, most expensive first. ``since``/``until`` are log timestamps (``parse_when``)."""
    if by not in GROUPS:
        raise GatewayError(f"--by must be one of {', '.join(GROUPS)} (got {by!r})")
    where, params = _period("u.created_at", since, until)
    sql = (
        f"SELECT {_COLUMN[by]}, k.name, k.team, u.status, u.cached, u.prompt_tokens, u.completion_tokens, "
        f"u.cost, u.cost_known, u.latency FROM api_usage u LEFT JOIN api_keys k ON k.id = u.key_id {where}"
    )
    with backend.transaction(write=False) as tx:
        rows = tx.query(sql, params)
    table: dict[str, UsageRow] = {}
    for group, name, team, status, cached, ptok, ctok, cost, known, latency in rows:
        key = str(group) if group is not None else "-"
        label = key
        if by == "key" and group is not None:
            label = f"{name or ''} ({team})" if name else str(team or "")
        row = table.setdefault(key, UsageRow(group=key, label=label))
        row.requests += 1
        status = int(status)
        if status < 400:
            row.ok += 1
            row.latencies.append(float(latency))
        elif status in _REFUSED:
            row.refused += 1
        else:
            row.failed += 1
        row.cached += int(cached)
        row.prompt_tokens += int(ptok)
        row.completion_tokens += int(ctok)
        row.cost += float(cost)
        row.cost_known = row.cost_known and bool(known)
    if by == "model":
        _add_suggestions(backend, table, since, until)
    for row in table.values():
        row.p50, row.p90 = _percentile(row.latencies, 50), _percentile(row.latencies, 90)
    return sorted(table.values(), key=lambda r: (-r.cost, -r.requests, r.group))


def _period(column: str, since: str | None, until: str | None) -> tuple[str, list[str]]:
    conds = [f"{column} >= ?"] * bool(since) + [f"{column} < ?"] * bool(until)
    params = [v for v in (since, until) if v]
    return ("WHERE " + " AND ".join(conds)) if conds else "", params


def _add_suggestions(
    backend: Backend, table: dict[str, UsageRow], since: str | None, until: str | None
) -> None:
    where, params = _period("created_at", since, until)
    with backend.transaction(write=False) as tx:
        rows = tx.query(f"SELECT model, accepted_at FROM suggestions {where}", params)
    for model, accepted_at in rows:
        row = table.setdefault(str(model), UsageRow(group=str(model), label=str(model)))
        row.suggestions_shown += 1
        row.suggestions_accepted += accepted_at is not None


def to_json(rows: Sequence[UsageRow], by: str) -> str:
    return json.dumps({"by": by, "rows": [r.to_dict() for r in rows]}, indent=2)


def to_csv(rows: Sequence[UsageRow]) -> str:
    out = io.StringIO()
    fields = [k for k in UsageRow.__dataclass_fields__ if k != "latencies"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.to_dict())
    return out.getvalue()
