"""Keys in the run-log database (SQLite or PostgreSQL): create, list, revoke, rotate, and the lookup table a
server keeps in memory.

Every change bumps ``keys_version`` in the same transaction, so a server notices a change with one tiny query
(``KeyCache.refresh``) and reloads the table only then: a revoked key is refused by every worker of every
instance within ``[gateway] key_refresh`` seconds, without a database round trip per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..store.backends import Backend, Tx
from ..store.errors import LogError
from ..store.records import now_iso
from .errors import GatewayError, UnknownKeyError
from .keys import KeyRecord, hash_secret, new_key_id, new_secret
from .settings import PERIODS, TEAM_NAME, TeamSettings

__all__ = ["KeyStore", "KeyCache"]

log = logging.getLogger("polyfuse.gateway")

_COLUMNS = (
    "id", "team", "status", "hint", "period", "created_at", "name", "budget", "rpm", "tpm", "models_json",
    "presets_json", "rotated_at", "revoked_at",
)  # fmt: skip
_SELECT = f"SELECT key_hash, {', '.join(_COLUMNS)} FROM api_keys"


def _record(row: Sequence[Any]) -> KeyRecord:
    data = dict(zip(_COLUMNS, row, strict=True))
    for field in ("models", "presets"):
        raw = data.pop(f"{field}_json")
        data[field] = tuple(json.loads(raw)) if raw is not None else None
    return KeyRecord(**data)


class KeyStore:
    """Key records on a migrated run-log backend. Validation of user input happens here, before any write."""

    def __init__(self, backend: Backend, teams: Mapping[str, TeamSettings] | None = None) -> None:
        self.backend = backend
        self.teams = dict(teams or {})

    # -- writing --------------------------------------------------------------------------------------------------
    def create(
        self,
        team: str,
        *,
        name: str | None = None,
        budget: float | None = None,
        period: str = "month",
        rpm: int | None = None,
        tpm: int | None = None,
        models: tuple[str, ...] | None = None,
        presets: tuple[str, ...] | None = None,
        known_presets: Sequence[str] = (),
    ) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the secret (the only time it exists outside the client)."""
        self._check(team, name, budget, period, rpm, tpm, presets, known_presets)
        secret = new_secret()
        values = {
            "id": new_key_id(),
            "key_hash": hash_secret(secret),
            "hint": secret[-4:],
            "name": name,
            "team": team,
            "status": "active",
            "budget": budget,
            "period": period,
            "rpm": rpm,
            "tpm": tpm,
            "models_json": json.dumps(list(models)) if models is not None else None,
            "presets_json": json.dumps(list(presets)) if presets is not None else None,
            "created_at": now_iso(),
        }
        with self.backend.transaction(write=True) as tx:
            marks = ", ".join("?" * len(values))
            tx.execute(f"INSERT INTO api_keys ({', '.join(values)}) VALUES ({marks})", list(values.values()))
            self._bump(tx)
        return self.get(str(values["id"])), secret

    def revoke(self, key_id: str) -> KeyRecord:
        with self.backend.transaction(write=True) as tx:
            self._require(tx, key_id)
            tx.execute(
                "UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE id = ? AND status = 'active'",
                (now_iso(), key_id),
            )
            self._bump(tx)
        return self.get(key_id)

    def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for the same key (same id, limits and spend); the old secret stops working."""
        secret = new_secret()
        with self.backend.transaction(write=True) as tx:
            record = self._require(tx, key_id)
            if not record.active:
                raise GatewayError(f"key {key_id} is revoked; create a new one with 'polyfuse keys create'")
            tx.execute(
                "UPDATE api_keys SET key_hash = ?, hint = ?, rotated_at = ? WHERE id = ?",
                (hash_secret(secret), secret[-4:], now_iso(), key_id),
            )
            self._bump(tx)
        return self.get(key_id), secret

    def _bump(self, tx: Tx) -> None:
        tx.execute("UPDATE gateway_state SET value = value + 1 WHERE name = 'keys_version'")

    def _check(
        self,
        team: str,
        name: str | None,
        budget: float | None,
        period: str,
        rpm: int | None,
        tpm: int | None,
        presets: tuple[str, ...] | None,
        known_presets: Sequence[str],
    ) -> None:
        if team not in self.teams:
            known = ", ".join(sorted(self.teams)) or "none configured"
            hint = "add [gateway.teams.<name>] to polyfuse.toml" if not self.teams else f"known: {known}"
            raise GatewayError(f"unknown team '{team}' ({hint})")
        if not re.match(TEAM_NAME, team):
            raise GatewayError(f"team name {team!r} must be letters, digits, '_', '.' or '-'")
        if name is not None and not 0 < len(name) <= 100:
            raise GatewayError("--name must be 1 to 100 characters")
        if budget is not None and not (budget >= 0 and budget < 1e9):
            raise GatewayError(f"--budget must be a number of USD, 0 or more (got {budget})")
        if period not in PERIODS:
            raise GatewayError(f"--period must be one of {', '.join(PERIODS)} (got {period!r})")
        for flag, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise GatewayError(f"--{flag} must be at least 1 (got {value}); leave it out for no limit")
        for pattern in presets or ():
            if not any(ch in pattern for ch in "*?[") and known_presets and pattern not in known_presets:
                raise GatewayError(
                    f"--presets: unknown preset '{pattern}'; available: {', '.join(sorted(known_presets))}"
                )

    # -- reading --------------------------------------------------------------------------------------------------
    def _require(self, tx: Tx, key_id: str) -> KeyRecord:
        rows = tx.query(f"{_SELECT} WHERE id = ?", (key_id,))
        if not rows:
            raise UnknownKeyError(f"no key '{key_id}' (see 'polyfuse keys list')")
        return _record(rows[0][1:])

    def get(self, key_id: str) -> KeyRecord:
        with self.backend.transaction(write=False) as tx:
            return self._require(tx, key_id)

    def list(self, *, team: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        sql, params = _SELECT, []
        conds = [] if include_revoked else ["status = 'active'"]
        if team is not None:
            conds.append("team = ?")
            params.append(team)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        with self.backend.transaction(write=False) as tx:
            rows = tx.query(sql + " ORDER BY created_at, id", params)
        return [_record(r[1:]) for r in rows]

    def version(self) -> int:
        with self.backend.transaction(write=False) as tx:
            return int(tx.query("SELECT value FROM gateway_state WHERE name = 'keys_version'")[0][0])

    def active(self) -> tuple[int, dict[str, KeyRecord]]:
        """The version and every active key by its hash, read in one transaction."""
        with self.backend.transaction(write=False) as tx:
            version = int(tx.query("SELECT value FROM gateway_state WHERE name = 'keys_version'")[0][0])
            rows = tx.query(f"{_SELECT} WHERE status = 'active'")
        return version, {str(r[0]): _record(r[1:]) for r in rows}


class KeyCache:
    """The active keys of one server worker, by hash, refreshed in the background when ``keys_version``
    changes. Lookups never touch the database. When the database is unreachable the last table stays in use
    (logged): known keys keep working, changes wait until it is back."""

    def __init__(self, store: KeyStore, refresh: float) -> None:
        self.store = store
        self.interval = refresh
        self.version = -1
        self.keys: dict[str, KeyRecord] = {}
        self.loaded_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def lookup(self, secret: str) -> KeyRecord | None:
        return self.keys.get(hash_secret(secret))

    def load(self) -> None:
        """Read the table now (at startup, so the first request finds its key)."""
        self.version, self.keys = self.store.active()
        self.loaded_at = time.monotonic()

    def refresh(self) -> bool:
        """Reload if a key changed since the last load; True when it did."""
        if self.store.version() == self.version:
            return False
        self.load()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.refresh)
            except LogError as exc:
                if not self._failing:
                    log.warning("cannot refresh API keys (serving the last known set): %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.warning("API keys refreshed again from %s", self.store.backend.where)
                self._failing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
