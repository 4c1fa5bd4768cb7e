"""Every fusion run is recorded: from the server (a real `polyfuse serve` process) and from code tasks."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from codehelp import make_env
from polyfuse.code.generate import generate
from polyfuse.errors import NoSurvivorsError
from polyfuse.gateway.metrics import sum_samples
from polyfuse.store import LogFilter, open_log
from polyfuse.store.settings import LogSettings
from polyfuse.testing import Reply, ScriptedModel
from polyfuse.testing.upstream import Behaviour, FakeUpstream
from serverkit import ServeProcess

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]
# long-form: a short written answer that agrees with no candidate would be rejected for the chosen one
FUSED = "Fused: both members said hello, so here is one hello from the whole pool for you."
JUDGE = json.dumps(
    {"scores": {}, "consensus": [], "contradictions": [], "agreement": 0.5, "choice": "A", "answer": FUSED}
)


def test_polyfuse_serve_records_each_fusion_and_not_pass_through(tmp_path):
    db = tmp_path / "runs.db"
    with FakeUpstream({"a": Behaviour(text="Hello."), "judge": Behaviour(text=JUDGE)}) as up:
        config = f"""
[log]
path = "{db}"
[providers.up]
base_url = "{up.base_url}"
[presets.duo]
pool = ["up/a", "up/a"]
judge = "up/judge"
mode = "merge"
"""
        with ServeProcess(tmp_path, config) as srv:
            assert f"run log {db}" in srv.logs()
            msgs = [{"role": "user", "content": "Say hello"}]
            for stream in (False, True):
                r = httpx.post(
                    srv.url + "/v1/chat/completions",
                    json={"model": "polyfuse/duo", "messages": msgs, "stream": stream},
                    timeout=60,
                )
                assert r.status_code == 200
            r = httpx.post(
                srv.url + "/v1/chat/completions", json={"model": "up/a", "messages": msgs}, timeout=60
            )
            assert r.status_code == 200
    with open_log(LogSettings(path=str(db))) as runlog:
        runs = runlog.runs(LogFilter())
    assert len(runs) == 2  # the two fusions; the pass-through call is not a fusion run
    assert {r.source for r in runs} == {"server"}
    assert all(r.answer == FUSED and r.mode == "merge" and len(r.candidates) >= 2 for r in runs)


def test_polyfuse_serve_no_log_writes_nothing(tmp_path):
    db = tmp_path / "runs.db"
    with FakeUpstream({"a": Behaviour(text="Hello.")}) as up:
        config = f'[log]\npath = "{db}"\n[providers.up]\nbase_url = "{up.base_url}"\n'
        with ServeProcess(tmp_path, config, args=["--no-log"]) as srv:
            assert "run log off" in srv.logs()
    assert not db.exists()


async def test_code_tasks_record_their_runs_and_failures(tmp_path):
    good = '```python\ndef square(n):\n    """\n    >>> square(3)\n    9\n    """\n    return n * n\n```'
    bad = "```python\ndef square(n) return n\n```"
    models = {
        "good": ScriptedModel("good", default=good),
        "bad": ScriptedModel("bad", default=bad),
        "judge": ScriptedModel("judge", default=Reply(text="{}")),
    }
    runlog = open_log(LogSettings(path=str(tmp_path / "runs.db")))
    env = make_env(models, ["bad", "good"])
    env.run_log, env.task = runlog, "generate"
    result = await generate(env, "square a number")
    assert "n * n" in result.code
    models["good"].default = bad
    with pytest.raises(NoSurvivorsError):
        await generate(env, "square a number")
    runs = runlog.runs(LogFilter())
    runlog.close()
    assert [r.source for r in runs] == ["code", "code"]
    assert {r.meta.get("task") for r in runs} == {"generate"}
    failed, ok = runs  # newest first
    assert ok.answer and "n * n" in ok.answer and failed.error and "no candidate passed" in failed.error
    assert len(failed.candidates) == 2


def test_a_database_that_does_not_keep_up_costs_counted_runs_not_memory(tmp_path):
    # Another process holds the log's write lock (a long import, a sqlite3 shell): the server keeps answering,
    # keeps at most [log] queue_runs runs waiting, counts the rest in /health and summarises them in the log.
    db = tmp_path / "runs.db"
    with FakeUpstream({"a": Behaviour(text="Hello."), "judge": Behaviour(text=JUDGE)}) as up:
        config = f"""
[log]
path = "{db}"
busy_timeout = 120
queue_runs = 5
[gateway]
metrics = true
[providers.up]
base_url = "{up.base_url}"
[presets.duo]
pool = ["up/a", "up/a"]
judge = "up/judge"
mode = "merge"
"""
        with ServeProcess(tmp_path, config) as srv:
            ask = {"model": "polyfuse/duo", "messages": [{"role": "user", "content": "Say hello"}]}

            def health() -> dict:
                return httpx.get(srv.url + "/health", timeout=10).json()["run_log"]

            assert health() == {"pending": 0, "written": 0, "dropped": 0, "write_errors": 0, "queue_runs": 5}
            lock = sqlite3.connect(db, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            first = httpx.post(srv.url + "/v1/chat/completions", json=ask, timeout=30)
            assert first.status_code == 200
            _wait(lambda: health()["pending"] == 0)  # the writer holds run 1 and waits for the lock
            for i in range(20):
                stream = i % 2 == 1
                r = httpx.post(srv.url + "/v1/chat/completions", json={**ask, "stream": stream}, timeout=30)
                assert r.status_code == 200 and "Fused" in r.text
            assert health() == {"pending": 5, "written": 0, "dropped": 15, "write_errors": 0, "queue_runs": 5}
            metrics = httpx.get(srv.url + "/metrics", timeout=10).text  # the run log's queue, as /health says
            assert sum_samples(metrics, "polyfuse_write_queue_depth", queue="runs") == 5
            assert sum_samples(metrics, "polyfuse_write_queue_dropped_total", queue="runs") == 15
            lock.execute("ROLLBACK")
            lock.close()
            _wait(lambda: health()["written"] == 6)
            metrics = httpx.get(srv.url + "/metrics", timeout=10).text
            assert sum_samples(metrics, "polyfuse_write_queue_depth", queue="runs") == 0
            assert sum_samples(metrics, "polyfuse_write_queue_dropped_total", queue="runs") == 15
            assert re.search(r"runs\.db: 1 run\(s\) not recorded so far .*see /health", srv.logs())
    listed = subprocess.run(
        [*POLYFUSE, "log", "list", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "6 run(s) in" in listed.stderr
    assert re.search(r"warning: 15 run\(s\) not recorded \(.* UTC\): the write queue was full", listed.stderr)
    stats = subprocess.run(
        [*POLYFUSE, "log", "stats", "--db", str(db), "--json"], capture_output=True, text=True, timeout=60
    )
    assert json.loads(stats.stdout)["dropped_runs"] == 15 and json.loads(stats.stdout)["runs"] == 6


def _wait(cond, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
