"""Usage records: the bounded batching writer, the report per key/team/model/preset, and ``polyfuse usage``
in its three formats (a real subprocess on a real SQLite log)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from polyfuse.gateway.keystore import KeyStore
from polyfuse.gateway.ledger import DbBudget
from polyfuse.gateway.report import usage_report
from polyfuse.gateway.settings import TeamSettings
from polyfuse.gateway.usage import UsageRecord, UsageWriter
from polyfuse.store import LogSettings, Suggestion, open_log, record_acceptance, record_suggestion

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]


def _records(ana: str, bob: str) -> list[UsageRecord]:
    day = "2026-11-20T10:00:00.000000Z"
    late = "2026-11-24T10:00:00.000000Z"
    return [
        UsageRecord("chat", "up/fast", 200, ana, "research", latency=0.1, prompt_tokens=10,
                    completion_tokens=5, cost=0.01, created_at=day),
        UsageRecord("chat", "polyfuse/trio", 200, ana, "research", preset="trio", mode="best-of",
                    latency=0.9, prompt_tokens=40, completion_tokens=20, cost=0.04, created_at=late),
        UsageRecord("chat", "polyfuse/trio", 200, ana, "research", preset="trio", mode="best-of", cached=True,
                    latency=0.002, created_at=late),
        UsageRecord("chat", "up/fast", 429, bob, "platform", error="rate_limited", created_at=late),
        UsageRecord("chat", "up/fast", 502, bob, "platform", error="upstream_error", latency=0.3,
                    created_at=late),
        UsageRecord("chat", "up/slow", 200, bob, "platform", latency=0.5, prompt_tokens=1,
                    completion_tokens=1, cost=0.2, cost_known=False, created_at=late),
    ]  # fmt: skip


@pytest.fixture
def populated(tmp_path):
    settings = LogSettings(path=str(tmp_path / "runs.db"))
    with open_log(settings) as log:
        store = KeyStore(log.backend, {"research": TeamSettings(), "platform": TeamSettings()})
        ana, _ = store.create("research", name="ana")
        bob, _ = store.create("platform")
        from polyfuse.gateway.usage import insert_usage

        insert_usage(log.backend, _records(ana.id, bob.id))
        for i, model in enumerate(["up/fast", "up/fast", "local/smollm2-135m"]):
            shown = Suggestion(run=f"r{i}", mode="single", model=model, member=model, latency=0.2,
                               created_at="2026-11-24T11:00:00.000000Z")  # fmt: skip
            record_suggestion(log, shown)
            if i == 1:
                assert record_acceptance(log, shown.uid)
        yield log, ana.id, bob.id, tmp_path


def test_report_by_each_grouping(populated):
    log, ana, bob, _ = populated
    by_key = {r.group: r for r in usage_report(log.backend, "key")}
    a, b = by_key[ana], by_key[bob]
    assert (a.requests, a.ok, a.refused, a.failed, a.cached) == (3, 3, 0, 0, 1)
    assert (b.requests, b.ok, b.refused, b.failed) == (3, 1, 1, 1)
    assert a.cost == pytest.approx(0.05) and a.cost_known and not b.cost_known
    assert (a.prompt_tokens, a.completion_tokens) == (50, 25)
    assert a.label == "ana (research)" and b.label == "platform"
    assert a.p50 == 0.1 and a.p90 == pytest.approx(0.74)  # answered requests only: 0.002, 0.1, 0.9
    assert list(by_key) == [bob, ana]  # most expensive first

    teams = {r.group: r.requests for r in usage_report(log.backend, "team")}
    assert teams == {"research": 3, "platform": 3}
    by_model = usage_report(log.backend, "model")
    models = {r.group: r.requests for r in by_model}
    assert models == {"up/fast": 3, "polyfuse/trio": 2, "up/slow": 1, "local/smollm2-135m": 0}
    # editor suggestions (recorded by the language server, without a key) show per model only
    accepted = {r.group: (r.suggestions_shown, r.suggestions_accepted) for r in by_model}
    assert accepted == {
        "up/fast": (2, 1),
        "polyfuse/trio": (0, 0),
        "up/slow": (0, 0),
        "local/smollm2-135m": (1, 0),
    }
    assert all(r.suggestions_shown == 0 for r in usage_report(log.backend, "key"))
    early = usage_report(log.backend, "model", until="2026-11-21T00:00:00.000000Z")
    assert {r.group: r.suggestions_shown for r in early} == {"up/fast": 0}
    presets = {r.group: r.requests for r in usage_report(log.backend, "preset")}
    assert presets == {"trio": 2, "-": 4}
    recent = usage_report(log.backend, "team", since="2026-11-21T00:00:00.000000Z")
    assert {r.group: r.requests for r in recent} == {"research": 2, "platform": 3}


def _usage(tmp_path, *args):
    return subprocess.run(
        [*POLYFUSE, "usage", "--db", str(tmp_path / "runs.db"), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_usage_cli_formats(populated):
    _, ana, bob, tmp_path = populated
    out = _usage(tmp_path, "--by", "team", "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["by"] == "team" and [r["group"] for r in data["rows"]] == ["platform", "research"]
    assert data["rows"][1]["cost"] == pytest.approx(0.05)
    assert json.loads(_usage(tmp_path, "--by", "team", "--json").stdout) == data  # --json: --format json
    clash = _usage(tmp_path, "--json", "--format", "csv")
    assert clash.returncode == 2 and "--json and --format csv" in clash.stderr
    rows = list(csv.DictReader(io.StringIO(_usage(tmp_path, "--by", "model", "--format", "csv").stdout)))
    assert {r["group"]: int(r["requests"]) for r in rows} == {
        "up/slow": 1,
        "polyfuse/trio": 2,
        "up/fast": 3,
        "local/smollm2-135m": 0,
    }
    models = _usage(tmp_path, "--by", "model")
    assert "1/2 (50%)" in models.stdout and "0/1 (0%)" in models.stdout  # suggestions accepted
    table = _usage(tmp_path, "--since", "2026-11-21")
    assert ana in table.stdout and bob in table.stdout and "ana (research)" in table.stdout
    assert "5 request(s)" in table.stderr  # the one of 2026-11-20 is left out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--since", "yesterday"], "cannot read the date 'yesterday'"), (["--by", "color"], "Invalid value")],
)
def test_usage_bad_input_exits_2(populated, args, message):
    out = _usage(populated[3], *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


async def test_writer_batches_charges_and_drops_the_oldest_when_full(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        writer = UsageWriter(log.backend, capacity=10, batch=4)
        for i in range(25):  # all queued before the writer task gets to run: 15 are dropped
            writer.add(UsageRecord("chat", f"m{i}", 200, charges=(("key:a", "2026-11", 0.5),)))
        assert writer.depth == 10 and writer.dropped == 15
        await writer.aclose()
        assert writer.written == 10 and writer.depth == 0
        with log.backend.transaction(write=False) as tx:
            models = [r[0] for r in tx.query("SELECT model FROM api_usage ORDER BY id")]
        assert models == [f"m{i}" for i in range(15, 25)]  # the newest survived, in order
        assert DbBudget(log.backend, 900).spent("key:a", "2026-11") == pytest.approx(5.0)


async def test_a_killed_writer_process_costs_one_batch_and_is_started_again(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        writer = UsageWriter(log.backend, capacity=100, batch=100, interval=0.01)
        writer.add(UsageRecord("chat", "first", 200))
        await writer.flush()
        helper = writer.sink._proc
        assert writer.written == 1 and helper is not None and writer.sink.started == 1
        for sig in (signal.SIGINT, signal.SIGTERM):  # a stop sent to the whole process group: ignored
            helper.send_signal(sig)
        writer.add(UsageRecord("chat", "second", 200))
        await asyncio.wait_for(writer.flush(), 10)
        assert writer.written == 2 and writer.sink.started == 1
        helper.kill()  # noticed before the next batch: a new helper writes it, nothing lost
        await asyncio.wait_for(helper.wait(), 10)
        writer.add(UsageRecord("chat", "third", 200))
        await asyncio.wait_for(writer.flush(), 10)
        assert writer.written == 3 and writer.dropped == 0 and writer.sink.started == 2
        writer.sink._proc.kill()  # dies under the batch being sent: that batch is lost, counted, warned
        writer.add(UsageRecord("chat", "lost", 200))
        await asyncio.wait_for(writer.flush(), 10)
        assert writer.dropped == 1 and writer.written == 3
        writer.add(UsageRecord("chat", "fourth", 200))
        await asyncio.wait_for(writer.aclose(), 30)
        assert writer.written == 4 and writer.sink.started == 3
        with log.backend.transaction(write=False) as tx:
            models = [r[0] for r in tx.query("SELECT model FROM api_usage ORDER BY id")]
        assert models == ["first", "second", "third", "fourth"]


async def test_a_database_error_in_the_writer_process_drops_the_batch_with_a_warning(tmp_path, caplog):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        writer = UsageWriter(log.backend, capacity=100, batch=100)
        with log.backend.transaction(write=True) as tx:
            tx.execute("DROP TABLE api_usage")
        writer.add(UsageRecord("chat", "m", 200))
        await asyncio.wait_for(writer.aclose(), 30)
        assert writer.dropped == 1 and writer.written == 0
        assert "api_usage" in caplog.text and "could not write 1 usage record" in caplog.text


def test_the_writer_process_exits_with_its_worker(tmp_path):
    """A worker that dies without closing anything (SIGKILL, OOM) closes the pipe: its helper exits."""
    script = f"""
import asyncio, os
from polyfuse.gateway.usage import UsageRecord, UsageWriter
from polyfuse.store import LogSettings, open_log

async def main():
    log = open_log(LogSettings(path={str(tmp_path / "runs.db")!r}))
    writer = UsageWriter(log.backend)
    writer.add(UsageRecord("chat", "m", 200))
    await writer.flush()
    print(writer.sink._proc.pid, flush=True)
    os._exit(9)

asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 9, out.stderr
    helper = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(helper):
        time.sleep(0.05)
    assert not _alive(helper)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
