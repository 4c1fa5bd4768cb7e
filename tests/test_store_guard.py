"""A SQLite file that is not a polyfuse log is refused before a single byte of it changes (no WAL switch, no
schema), an empty file is refused rather than initialised, and a new log never exists half-made: several
processes creating it at once all end up on one whole log. The CLI says so in one line and exits 2."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from polyfuse.store import SCHEMA_VERSION, LogCorruptError, LogSettings, open_log

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]


def _snapshot(path: Path) -> tuple[bytes, list[str]]:
    """The file's bytes and what else sits next to it (a -wal or -shm file would be a write)."""
    return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())


def _foreign(path: Path, *, user_version: int = 0, wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users (email) VALUES ('ada@example.org')")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("user_version", [0, 1, SCHEMA_VERSION + 7])
def test_someone_elses_sqlite_file_is_refused_before_anything_is_written(tmp_path, user_version):
    path = tmp_path / "app.db"
    _foreign(path, user_version=user_version)
    before = _snapshot(path)
    assert before[0][18:20] == b"\x01\x01"  # a rollback-journal database: WAL mode would set these to 2
    with pytest.raises(LogCorruptError, match="left untouched") as info:
        open_log(LogSettings(path=str(path)))
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert _snapshot(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT email FROM users").fetchall() == [("ada@example.org",)]
    assert conn.execute("PRAGMA user_version").fetchone() == (user_version,)
    conn.close()


def test_a_foreign_wal_database_keeps_its_bytes_and_tables(tmp_path):
    path = tmp_path / "app.db"
    _foreign(path, wal=True)
    before = path.read_bytes()
    with pytest.raises(LogCorruptError, match=r"holds tables \(users\) but no polyfuse log schema"):
        open_log(LogSettings(path=str(path)))
    assert path.read_bytes() == before


def test_a_zero_length_file_is_refused_not_initialised(tmp_path):
    path = tmp_path / "runs.db"
    path.touch()
    with pytest.raises(LogCorruptError, match="is an empty file, not a polyfuse log") as info:
        open_log(LogSettings(path=str(path)))
    assert "delete it" in str(info.value)
    assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]


def test_the_cli_refuses_foreign_and_empty_files_with_one_line_and_exit_2(tmp_path):
    foreign, empty = tmp_path / "app.db", tmp_path / "empty.db"
    _foreign(foreign)
    empty.touch()
    for path, message in ((foreign, "no polyfuse log schema"), (empty, "is an empty file")):
        before = _snapshot(path)
        for args in (["log", "list", "--db", str(path)], ["log", "stats", "--db", str(path)]):
            done = subprocess.run([*POLYFUSE, *args], capture_output=True, text=True, timeout=60)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr
        assert _snapshot(path) == before


def test_a_new_log_is_created_whole_in_wal_mode_without_leftovers(tmp_path):
    path = tmp_path / "sub" / "runs.db"
    with open_log(LogSettings(path=str(path))) as log:
        assert log.version == SCHEMA_VERSION
    assert path.read_bytes()[18:20] == b"\x02\x02"  # WAL mode from birth
    assert sorted(p.name for p in path.parent.iterdir()) == ["runs.db"]  # no temporary file left behind


_OPENER = """
import sys
from polyfuse.store import LogSettings, open_log
with open_log(LogSettings(path=sys.argv[1])) as log:
    print(log.version)
"""


def test_processes_creating_the_same_log_at_once_share_one_file(tmp_path):
    # Before a log file existed only once it was whole, a second process could find the first one's
    # zero-length file and, now that an empty file is refused, fail: here 6 racing openers all succeed.
    for attempt in range(3):
        path = tmp_path / f"race{attempt}" / "runs.db"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _OPENER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(6)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            assert out.decode().strip() == str(SCHEMA_VERSION)
        assert sorted(os.listdir(path.parent)) == ["runs.db"]
