"""The two databases a run log can live in, behind one small interface: SQLite (default, one file, WAL) and
PostgreSQL (a shared log for a team, through psycopg 3). Database errors are translated here into the
log's own errors, so nothing above sees a driver exception."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from .errors import LogCorruptError, LogError, LogUnavailableError
from .migrations import Dialect
from .settings import redact_url

__all__ = ["Backend", "Tx", "SqliteBackend", "PostgresBackend", "open_backend"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUR_TABLES = ("runs", "candidates", "dropped_runs", "polyfuse_schema")


class Tx(ABC):
    """One open transaction. SQL uses ``?`` placeholders on both databases."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many rows (the drivers' executemany: one prepare, no per-row round trip)."""
        for row in rows:
            self.execute(sql, row)


class Backend(ABC):
    dialect: Dialect
    where: str  # for messages; never carries a password

    @abstractmethod
    def transaction(self, *, write: bool) -> AbstractContextManager[Tx]:
        """A transaction; a write one holds the database's write lock from its start (no lock upgrades)."""

    @abstractmethod
    def schema_version(self, tx: Tx) -> int: ...

    @abstractmethod
    def set_schema_version(self, tx: Tx, version: int) -> None: ...

    @abstractmethod
    def tables(self, tx: Tx) -> set[str]:
        """Tables that would clash with a new log (read only): in a SQLite file, which is the log's alone,
        every table; in a shared PostgreSQL database, those with the names a polyfuse log uses."""

    @abstractmethod
    def reopen_spec(self) -> dict[str, Any]:
        """What another process needs to open this database itself (``open_backend``); may hold a password,
        so it is passed over a pipe, never on a command line."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Refuse a damaged database before anything is written to it (where the database can tell)."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Settings that write to the database (SQLite's WAL switch): called only once the database is known
        to be a polyfuse log or empty."""

    @abstractmethod
    def close(self) -> None: ...


# -- SQLite ---------------------------------------------------------------------------------------------------
class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, tuple(params)).fetchall())

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, [tuple(r) for r in rows])


class SqliteBackend(Backend):
    """One file in WAL mode: readers never block the writer; writers from several processes queue on the
    write lock (``BEGIN IMMEDIATE``) for up to ``busy_timeout`` seconds instead of failing."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.where = str(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()  # one connection, shared by threads (the server's writer thread)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogUnavailableError(
                f"cannot create the log directory {path.parent}: {exc.strerror}"
            ) from None
        if not path.exists():
            self._create()
        self._check_header()
        try:
            self.conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise LogUnavailableError(f"cannot open the log database {path}: {exc}") from None
        with self._translate():  # connection settings only: nothing here writes to the file
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self.conn.execute("PRAGMA synchronous = NORMAL")  # durable at each WAL checkpoint
            self.conn.execute("PRAGMA foreign_keys = ON")

    def _create(self) -> None:
        """A new log is made whole under a temporary name (SQLite header written, WAL mode set) and linked into
        place, so a log file never exists half-made: a zero-length file is never ours, and of several processes
        creating the same log at once exactly one file wins."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.new")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # writes the header: the file is a database now
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if not self.path.exists():  # no hard links on this file system
                    os.replace(tmp, self.path)
        except (sqlite3.Error, OSError) as exc:
            raise LogUnavailableError(f"cannot create the log database {self.path}: {exc}") from None
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)

    def _check_header(self) -> None:
        """Refuse a file that is not SQLite at all (or is empty) before sqlite could touch it."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise LogUnavailableError(f"cannot read the log database {self.path}: {exc.strerror}") from None
        if not head:
            raise LogCorruptError(
                f"{self.path} is an empty file, not a polyfuse log (polyfuse never leaves one); it was left "
                "untouched: delete it or set [log] path to another file"
            )
        if head != _SQLITE_MAGIC:
            raise LogCorruptError(
                f"{self.path} is not a SQLite database (corrupted or another kind of file); it was left "
                "untouched: move it away or set [log] path to another file"
            )

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "malformed" in str(exc) or "not a database" in str(exc):
                raise self._corrupt(exc) from None
            raise LogUnavailableError(f"log database {self.path}: {exc}") from None
        except sqlite3.IntegrityError as exc:
            raise LogError(f"log database {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def _corrupt(self, exc: Exception) -> LogCorruptError:
        return LogCorruptError(
            f"the log database {self.path} is corrupted ({exc}); it was left untouched: move it away "
            "or set [log] path to another file"
        )

    def reopen_spec(self) -> dict[str, Any]:
        return {"path": str(self.path), "busy_timeout": self.busy_timeout}

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Tx]:
        with self._lock, self._translate():
            self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def schema_version(self, tx: Tx) -> int:
        return int(tx.query("PRAGMA user_version")[0][0])

    def set_schema_version(self, tx: Tx, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")

    def check(self) -> None:
        """Refuse a damaged file before writing to it: ``quick_check`` reads every page (milliseconds for a
        log of a few thousand runs), so a smashed page is found now rather than by a later insert."""
        with self.transaction(write=False) as tx:
            problems = [str(r[0]) for r in tx.query("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise self._corrupt(Exception("; ".join(problems)))

    def tables(self, tx: Tx) -> set[str]:
        rows = tx.query("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")}

    def prepare(self) -> None:
        """WAL mode (a persistent setting, so a write): readers never block the writer. A log polyfuse
        created is in WAL mode from birth; this converts a log made otherwise."""
        with self._lock, self._translate():
            self.conn.execute("PRAGMA journal_mode = WAL")

    def close(self) -> None:
        with self._lock:
            self.conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------------------------
class _PgTx(Tx):
    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cur.execute(sql.replace("?", "%s"), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(sql.replace("?", "%s"), tuple(params))
        return list(self.cur.fetchall())

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])


class PostgresBackend(Backend):
    """A shared log on a PostgreSQL server. Concurrent writers are ordinary transactions; migrations take an
    advisory lock so only one client applies them."""

    dialect: Dialect = "postgres"
    _MIGRATION_LOCK = 0x706F6C79  # "poly": the advisory lock id guarding schema changes

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.where = redact_url(url)
        self._url, self._connect_timeout = url, connect_timeout
        self._lock = threading.Lock()
        try:
            import psycopg
        except ImportError:
            raise LogUnavailableError(
                "a postgresql:// log needs the psycopg driver: pip install 'polyfuse[postgres]'"
            ) from None
        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(url, connect_timeout=max(1, int(connect_timeout)), autocommit=False)
        except psycopg.Error as exc:
            reason = " ".join(line.strip() for line in str(exc).strip().splitlines()) or "connection failed"
            raise LogUnavailableError(f"cannot reach the log database {self.where}: {reason}") from None

    def reopen_spec(self) -> dict[str, Any]:
        return {"url": self._url, "connect_timeout": self._connect_timeout}

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Tx]:
        psycopg = self._psycopg
        with self._lock:
            try:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    yield _PgTx(cur)
            except psycopg.OperationalError as exc:
                raise LogUnavailableError(f"log database {self.where}: {str(exc).strip()}") from None
            except psycopg.IntegrityError as exc:
                raise LogError(f"log database {self.where}: {str(exc).strip()}") from None

    def schema_version(self, tx: Tx) -> int:
        """The version, read without creating anything (0 without a ``polyfuse_schema`` table); holds the
        migration lock until the transaction ends, so concurrent openers migrate one after the other."""
        tx.execute("SELECT pg_advisory_xact_lock(?)", (self._MIGRATION_LOCK,))
        if "polyfuse_schema" not in self.tables(tx):  # (to_regclass could answer from a stale catalog cache)
            return 0
        rows = tx.query("SELECT version FROM polyfuse_schema")
        return int(rows[0][0]) if rows else 0

    def set_schema_version(self, tx: Tx, version: int) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS polyfuse_schema (version INTEGER NOT NULL)")
        tx.execute("DELETE FROM polyfuse_schema")
        tx.execute("INSERT INTO polyfuse_schema (version) VALUES (?)", (version,))

    def tables(self, tx: Tx) -> set[str]:
        marks = ", ".join("?" * len(_OUR_TABLES))
        rows = tx.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            f"AND table_name IN ({marks})",
            _OUR_TABLES,
        )
        return {str(r[0]) for r in rows}

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def open_backend(spec: dict[str, Any]) -> Backend:
    """The database a ``reopen_spec`` names (no migrations: its owner already ran them)."""
    if spec.get("url"):
        return PostgresBackend(str(spec["url"]), connect_timeout=float(spec.get("connect_timeout", 10.0)))
    return SqliteBackend(Path(str(spec["path"])), busy_timeout=float(spec.get("busy_timeout", 30.0)))
