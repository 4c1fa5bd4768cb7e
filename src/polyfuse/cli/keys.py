"""``polyfuse keys``: API keys for people and teams, kept hashed in the run-log database.

The secret is printed once, by ``create`` and ``rotate``; the database only ever holds its SHA-256 hash.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from ..config import Config, load_config
from ..gateway.keys import KeyRecord, parse_globs
from ..gateway.keystore import KeyStore
from ..gateway.ledger import DbBudget, period_of
from ..store import open_log
from .log import _console, _settings

__all__ = ["keys"]


def _opened(fn: Callable[..., None]) -> Callable[..., None]:
    """Open the database from --config/--db and pass a KeyStore (and the config) on."""

    @functools.wraps(fn)
    def wrapper(config_path: str | None, db: str | None, **kw: Any) -> None:
        config = load_config(config_path)
        with open_log(_settings(config_path, db)) as runlog:
            fn(store=KeyStore(runlog.backend, config.gateway.teams), config=config, **kw)

    return wrapper


def _where(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option("--db", help="SQLite file or postgresql:// URL (default: [log] in polyfuse.toml).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")(fn)
    return fn


def _secret_out(record: KeyRecord, secret: str, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps({**record.to_dict(), "key": secret}))
    else:
        click.echo(secret)
    click.echo(
        f"{verb} key {record.id} (team {record.team}): store the secret now, it is not shown again", err=True
    )


@click.group()
def keys() -> None:
    """API keys for the server: per person or tool, in a team, with budgets, limits and allow-lists."""


@keys.command("create")
@click.option("--team", required=True, help="A team from [gateway.teams] in polyfuse.toml.")
@click.option("--name", help="A label: who or what uses the key.")
@click.option("--budget", type=float, help="USD the key may spend per period.")
@click.option(
    "--period", default="month", show_default=True, help="Budget period: day, week, month or total."
)
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--tpm", type=int, help="Tokens per minute.")
@click.option(
    "--models", help="Comma-separated globs of model ids the key may call, e.g. 'openai/*,local/*'."
)
@click.option("--presets", help="Comma-separated presets (or globs) the key may use.")
@click.option("--json", "as_json", is_flag=True, help="The new key and its record as JSON.")
@_where
@_opened
def create(
    store: KeyStore,
    config: Config,
    team: str,
    name: str | None,
    budget: float | None,
    period: str,
    rpm: int | None,
    tpm: int | None,
    models: str | None,
    presets: str | None,
    as_json: bool,
) -> None:
    """Make a key; its secret is printed once, on stdout."""
    record, secret = store.create(
        team,
        name=name,
        budget=budget,
        period=period,
        rpm=rpm,
        tpm=tpm,
        models=parse_globs(models, "models"),
        presets=parse_globs(presets, "presets"),
        known_presets=list(config.all_presets()),
    )
    _secret_out(record, secret, as_json, "created")


def _budget_cell(record: KeyRecord, spent: float | None) -> str:
    if record.budget is None:
        return "-"
    return f"${spent or 0:.4f} of ${record.budget:.2f}/{record.period}"


@keys.command("list")
@click.option("--team", help="Only this team's keys.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@_where
@_opened
def list_keys(
    store: KeyStore, config: Config, team: str | None, include_revoked: bool, as_json: bool
) -> None:
    """Keys (never their secrets), with what each spent in its current budget period."""
    records = store.list(team=team, include_revoked=include_revoked)
    ledger = DbBudget(store.backend, hold_ttl=config.gateway.hold_ttl)
    spent = {r.id: ledger.spent(f"key:{r.id}", period_of(r.period)[0]) for r in records}
    if as_json:
        for r in records:
            click.echo(json.dumps({**r.to_dict(), "spent": round(spent[r.id], 8)}))
        return
    table = Table(box=None, header_style="bold")
    for col in (
        "id",
        "name",
        "team",
        "status",
        "key",
        "budget",
        "rpm",
        "tpm",
        "models",
        "presets",
        "created",
    ):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.id,
            r.name or "",
            r.team,
            r.status,
            "..." + r.hint,
            _budget_cell(r, spent[r.id]),
            str(r.rpm or "-"),
            str(r.tpm or "-"),
            ",".join(r.models) if r.models is not None else "*",
            ",".join(r.presets) if r.presets is not None else "*",
            r.created_at[:10],
        )
    _console().print(table)
    click.echo(f"{len(records)} key(s) in {store.backend.where}", err=True)


@keys.command("revoke")
@click.argument("key_id")
@_where
@_opened
def revoke(store: KeyStore, config: Config, key_id: str) -> None:
    """Stop a key from working (servers notice within [gateway] key_refresh seconds)."""
    record = store.revoke(key_id)
    click.echo(f"revoked key {record.id} (team {record.team})", err=True)


@keys.command("rotate")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="The new secret and the key's record as JSON.")
@_where
@_opened
def rotate(store: KeyStore, config: Config, key_id: str, as_json: bool) -> None:
    """A new secret for a key (same id, limits and spend); the old secret stops working."""
    record, secret = store.rotate(key_id)
    _secret_out(record, secret, as_json, "rotated")
