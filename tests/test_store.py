"""The run log on SQLite and on a real PostgreSQL server started here: records, migrations, concurrent
writers from several processes, filters, stats, export/import round trips, and refusal of bad databases."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import picker, write_json
from polyfuse import FusionRequest, fuse
from polyfuse.errors import AllMembersFailedError, UpstreamError
from polyfuse.store import (
    SCHEMA_VERSION,
    LogCorruptError,
    LogFilter,
    LogSettings,
    LogUnavailableError,
    LogVersionError,
    RunNotFoundError,
    migrate,
    model_stats,
    open_log,
    read_runs,
    write_runs,
)
from polyfuse.store.backends import PostgresBackend, SqliteBackend
from polyfuse.store.migrations import MIGRATIONS
from polyfuse.testing import Reply, ScriptedModel, scripted_hub

POOL = "scripted/a,scripted/b,scripted/c"


def _backend(settings: LogSettings):
    return PostgresBackend(settings.url) if settings.url else SqliteBackend(settings.sqlite_path())


def _pool(**judge_reply) -> dict[str, ScriptedModel]:
    return {
        "a": ScriptedModel("a", default=Reply(text="Paris", cost=0.001)),
        "b": ScriptedModel("b", default=Reply(text="Paris, France.", cost=0.002)),
        "c": ScriptedModel("c", default=Reply(text="Lyon", cost=0.0005)),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("France"), cost=0.0001)),
    }


async def _runs():
    """Four real fusion results: best-of, vote, debate (3 rounds), and one where every member failed."""
    out = []
    for mode, extra in (("best-of", {}), ("vote", {}), ("debate", {"rounds": 2})):
        models = _pool()
        if mode == "debate":
            models["judge"].default = Reply(text=write_json("Paris."), cost=0.0001)
        request = FusionRequest.from_prompt(
            "Capital of France?", POOL, judge="scripted/judge", mode=mode, **extra
        )
        out.append((request, await fuse(request, scripted_hub(models))))
    broken = {"a": ScriptedModel("a", default=Reply(error=UpstreamError("boom")))}
    request = FusionRequest.from_prompt("Capital of Italy?", "scripted/a", mode="vote")
    try:
        await fuse(request, scripted_hub(broken))
    except AllMembersFailedError as exc:  # what a failed run logs
        out.append((request, exc))
    return out


def _record_all(log, runs) -> list[int]:
    ids = []
    for request, outcome in runs:
        if isinstance(outcome, Exception):
            ids.append(log.record_error(request, outcome, source="cli"))
        else:
            ids.append(log.record(request, outcome, source="code", meta={"tag": outcome.mode}))
    return ids


async def test_a_run_is_recorded_whole(settings):
    runs = await _runs()
    with open_log(settings) as log:
        ids = _record_all(log, runs)
        best, vote_, debate, failed = (log.get(i) for i in ids)
    request, result = runs[0]
    assert best.mode == "best-of" and best.source == "code" and best.judge == "scripted/judge"
    assert best.prompt == "[user] Capital of France?" and best.answer == "Paris, France."
    assert best.meta == {"tag": "best-of"}
    assert best.request["pool"][0] == {"id": "scripted/a", "model": "scripted/a", "params": {}}
    members = [c for c in best.candidates if c.role == "member"]
    assert [(c.model, c.text, c.chosen) for c in members] == [
        ("scripted/a", "Paris", False),
        ("scripted/b", "Paris, France.", True),
        ("scripted/c", "Lyon", False),
    ]
    assert [c.cost for c in members] == [0.001, 0.002, 0.0005]
    assert all(c.latency > 0 and c.completion_tokens > 0 for c in members)
    judges = [c for c in best.candidates if c.role == "judge"]
    assert len(judges) == 1 and judges[0].model == "scripted/judge" and judges[0].cost == 0.0001
    assert best.cost == pytest.approx(result.cost) and best.total_tokens == result.usage.total_tokens
    assert best.agreement == result.agreement and best.verdict["choice"] == "scripted/b"
    assert vote_.judge is None and [c.chosen for c in vote_.candidates].count(True) == 1
    assert sorted({c.round for c in debate.candidates if c.role == "member"}) == [0, 1, 2]
    assert len([c for c in debate.candidates if c.role == "member"]) == 9
    assert failed.status == "failed" and "boom" in failed.error and failed.answer is None
    assert [(c.model, c.status, c.error) for c in failed.candidates] == [("scripted/a", "failed", "boom")]


async def test_text_storage_off_keeps_only_hashes(settings, tmp_path):
    settings = settings.model_copy(update={"store_text": False})
    runs = await _runs()
    with open_log(settings) as log:
        ids = _record_all(log, runs)
        best = log.get(ids[0])
        dump = log.runs()
    assert best.prompt is None and best.answer is None
    assert best.prompt_hash and len(best.answer_hash) == 64
    assert all(c.text is None and c.text_hash for c in best.candidates)
    assert all(s["reason"] == "" for s in best.verdict["scores"])
    text = "".join(r.model_dump_json() for r in dump)
    for secret in ("Capital of France", "Paris", "Lyon", "right"):
        assert secret not in text
    if settings.path:  # nothing in the file itself either
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("runs.db*"))
        assert len(raw) > 4096
        assert b"Capital of France" not in raw and b"Lyon" not in raw


async def test_filters_by_model_mode_date_cost_and_status(settings):
    runs = await _runs()
    with open_log(settings) as log:
        ids = _record_all(log, runs)

        def found(**kw):
            return [r.id for r in log.runs(LogFilter.parse(**kw))]

        assert found() == ids[::-1]  # newest first
        assert found(mode="debate") == [ids[2]]
        assert found(model="scripted/judge") == [ids[2], ids[0]]  # judges count as models too
        assert found(model="scripted/a", status="failed") == [ids[3]]
        assert found(source="cli") == [ids[3]]
        assert found(min_cost=0.00355) == [ids[2], ids[0]]
        assert found(max_cost=0.00351) == [ids[3], ids[1]]
        assert found(since="2000-01-01", until="2999-12-31") == ids[::-1]
        assert found(until="2000-01-01") == [] and found(since="1d") == ids[::-1]
        assert found(limit=2) == [ids[3], ids[2]]
        assert found(model="100%_") == []  # LIKE wildcards are literal


async def test_stats_per_model(settings):
    runs = await _runs()
    with open_log(settings) as log:
        _record_all(log, runs)
        stats = {(s.role, s.model): s for s in model_stats(log.runs())}
    a = stats[("member", "scripted/a")]
    assert (a.runs, a.calls, a.failures) == (4, 6, 1)  # debate: 3 calls; the failed run: 1
    assert a.failure_rate == pytest.approx(1 / 6)
    assert a.cost == pytest.approx(0.001 * 5)
    b = stats[("member", "scripted/b")]
    assert (b.chosen, b.choice_runs) == (1, 2)  # chosen by the judge in best-of, not in the vote
    assert (stats[("member", "scripted/a")].chosen, stats[("member", "scripted/c")].chosen) == (1, 0)
    judge = stats[("judge", "scripted/judge")]
    assert (judge.runs, judge.calls, judge.chosen_rate) == (2, 2, None)
    assert b.median_latency is not None and b.median_latency > 0


async def test_export_import_round_trips_jsonl_and_csv(settings, tmp_path):
    runs = await _runs()
    with open_log(settings) as log:
        _record_all(log, runs)
        original = log.runs()
    for fmt in ("jsonl", "csv"):
        buf = io.StringIO()
        assert write_runs(original, buf, fmt) == 4
        back = list(read_runs(io.StringIO(buf.getvalue()), fmt))
        assert back == original, fmt
        # into a second log and out again: the same records, under that log's own ids
        with open_log(LogSettings(path=str(tmp_path / f"copy-{fmt}.db"))) as copy:
            copy.insert_many(back)
            copy.insert_many(back)  # importing twice adds nothing: runs are known by uid
            again = copy.runs()
        assert [r.model_dump(exclude={"id"}) for r in again] == [
            r.model_dump(exclude={"id"}) for r in original
        ]


def test_migrates_an_empty_database_once(settings):
    with open_log(settings) as log:
        assert log.version == SCHEMA_VERSION == MIGRATIONS[-1].version
    with open_log(settings) as log:  # reopening applies nothing and keeps data
        assert log.count() == 0
        backend = log.backend
        with backend.transaction(write=False) as tx:
            assert backend.schema_version(tx) == SCHEMA_VERSION


def test_migrates_a_log_from_the_older_schema(settings):
    backend = _backend(settings)
    assert migrate(backend, upto=1) == 1
    with backend.transaction(write=True) as tx:  # a run written by a version-1 polyfuse
        tx.execute(
            "INSERT INTO runs (uid, created_at, source, mode, judge, status, request_json, prompt_tokens, "
            "completion_tokens, cost, cost_known, wall_time, overhead) "
            "VALUES ('old', '2024-01-01T00:00:00.000000Z', 'cli', 'vote', NULL, 'ok', '{}', 3, 4, 0.5, 1, 1.0, 0.1)"
        )
    with pytest.raises(Exception, match="meta_json"), backend.transaction(write=False) as tx:
        tx.query("SELECT meta_json FROM runs")
    backend.close()
    with open_log(settings) as log:
        assert log.version == SCHEMA_VERSION
        [old] = log.runs()
        assert (old.uid, old.meta, old.total_tokens, old.cost) == ("old", {}, 7, 0.5)
        assert log.runs(LogFilter(mode="vote"))[0].uid == "old"


def test_a_newer_schema_is_refused_and_left_untouched(settings):
    with open_log(settings):
        pass
    backend = _backend(settings)
    with backend.transaction(write=True) as tx:
        backend.set_schema_version(tx, SCHEMA_VERSION + 5)
    backend.close()
    with pytest.raises(
        LogVersionError,
        match=rf"schema version {SCHEMA_VERSION + 5}, newer than this polyfuse understands \({SCHEMA_VERSION}\)",
    ):
        open_log(settings)
    backend = _backend(settings)
    with backend.transaction(write=False) as tx:
        assert backend.schema_version(tx) == SCHEMA_VERSION + 5
    backend.close()


def test_someone_elses_database_is_refused(settings):
    backend = _backend(settings)
    with backend.transaction(write=True) as tx:
        tx.execute("CREATE TABLE runs (x INTEGER)")
    backend.close()
    with pytest.raises(LogCorruptError, match="no polyfuse log schema"):
        open_log(settings)


_WRITER = """
import asyncio, sys
from polyfuse import FusionRequest, fuse
from polyfuse.store import LogSettings, open_log
from polyfuse.testing import ScriptedModel, scripted_hub

settings = LogSettings.model_validate_json(sys.argv[1])
proc, count = sys.argv[2], int(sys.argv[3])

async def one(i):
    hub = scripted_hub({"a": ScriptedModel("a", default=f"answer {proc}-{i}"), "b": ScriptedModel("b", default="x")})
    request = FusionRequest.from_prompt(f"prompt {proc}-{i}", "scripted/a,scripted/b", mode="vote")
    return request, await fuse(request, hub)

with open_log(settings) as log:
    for i in range(count):
        request, result = asyncio.run(one(i))
        log.record(request, result, source=f"proc-{proc}")
"""


def test_concurrent_writers_in_several_processes_lose_no_run(settings):
    procs, each = 4, 40
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, settings.model_dump_json(), str(p), str(each)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(procs)
    ]
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    with open_log(settings) as log:
        runs = log.runs()
    assert len(runs) == procs * each
    prompts = {r.prompt for r in runs}
    assert prompts == {f"[user] prompt {p}-{i}" for p in range(procs) for i in range(each)}
    assert len({r.id for r in runs}) == procs * each
    assert all(len(r.candidates) == 2 and r.candidates[0].text == r.answer for r in runs)


def test_missing_run_is_a_user_error(settings):
    with open_log(settings) as log, pytest.raises(RunNotFoundError, match="no run 42"):
        log.get(42)


# -- SQLite files that are not a usable log -------------------------------------------------------------------
def test_garbage_file_is_refused_and_not_overwritten(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(LogCorruptError, match="not a SQLite database"):
        open_log(LogSettings(path=str(path)))
    assert path.read_bytes() == before and not (tmp_path / "runs.db-wal").exists()


async def test_damaged_pages_are_reported_as_corruption(tmp_path):
    path = tmp_path / "runs.db"
    runs = await _runs()
    with open_log(LogSettings(path=str(path))) as log:
        for _ in range(30):
            _record_all(log, runs)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page : page * 4] = b"\xff" * (page * 3)  # smash pages 2-4 (b-tree pages), keep the header
    path.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError, match="corrupted"), open_log(LogSettings(path=str(path))) as log:
        log.runs()
    assert path.read_bytes() == bytes(data)


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LogUnavailableError, match="cannot create the log directory"):
        open_log(LogSettings(path=str(blocker / "sub" / "runs.db")))


def test_unreachable_postgres_url_is_a_clear_error():
    with pytest.raises(
        LogUnavailableError, match=r"cannot reach the log database postgresql://u:\*\*\*@127\.0\.0\.1:1/x"
    ):
        open_log(LogSettings(url="postgresql://u:secret@127.0.0.1:1/x"))


def test_settings_validate_the_url():
    with pytest.raises(ValueError, match="postgresql:// URL"):
        LogSettings(url="mysql://x")
    assert json.loads(LogSettings(path="/x").model_dump_json())["path"] == "/x"


def test_dropped_run_summaries_round_trip(settings):
    from polyfuse.store import DroppedRuns, LogWriter, RunRecord

    gap = DroppedRuns(
        first_at="2025-06-01T10:00:00.000000Z",
        last_at="2025-06-01T10:05:00.000000Z",
        runs=3,
        prompt_tokens=30,
        completion_tokens=40,
        cost=0.5,
        sources=["server"],
        reasons=["the write queue was full"],
    )
    with open_log(settings) as log:
        log.record_dropped(gap)
        writer = LogWriter(log, max_runs=1, linger=0.0)
        writer.lost("its record could not be built: ValidationError")
        writer.submit(RunRecord(mode="vote", source="server", prompt="kept"))
        assert writer.close()
        stored = log.dropped()
        assert [r.prompt for r in log.runs()] == ["kept"]
        assert [g.runs for g in log.dropped(LogFilter.parse(until="2025-06-02"))] == [3]
    assert len(stored) == 2 and stored[1].model_dump(exclude={"id", "recorded_at"}) == gap.model_dump(
        exclude={"id", "recorded_at"}
    )
    assert stored[0].runs == 1 and stored[0].reasons == ["its record could not be built: ValidationError"]
