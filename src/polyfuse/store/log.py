"""The run log: ``open_log(settings)`` and ``RunLog.record(request, result, source=...)``.

    from polyfuse.store import open_log
    with open_log(config.log) as log:                 # SQLite by default; PostgreSQL when log.url is set
        run_id = log.record(request, result, source="server")
        # or, from async code without blocking the event loop:
        run_id = await log.arecord(request, result, source="server")

Every interface that runs a fusion calls ``record`` (or ``record_error`` when the run produced no answer) with
its ``source``: "cli", "server", "code", or anything else that says where the run came from.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ..fusion.request import FusionRequest
from ..redaction import Redact
from ..types import Candidate, FusionResult
from .backends import Backend, PostgresBackend, SqliteBackend, Tx
from .dropped import DroppedRuns
from .errors import LogCorruptError, LogVersionError, RunNotFoundError
from .filters import LogFilter
from .migrations import LATEST, MIGRATIONS, statements
from .records import CandidateRecord, RunRecord, build_error_record, build_record
from .settings import LogSettings
from .text import TextPolicy

__all__ = ["RunLog", "open_log", "migrate"]

_RUN_COLUMNS = (
    "uid", "created_at", "source", "mode", "judge", "status", "error", "prompt", "prompt_hash", "answer",
    "answer_hash", "agreement", "verdict_json", "request_json", "prompt_tokens", "completion_tokens", "cost",
    "cost_known", "wall_time", "overhead", "meta_json",
)  # fmt: skip
_DROP_COLUMNS = (
    "recorded_at", "first_at", "last_at", "runs", "prompt_tokens", "completion_tokens", "cost", "sources",
    "reasons",
)  # fmt: skip
_CAND_COLUMNS = (
    "role", "member", "model", "answered_by", "round", "status", "text", "text_hash", "prompt_tokens", "completion_tokens",
    "cost", "latency", "ttft", "error", "chosen", "score",
)  # fmt: skip


_CORE_TABLES = frozenset({"runs", "candidates"})


def migrate(backend: Backend, upto: int = LATEST) -> int:
    """Bring the schema to ``upto`` (tests pass an older version to build an old log). Returns the version.

    A damaged, foreign or newer database is refused after reading only: nothing is written to it (not even
    SQLite's switch to WAL mode). An up-to-date log is not written to at all."""
    backend.check()
    with backend.transaction(write=False) as tx:
        version = _usable_version(backend, tx)
    if version >= upto:
        return version
    backend.prepare()
    with backend.transaction(write=True) as tx:
        # again, under the write lock: another process may have migrated meanwhile
        version = start = _usable_version(backend, tx)
        for migration in MIGRATIONS:
            if version < migration.version <= upto:
                for sql in statements(migration, backend.dialect):
                    tx.execute(sql)
                version = migration.version
        if version != start:
            backend.set_schema_version(tx, version)
    return version


def _usable_version(backend: Backend, tx: Tx) -> int:
    """The schema version of a database that is a polyfuse log (or empty); refuses anything else."""
    version = backend.schema_version(tx)
    tables = backend.tables(tx)
    if version == 0 and tables:
        raise LogCorruptError(
            f"{backend.where} holds tables ({', '.join(sorted(tables))}) but no polyfuse log schema; it was "
            "left untouched: point [log] at another database"
        )
    if version > 0 and not tables >= _CORE_TABLES:
        raise LogCorruptError(
            f"{backend.where} has a schema version ({version}) but not the tables of a polyfuse log; it is "
            "someone else's database and was left untouched: point [log] at another database"
        )
    if version > LATEST:
        raise LogVersionError(
            f"the log database {backend.where} has schema version {version}, newer than this polyfuse "
            f"understands ({LATEST}); it was left untouched: upgrade polyfuse or use another log"
        )
    return version


class RunLog:
    """A run log on one database. Thread-safe; use one per process and close it (or use ``with``).

    Every stored text passes ``policy`` (known keys redacted, each text capped), whatever the record's origin:
    a run recorded here, a record built elsewhere, an import."""

    def __init__(
        self, backend: Backend, *, store_text: bool = True, policy: TextPolicy | None = None
    ) -> None:
        self.backend = backend
        self.store_text = store_text
        self.policy = policy or TextPolicy()
        self.version = migrate(backend)

    @property
    def where(self) -> str:
        return self.backend.where

    # -- writing ------------------------------------------------------------------------------------------------
    def record(
        self,
        request: FusionRequest,
        result: FusionResult,
        *,
        source: str = "code",
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Log a finished run; returns its id."""
        return self.insert(self.build(request, result, source=source, meta=meta))

    def build(
        self,
        request: FusionRequest,
        result: FusionResult,
        *,
        source: str = "code",
        meta: dict[str, Any] | None = None,
        redact: Redact | None = None,
    ) -> RunRecord:
        """The record ``record`` would store (texts already redacted and capped, plus ``redact`` if given),
        for callers that write it later (the server's write queue)."""
        policy = self.policy.then(redact) if redact is not None else self.policy
        return build_record(
            request, result, source=source, store_text=self.store_text, meta=meta, policy=policy
        )

    def record_error(
        self,
        request: FusionRequest,
        error: BaseException,
        *,
        source: str = "code",
        candidates: list[Candidate] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Log a run that produced no answer (all members failed, no candidate passed the checks, ...)."""
        record = build_error_record(
            request,
            error,
            source=source,
            store_text=self.store_text,
            candidates=candidates,
            meta=meta,
            policy=self.policy,
        )
        return self.insert(record)

    async def arecord(
        self,
        request: FusionRequest,
        result: FusionResult,
        *,
        source: str = "code",
        meta: dict[str, Any] | None = None,
    ) -> int:
        """``record`` in a worker thread, for async callers (a server must not block its event loop)."""
        return await asyncio.to_thread(self.record, request, result, source=source, meta=meta)

    def insert(self, record: RunRecord) -> int:
        """Store a record (also used by import). A record whose ``uid`` is already logged is not stored twice;
        the existing run's id is returned."""
        with self.backend.transaction(write=True) as tx:
            return self._insert(tx, record)

    def insert_many(self, records: Iterable[RunRecord], dropped: DroppedRuns | None = None) -> list[int]:
        """Store records in one transaction (all or none), with a summary of dropped runs if given."""
        with self.backend.transaction(write=True) as tx:
            ids = [self._insert(tx, r) for r in records]
            if dropped is not None:
                self._insert_dropped(tx, dropped)
            return ids

    def record_dropped(self, dropped: DroppedRuns) -> None:
        """Store a summary of runs that could not be recorded."""
        with self.backend.transaction(write=True) as tx:
            self._insert_dropped(tx, dropped)

    def _insert(self, tx: Tx, r: RunRecord) -> int:
        marks = ", ".join("?" * len(_RUN_COLUMNS))
        rows = tx.query(
            f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (uid) DO NOTHING RETURNING id",
            _run_values(r, self.policy),
        )
        if not rows:
            return int(tx.query("SELECT id FROM runs WHERE uid = ?", (r.uid,))[0][0])
        run_id = int(rows[0][0])
        cmarks = ", ".join("?" * (len(_CAND_COLUMNS) + 2))
        for i, c in enumerate(r.candidates):
            tx.execute(
                f"INSERT INTO candidates (run_id, idx, {', '.join(_CAND_COLUMNS)}) VALUES ({cmarks})",
                (run_id, i, *_cand_values(c, self.policy)),
            )
        return run_id

    def _insert_dropped(self, tx: Tx, d: DroppedRuns) -> None:
        tx.execute(
            f"INSERT INTO dropped_runs ({', '.join(_DROP_COLUMNS)}) VALUES ({', '.join('?' * len(_DROP_COLUMNS))})",
            (
                d.recorded_at, d.first_at, d.last_at, d.runs, d.prompt_tokens, d.completion_tokens, d.cost,
                _dumps(d.sources), _dumps([self.policy.text(r) for r in d.reasons]),
            ),
        )  # fmt: skip

    # -- reading ------------------------------------------------------------------------------------------------
    def runs(self, where: LogFilter | None = None) -> list[RunRecord]:
        """Runs matching the filter, newest first, with their candidates."""
        where = where or LogFilter()
        clause, params = where.sql()
        sql = f"SELECT id, {', '.join(_RUN_COLUMNS)} FROM runs {clause} ORDER BY created_at DESC, id DESC"
        if where.limit is not None:
            sql += f" LIMIT {int(where.limit)}"
        with self.backend.transaction(write=False) as tx:
            rows = tx.query(sql, params)
            cands = self._candidates(tx, [int(r[0]) for r in rows])
        return [_run_from_row(row, cands.get(int(row[0]), [])) for row in rows]

    def get(self, run_id: int) -> RunRecord:
        with self.backend.transaction(write=False) as tx:
            rows = tx.query(f"SELECT id, {', '.join(_RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,))
            if not rows:
                raise RunNotFoundError(f"no run {run_id} in the log {self.where}")
            cands = self._candidates(tx, [run_id])
        return _run_from_row(rows[0], cands.get(run_id, []))

    def count(self) -> int:
        with self.backend.transaction(write=False) as tx:
            return int(tx.query("SELECT COUNT(*) FROM runs")[0][0])

    def dropped(self, where: LogFilter | None = None) -> list[DroppedRuns]:
        """Summaries of runs that were not recorded, newest first; of the filter only the time range applies
        (a summary counts when its runs' span overlaps it)."""
        where = where or LogFilter()
        conds, params = [], []
        if where.since is not None:
            conds.append("last_at >= ?")
            params.append(where.since)
        if where.until is not None:
            conds.append("first_at < ?")
            params.append(where.until)
        clause = ("WHERE " + " AND ".join(conds)) if conds else ""
        sql = (
            f"SELECT id, {', '.join(_DROP_COLUMNS)} FROM dropped_runs {clause} ORDER BY last_at DESC, id DESC"
        )
        with self.backend.transaction(write=False) as tx:
            rows = tx.query(sql, params)
        return [_dropped_from_row(row) for row in rows]

    def _candidates(self, tx: Tx, run_ids: Sequence[int]) -> dict[int, list[CandidateRecord]]:
        out: dict[int, list[CandidateRecord]] = {}
        for start in range(0, len(run_ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = list(run_ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = tx.query(
                f"SELECT run_id, {', '.join(_CAND_COLUMNS)} FROM candidates WHERE run_id IN ({marks}) "
                "ORDER BY run_id, idx",
                chunk,
            )
            for row in rows:
                out.setdefault(int(row[0]), []).append(_cand_from_row(row[1:]))
        return out

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_log(settings: LogSettings | None = None, *, redact: Redact | None = None) -> RunLog:
    """Open (creating and migrating as needed) the log the settings name. Refuses, without writing anything,
    a corrupted database, an empty file, someone else's database, or one written by a newer polyfuse.
    ``redact`` (e.g. a ``Redactor`` of the provider keys in use) is applied to every text stored."""
    settings = settings or LogSettings()
    backend: Backend
    if settings.url:
        backend = PostgresBackend(settings.url, connect_timeout=min(settings.busy_timeout, 10.0))
    else:
        backend = SqliteBackend(settings.sqlite_path(), busy_timeout=settings.busy_timeout)
    try:
        policy = (
            TextPolicy(settings.max_text_chars, redact) if redact else TextPolicy(settings.max_text_chars)
        )
        return RunLog(backend, store_text=settings.store_text, policy=policy)
    except BaseException:
        backend.close()
        raise


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _run_values(r: RunRecord, p: TextPolicy) -> tuple[Any, ...]:
    """The row of a run; every text through the policy (a no-op for records built with it)."""
    return (
        r.uid, r.created_at, r.source, r.mode, r.judge, r.status, p.text(r.error), p.text(r.prompt),
        r.prompt_hash, p.text(r.answer), r.answer_hash, r.agreement, p.json(r.verdict), p.json(r.request),
        r.prompt_tokens, r.completion_tokens, r.cost, int(r.cost_known), r.wall_time, r.overhead,
        p.json(r.meta),
    )  # fmt: skip


def _cand_values(c: CandidateRecord, p: TextPolicy) -> tuple[Any, ...]:
    return (
        c.role, c.member, c.model, c.answered_by, c.round, c.status, p.text(c.text), c.text_hash,
        c.prompt_tokens, c.completion_tokens, c.cost, c.latency, c.ttft, p.text(c.error), int(c.chosen),
        c.score,
    )  # fmt: skip


def _dropped_from_row(row: Sequence[Any]) -> DroppedRuns:
    data = dict(zip(["id", *_DROP_COLUMNS], row, strict=True))
    data["sources"] = json.loads(data["sources"])
    data["reasons"] = json.loads(data["reasons"])
    return DroppedRuns(**data)


def _run_from_row(row: Sequence[Any], candidates: list[CandidateRecord]) -> RunRecord:
    data = dict(zip(["id", *_RUN_COLUMNS], row, strict=True))
    for key in ("verdict", "request", "meta"):
        raw = data.pop(f"{key}_json")
        data[key] = json.loads(raw) if raw is not None else None
    data["request"] = data["request"] or {}
    data["meta"] = data["meta"] or {}
    data["cost_known"] = bool(data["cost_known"])
    return RunRecord(**data, candidates=candidates)


def _cand_from_row(row: Sequence[Any]) -> CandidateRecord:
    data = dict(zip(_CAND_COLUMNS, row, strict=True))
    data["chosen"] = bool(data["chosen"])
    return CandidateRecord(**data)
