"""``polyfuse keys create|list|revoke|rotate`` as real subprocesses on SQLite and a real PostgreSQL server:
secrets printed once and stored only as hashes, the key cache a server keeps, and bad input (unknown team,
negative budget, invalid glob, ...) as one line with exit code 2."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from polyfuse.gateway.keys import SECRET_PREFIX
from polyfuse.gateway.keystore import KeyCache, KeyStore
from polyfuse.gateway.settings import TeamSettings
from polyfuse.store import LogSettings, open_log

POLYFUSE = [sys.executable, "-m", "polyfuse.cli.main"]
ENV = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def project(request, tmp_path) -> Path:
    if request.param == "sqlite":
        log = f'path = "{tmp_path / "runs.db"}"'
    else:
        log = f'url = "{request.getfixturevalue("pg").create_database(f"k_{uuid.uuid4().hex[:10]}")}"'
    (tmp_path / "polyfuse.toml").write_text(
        f"""
[log]
{log}
[gateway.teams.platform]
rpm = 100
[gateway.teams.research]
budget = 50
"""
    )
    return tmp_path


def keys(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POLYFUSE, "keys", *args], capture_output=True, text=True, cwd=project, env=ENV, timeout=120
    )


def _settings(project: Path) -> LogSettings:
    from polyfuse.config import load_config

    return load_config(project / "polyfuse.toml").log


def test_create_prints_the_secret_once_and_stores_only_its_hash(project):
    made = keys(project, "create", "--team", "research", "--name", "ana", "--budget", "12.5", "--rpm", "30",
                "--tpm", "5000", "--models", "openai/*,local/*", "--presets", "local")  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith(SECRET_PREFIX) and len(secret) > 40 and "\n" not in secret
    assert "not shown again" in made.stderr and secret not in made.stderr

    listed = keys(project, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert secret not in listed.stdout and row["hint"] == "..." + secret[-4:]
    assert (row["team"], row["name"], row["budget"], row["period"], row["rpm"], row["tpm"]) == (
        "research", "ana", 12.5, "month", 30, 5000,
    )  # fmt: skip
    assert row["models"] == ["openai/*", "local/*"] and row["presets"] == ["local"] and row["spent"] == 0

    with open_log(_settings(project)) as log, log.backend.transaction(write=False) as tx:
        stored = tx.query("SELECT key_hash FROM api_keys")
        everything = " ".join(str(v) for r in tx.query("SELECT * FROM api_keys") for v in r)
    assert stored == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    assert secret not in everything

    table = keys(project, "list")
    assert row["id"] in table.stdout and "..." + secret[-4:] in table.stdout and secret not in table.stdout


def test_revoke_and_rotate(project):
    first = keys(project, "create", "--team", "platform", "--json")
    second = keys(project, "create", "--team", "research")
    record = json.loads(first.stdout)
    store_settings = _settings(project)
    with open_log(store_settings) as log:
        cache = KeyCache(KeyStore(log.backend), refresh=1)
        cache.load()
        assert cache.lookup(record["key"]).id == record["id"]
        assert cache.lookup(second.stdout.strip()).team == "research"
        assert cache.lookup(record["key"] + "x") is None

        rotated = keys(project, "rotate", record["id"], "--json")
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)
        assert new["id"] == record["id"] and new["key"] != record["key"] and new["rotated_at"]
        assert cache.refresh() is True  # the version moved: the table is reloaded
        assert cache.lookup(record["key"]) is None and cache.lookup(new["key"]).id == record["id"]
        assert cache.refresh() is False  # nothing changed since

        revoked = keys(project, "revoke", record["id"])
        assert revoked.returncode == 0 and "revoked" in revoked.stderr
        assert cache.refresh() is True and cache.lookup(new["key"]) is None
        assert cache.lookup(second.stdout.strip()) is not None  # the other key still works

    active = [json.loads(line) for line in keys(project, "list", "--json").stdout.splitlines()]
    assert [k["team"] for k in active] == ["research"]
    everything = [json.loads(line) for line in keys(project, "list", "--all", "--json").stdout.splitlines()]
    assert {k["status"] for k in everything} == {"active", "revoked"}
    again = keys(project, "rotate", record["id"])
    assert again.returncode == 2 and "revoked" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--team", "nosuch"], "unknown team 'nosuch' (known: platform, research)"),
        (["create", "--team", "platform", "--budget", "-3"], "--budget must be a number of USD, 0 or more"),
        (["create", "--team", "platform", "--budget", "nan"], "--budget must be a number of USD"),
        (["create", "--team", "platform", "--models", "openai/[gpt"], "'[' at 7 is never closed"),
        (["create", "--team", "platform", "--models", "openai/*, "], "--models: an empty pattern"),
        (["create", "--team", "platform", "--models", "a b"], "--models: invalid glob 'a b'"),
        (["create", "--team", "platform", "--presets", "nope"], "--presets: unknown preset 'nope'"),
        (
            ["create", "--team", "platform", "--period", "year"],
            "--period must be one of day, week, month, total",
        ),
        (["create", "--team", "platform", "--rpm", "0"], "--rpm must be at least 1"),
        (["revoke", "key_000000000000"], "no key 'key_000000000000'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project, args, message):
    out = keys(project, *args)
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_keys_against_an_unreadable_database_say_so(tmp_path):
    bad = tmp_path / "runs.db"
    bad.write_bytes(b"not a database at all" * 10)
    out = subprocess.run(
        [*POLYFUSE, "keys", "list", "--db", str(bad)], capture_output=True, text=True, env=ENV
    )
    assert out.returncode == 2 and "not a SQLite database" in out.stderr
    assert bad.read_bytes() == b"not a database at all" * 10


def test_store_refuses_before_writing(tmp_path):
    with open_log(LogSettings(path=str(tmp_path / "runs.db"))) as log:
        store = KeyStore(log.backend, {"a": TeamSettings()})
        with pytest.raises(Exception, match="unknown team"):
            store.create("b")
        assert store.list(include_revoked=True) == [] and store.version() == 0
        store.create("a")
        assert store.version() == 1
