"""What the run log stores (keys redacted, every text capped) and how the server's write queue behaves when the
database does not keep up: bounded, batched, the oldest pending runs dropped and summarised in the log."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conftest import picker
from polyfuse import FusionRequest, fuse
from polyfuse.errors import AllMembersFailedError, UpstreamError
from polyfuse.redaction import Redactor
from polyfuse.store import LogFilter, LogSettings, LogWriter, RunRecord, open_log, read_runs, write_runs
from polyfuse.testing import Reply, ScriptedModel, scripted_hub

KEY = "sk-live-ECHOED-0123456789abcdef"


def _wait(cond, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


async def _leaky_run():
    """A best-of run where the key shows up everywhere an upstream or a user could put it."""
    models = {
        "a": ScriptedModel("a", default=Reply(text=f"Paris. (my key is {KEY}) " + "x" * 50_000)),
        "b": ScriptedModel("b", default=Reply(error=UpstreamError(f"401 Incorrect API key provided: {KEY}"))),
        "judge": ScriptedModel("judge", default=Reply(fn=picker("Paris"))),
    }
    request = FusionRequest.from_prompt(
        f"Capital of France? {KEY}", "scripted/a,scripted/b", judge="scripted/judge"
    )
    return request, await fuse(request, scripted_hub(models))


async def test_every_stored_text_is_redacted_and_capped(tmp_path):
    path = tmp_path / "runs.db"
    request, result = await _leaky_run()
    settings = LogSettings(path=str(path), max_text_chars=1000)
    with open_log(settings, redact=Redactor([KEY])) as log:
        run = log.get(log.record(request, result, source="cli", meta={"note": f"tag {KEY}", KEY: 1}))
        failed = log.get(
            log.record_error(request, AllMembersFailedError({"scripted/b": f"bad key {KEY}"}), source="cli")
        )
    dump = run.model_dump_json() + failed.model_dump_json()
    assert KEY not in dump and KEY not in _db_bytes(path).decode("utf-8", "replace")
    a, b = (c for c in run.candidates if c.role == "member")
    assert b.status == "failed" and b.error == "401 Incorrect API key provided: [redacted]"
    assert run.prompt == "[user] Capital of France? [redacted]" and run.meta == {
        "note": "tag [redacted]",
        "[redacted]": 1,
    }
    assert failed.candidates[0].error == "bad key [redacted]" and "[redacted]" in (failed.error or "")
    # the 50,000-character answer is cut to the cap, says so, and its hash is of the whole (redacted) text
    full = result.candidates[0].text.replace(KEY, "[redacted]")
    assert (
        a.text is not None and len(a.text) <= 1000 and a.text.startswith("Paris. (my key is [redacted]) xxx")
    )
    assert a.text.endswith(f"[... {len(full) - a.text.index(' [...')} more characters not stored]")
    assert a.text_hash == hashlib.sha256(full.encode()).hexdigest()
    assert run.answer is not None and len(run.answer) <= 1000 and run.answer_hash == a.text_hash


async def test_imported_runs_pass_the_same_redaction_and_cap(tmp_path):
    request, result = await _leaky_run()
    with open_log(LogSettings(path=str(tmp_path / "plain.db"), max_text_chars=100_000)) as plain:
        exported = io.StringIO()
        write_runs([plain.get(plain.record(request, result))], exported, "jsonl")
    assert KEY in exported.getvalue()  # a log opened without the key keeps it (nothing to redact with)
    settings = LogSettings(path=str(tmp_path / "team.db"), max_text_chars=500)
    with open_log(settings, redact=Redactor([KEY])) as team:
        team.insert_many(read_runs(io.StringIO(exported.getvalue()), "jsonl"))
        [run] = team.runs()
    assert KEY not in run.model_dump_json()
    assert all(len(c.text or "") <= 500 for c in run.candidates) and len(run.prompt or "") <= 500


# -- the write queue ------------------------------------------------------------------------------------------
def _record(i: int) -> RunRecord:
    return RunRecord(
        mode="vote",
        source="server",
        prompt=f"prompt {i}",
        answer="a" * 100,
        cost=0.01,
        prompt_tokens=3,
        completion_tokens=4,
    )


class _Locked:
    """Another connection holding the SQLite write lock, as a long `polyfuse log import` would."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def _submit_all(writer: LogWriter, records: list[RunRecord]) -> None:
    """Submit from another thread with a deadline: submit must never wait for the database."""
    thread = threading.Thread(target=lambda: [writer.submit(r) for r in records])
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "submit waited for the locked database"


def test_records_are_written_in_batches(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        batches: list[int] = []
        insert_many = log.insert_many
        log.insert_many = lambda records, dropped=None: (
            batches.append(len(records))
            or insert_many(  # type: ignore[method-assign]
                records, dropped
            )
        )
        writer = LogWriter(log, batch=100, linger=30.0)  # waits for a full batch (or close)
        records = [_record(i) for i in range(250)]
        _submit_all(writer, records)
        _wait(lambda: writer.stats().written == 200)
        assert writer.close() and batches == [100, 100, 50]
        assert writer.stats().written == 250 and writer.stats().dropped == 0
        assert {r.prompt for r in log.runs()} == {f"prompt {i}" for i in range(250)}


@pytest.mark.parametrize("bound", ["runs", "chars"])
def test_a_full_queue_drops_the_oldest_runs_and_the_log_says_so(tmp_path, bound):
    path = tmp_path / "runs.db"
    with open_log(LogSettings(path=str(path), busy_timeout=60)) as log:
        limits = {"max_runs": 10} if bound == "runs" else {"max_chars": 10 * 1200}
        writer = LogWriter(log, linger=0.0, **limits)
        lock = _Locked(path)
        records = [_record(i) for i in range(51)]
        writer.submit(records[0])
        _wait(lambda: writer.stats().pending == 0)  # the writer took run 0 and waits for the lock
        _submit_all(writer, records[1:])
        stats = writer.stats()
        assert (stats.pending, stats.dropped, stats.written) == (10, 40, 0)
        assert stats.pending_chars <= 10 * 1200
        lock.release()
        assert writer.close()
        kept = [r.prompt for r in log.runs()]
        [gap] = log.dropped()
    assert sorted(kept) == sorted(["prompt 0", *(f"prompt {i}" for i in range(41, 51))])
    assert gap.runs == 40 and gap.reasons == ["the write queue was full"] and gap.sources == ["server"]
    assert (gap.first_at, gap.last_at) == (records[1].created_at, records[40].created_at)
    assert gap.cost == pytest.approx(0.4) and (gap.prompt_tokens, gap.completion_tokens) == (120, 160)


def test_failed_writes_are_counted_summarised_and_not_retried_forever(tmp_path):
    path = tmp_path / "runs.db"
    errors: list[str] = []
    with open_log(LogSettings(path=str(path), busy_timeout=0.05)) as log:
        writer = LogWriter(log, linger=0.0, on_error=errors.append)
        lock = _Locked(path)
        _submit_all(writer, [_record(i) for i in range(5)])
        _wait(lambda: writer.stats().dropped == 5)
        assert writer.stats().write_errors >= 1 and "database is locked" in (writer.stats().last_error or "")
        assert errors and "could not record" in errors[0]
        lock.release()
        writer.submit(_record(99))
        _wait(lambda: writer.stats().written == 1, seconds=20)  # after the back-off, with the summary
        assert writer.close()
        assert [r.prompt for r in log.runs()] == ["prompt 99"]
        [gap] = log.dropped()
    assert gap.runs == 5 and gap.reasons[0].startswith("writing to the run log failed:")


def test_pending_text_stays_bounded_whatever_arrives(tmp_path):
    path = tmp_path / "runs.db"
    with open_log(LogSettings(path=str(path), busy_timeout=60)) as log:
        writer = LogWriter(log, max_runs=100_000, max_chars=1_000_000, linger=0.0)
        lock = _Locked(path)
        big = [_record(i).model_copy(update={"answer": "y" * 20_000}) for i in range(500)]  # 10 M characters
        writer.submit(big[0])
        _wait(lambda: writer.stats().pending == 0)  # in flight, waiting for the lock
        _submit_all(writer, big[1:])
        stats = writer.stats()
        assert stats.pending_chars <= 1_000_000 and stats.pending == 47 and stats.dropped == 499 - 47
        lock.release()
        assert writer.close()
        assert log.count() + sum(g.runs for g in log.dropped()) == 500


def test_dropped_summaries_respect_the_time_filter(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        from polyfuse.store import DroppedRuns

        old = DroppedRuns.of(
            [_record(0).model_copy(update={"created_at": "2024-01-01T00:00:00.000000Z"})], "x"
        )
        log.record_dropped(old)
        log.record_dropped(DroppedRuns.of([_record(1), _record(2)], "the write queue was full"))
        assert [g.runs for g in log.dropped()] == [2, 1]
        assert [g.runs for g in log.dropped(LogFilter.parse(since="1d"))] == [2]
        assert [g.runs for g in log.dropped(LogFilter.parse(until="2024-06-01"))] == [1]


def test_a_key_is_also_found_in_its_json_escaped_form():
    from polyfuse.store import TextPolicy

    odd = 'k3y"with\\quote'  # a key with characters JSON escapes
    redact = Redactor([odd])
    echoed = json.dumps({"error": {"message": f"bad key {odd}"}})  # an upstream's error body quoting it
    assert odd not in echoed and redact(echoed) == '{"error": {"message": "bad key [redacted]"}}'
    policy = TextPolicy(max_chars=1000, redact=redact)
    stored = policy.json({"reasons": [f"bad key {odd}"], f"{odd}": 1})
    assert stored is not None and odd not in json.loads(stored)["reasons"][0] and "[redacted]" in stored
    assert json.loads(stored) == {"reasons": ["bad key [redacted]"], "[redacted]": 1}


def test_a_run_whose_record_cannot_be_built_is_counted_as_lost(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        writer = LogWriter(log, linger=0.0)
        writer.lost("its record could not be built: ValidationError")
        writer.submit(_record(1))
        assert writer.close()
        assert writer.stats().dropped == 1 and log.count() == 1
        [gap] = log.dropped()
    assert gap.runs == 1 and gap.reasons == ["its record could not be built: ValidationError"]
