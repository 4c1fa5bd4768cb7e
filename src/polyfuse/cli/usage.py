"""``polyfuse usage``: what the server's keys, teams, models and presets used, from the run-log database."""

from __future__ import annotations

import click
from rich.table import Table

from ..gateway.report import GROUPS, to_csv, to_json, usage_report
from ..store import open_log, parse_when
from .flags import json_flag, output_format
from .log import _console, _settings

__all__ = ["usage"]


def _accepted(shown: int, accepted: int) -> str:
    return f"{accepted}/{shown} ({accepted / shown:.0%})" if shown else "-"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


@click.command()
@click.option("--by", type=click.Choice(GROUPS), default="key", show_default=True, help="One row per ...")
@click.option("--since", help="From this date/time (2025-06-01, 2025-06-01T12:00) or age (7d, 12h).")
@click.option("--until", help="Up to this date (inclusive) or date/time (exclusive).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
@json_flag
@click.option("--db", help="SQLite file or postgresql:// URL (default: [log] in polyfuse.toml).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def usage(
    by: str,
    since: str | None,
    until: str | None,
    fmt: str,
    as_json: bool,
    db: str | None,
    config_path: str | None,
) -> None:
    """Requests, tokens, cost, refusals, failures and latency p50/p90 of the server's requests."""
    fmt = output_format(fmt, as_json, "table")
    start = parse_when(since) if since else None
    end = parse_when(until, end_of_day=True) if until else None
    with open_log(_settings(config_path, db)) as runlog:
        rows = usage_report(runlog.backend, by, start, end)
        where = runlog.where
    if fmt == "json":
        click.echo(to_json(rows, by))
        return
    if fmt == "csv":
        click.echo(to_csv(rows), nl=False)
        return
    table = Table(box=None, header_style="bold")
    columns = (
        by,
        "requests",
        "ok",
        "refused",
        "failed",
        "cached",
        "tokens in",
        "tokens out",
        "cost",
        "p50",
        "p90",
        "suggestions accepted",
    )
    for col in columns:
        table.add_column(col)
    for r in rows:
        name = r.group if r.label == r.group else f"{r.group} {r.label}"
        table.add_row(
            name,
            str(r.requests),
            str(r.ok),
            str(r.refused),
            str(r.failed),
            str(r.cached),
            str(r.prompt_tokens),
            str(r.completion_tokens),
            f"${r.cost:.6f}" + ("" if r.cost_known else "+?"),
            _secs(r.p50),
            _secs(r.p90),
            _accepted(r.suggestions_shown, r.suggestions_accepted),
        )
    _console().print(table)
    click.echo(f"{sum(r.requests for r in rows)} request(s) in {where}", err=True)
