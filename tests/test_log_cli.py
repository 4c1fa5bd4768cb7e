"""``polyfuse run`` records into the run log and ``polyfuse log ...`` reads it back, as real subprocesses over a
real HTTP upstream on loopback; bad databases and bad filters exit 2 with one line."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from polyfuse.testing.upstream import Behaviour, FakeUpstream

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*POLYFUSE, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)


def _judge(choice: str) -> str:
    return json.dumps(
        {
            "scores": {"A": {"score": 9, "reason": "good"}, "B": {"score": 2, "reason": "bad"}},
            "consensus": [],
            "contradictions": [],
            "agreement": 0.4,
            "choice": choice,
        }
    )


@pytest.fixture
def project(tmp_path):
    with FakeUpstream(
        {
            "a": Behaviour(text="Paris", cost=0.001),
            "b": Behaviour(text="Lyon", cost=0.002),
            "judge": Behaviour(text=_judge("A"), cost=0.0005),
            "down": Behaviour(statuses=[500] * 20),
        }
    ) as up:
        (tmp_path / "polyfuse.toml").write_text(
            f"""
default_preset = "team"
[providers.fake]
base_url = "{up.base_url}"
max_retries = 0
[presets.team]
pool = ["fake/a", "fake/b"]
judge = "fake/judge"
mode = "best-of"
[log]
path = "{tmp_path / "log" / "runs.db"}"
"""
        )
        yield tmp_path


def test_runs_are_logged_and_read_back(project):
    first = run("run", "Capital of France?", "--seed", "1", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "logged as run 1 (polyfuse log show 1)" in first.stderr
    assert run("run", "Quick?", "--mode", "vote", "-q", cwd=project).returncode == 0
    assert run("run", "Not logged", "--mode", "vote", "--no-log", cwd=project).returncode == 0
    failed = run("run", "Down?", "--pool", "fake/down", "--mode", "vote", cwd=project)
    assert failed.returncode == 1 and "all 1 pool members failed" in failed.stderr

    listed = run("log", "list", "--json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["mode"], r["status"], r["source"]) for r in runs] == [
        (3, "vote", "failed", "cli"),
        (2, "vote", "ok", "cli"),
        (1, "best-of", "ok", "cli"),
    ]
    assert runs[2]["prompt"] == "[user] Capital of France?" and runs[2]["cost"] == pytest.approx(0.0035)

    shown = run("log", "show", "1", "--json", cwd=project)
    record = json.loads(shown.stdout)
    members = [c for c in record["candidates"] if c["role"] == "member"]
    assert {c["model"]: c["text"] for c in members} == {"fake/a": "Paris", "fake/b": "Lyon"}
    assert [c["model"] for c in record["candidates"] if c["role"] == "judge"] == ["fake/judge"]
    assert sum(c["chosen"] for c in members) == 1 and record["answer"] in ("Paris", "Lyon")

    table = run("log", "show", "1", cwd=project)
    assert table.returncode == 0 and "Capital of France?" in table.stdout and "fake/judge" in table.stdout

    stats = json.loads(run("log", "stats", "--json", cwd=project).stdout)
    by_model = {(m["role"], m["model"]): m for m in stats["models"]}
    assert stats["runs"] == 3
    assert by_model[("member", "fake/a")]["runs"] == 2 and by_model[("member", "fake/a")]["choice_runs"] == 2
    down = by_model[("member", "fake/down")]
    assert (down["calls"], down["failures"], down["failure_rate"]) == (1, 1, 1.0)
    assert by_model[("judge", "fake/judge")]["cost"] == pytest.approx(0.0005)
    text_stats = run("log", "stats", cwd=project)
    assert "fake/down" in text_stats.stdout and "100%" in text_stats.stdout

    only = json.loads(run("log", "list", "--json", "--mode", "best-of", "--since", "1d", cwd=project).stdout)
    assert only["id"] == 1
    assert (
        run("log", "list", "--json", "--model", "fake/judge", "--max-cost", "0.0001", cwd=project).stdout
        == ""
    )


def test_export_to_a_file_and_import_into_another_log(project):
    assert run("run", "Capital of France?", "-q", cwd=project).returncode == 0
    assert run("run", "Again?", "-q", "--mode", "vote", cwd=project).returncode == 0
    out = project / "runs.csv"
    exported = run("log", "export", "--format", "csv", "-o", str(out), cwd=project)
    assert exported.returncode == 0 and "wrote 2 run(s)" in exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["mode"] for r in rows] == ["vote", "best-of"] and rows[1]["models"] == "fake/a fake/b"
    other = project / "other.db"
    imported = run("log", "import", str(out), "--db", str(other), cwd=project)
    assert "imported 2 new run(s) of 2" in imported.stderr, imported.stderr
    assert (
        "imported 0 new run(s) of 2" in run("log", "import", str(out), "--db", str(other), cwd=project).stderr
    )
    a = run("log", "export", cwd=project).stdout.splitlines()
    b = run("log", "export", "--db", str(other), cwd=project).stdout.splitlines()
    assert [json.loads(x) | {"id": 0} for x in a] == [json.loads(x) | {"id": 0} for x in b]


def test_store_text_off_from_config(project):
    config = project / "polyfuse.toml"
    config.write_text(config.read_text() + "store_text = false\n")
    assert run("run", "A secret prompt", "-q", cwd=project).returncode == 0
    record = json.loads(run("log", "show", "1", "--json", cwd=project).stdout)
    assert record["prompt"] is None and len(record["prompt_hash"]) == 64
    assert "secret" not in run("log", "export", cwd=project).stdout


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_corrupted_log_is_refused_by_run_and_log(project):
    db = project / "log" / "runs.db"
    db.parent.mkdir()
    db.write_bytes(b"garbage" * 1000)
    _one_line_exit_2(run("run", "hi", cwd=project), "is not a SQLite database")
    assert "(or skip the log: --no-log)" in run("run", "hi", cwd=project).stderr
    _one_line_exit_2(run("log", "list", cwd=project), "left untouched")
    assert db.read_bytes() == b"garbage" * 1000
    assert run("run", "hi", "--no-log", "-q", cwd=project).returncode == 0


def test_a_newer_log_is_refused(project):
    assert run("run", "hi", "-q", cwd=project).returncode == 0
    db = project / "log" / "runs.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    _one_line_exit_2(run("log", "stats", cwd=project), "schema version 99, newer than this polyfuse")
    _one_line_exit_2(run("run", "hi", cwd=project), "upgrade polyfuse")


@pytest.mark.parametrize(
    "args, message",
    [
        (["log", "list", "--db", "postgresql://me:pw@127.0.0.1:1/db"], "cannot reach the log database"),
        (["log", "list", "--since", "last tuesday"], "cannot read the date 'last tuesday'"),
        (["log", "list", "--limit", "0"], "--limit must be at least 1"),
        (["log", "show", "7"], "no run 7 in the log"),
        (["log", "import", "nope.jsonl"], "no such file: nope.jsonl"),
    ],
)
def test_log_mistakes_exit_2(project, args, message):
    _one_line_exit_2(run(*args, cwd=project), message)
    assert "pw" not in run(*args, cwd=project).stderr.replace("postgresql://me:***", "")


def test_unreachable_database_url_in_config_stops_a_run_before_any_call(project):
    config = project / "polyfuse.toml"
    config.write_text(config.read_text() + 'url = "postgresql://me@127.0.0.1:1/db"\n')
    _one_line_exit_2(
        run("run", "hi", cwd=project), "cannot reach the log database postgresql://me@127.0.0.1:1/db"
    )


def test_a_broken_import_line_is_named(project):
    bad = project / "bad.jsonl"
    bad.write_text('{"mode": "vote"}\n{"mode": 3, "uid": []}\n')
    _one_line_exit_2(run("log", "import", str(bad), cwd=project), "line 2: not a polyfuse run record")
