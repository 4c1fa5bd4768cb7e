"""``polyfuse log``: list, show, summarise, export and import the runs in the run log."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from ..config import load_config
from ..errors import InvalidRequestError
from ..store import (
    LogFilter,
    LogSettings,
    RunLog,
    RunRecord,
    SuggestionStats,
    model_stats,
    open_log,
    read_runs,
    suggestion_stats,
    write_runs,
)
from .render import short

__all__ = ["log"]

F = TypeVar("F", bound=Callable[..., Any])


def _settings(config_path: str | None, db: str | None) -> LogSettings:
    settings = load_config(config_path).log
    if db is None:
        return settings
    if db.startswith(("postgresql://", "postgres://")):
        return settings.model_copy(update={"url": db, "path": None})
    return settings.model_copy(update={"path": db, "url": None})


def _where_options(fn: F) -> F:
    """The database options every subcommand takes."""
    fn = click.option("--db", help="SQLite file or postgresql:// URL (default: [log] in polyfuse.toml).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")(fn)
    return fn


def _filter_options(fn: F) -> F:
    """Which runs: model, mode, source, status, dates and cost."""
    options = [
        click.option("--model", help="Runs where a member or the judge used a model whose id contains this."),
        click.option("--mode", help="best-of, merge, debate or vote."),
        click.option("--source", help="Where runs came from: cli, server, code, ..."),
        click.option("--status", type=click.Choice(["ok", "failed"]), help="Finished or failed runs."),
        click.option("--since", help="From this date/time (2025-06-01, 2025-06-01T12:00) or age (7d, 12h)."),
        click.option("--until", help="Up to this date (inclusive) or date/time (exclusive)."),
        click.option("--min-cost", type=float, help="Runs that cost at least this (USD)."),
        click.option("--max-cost", type=float, help="Runs that cost at most this (USD)."),
        click.option("--limit", type=int, help="At most this many runs, newest first."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _opened(fn: Callable[..., None]) -> Callable[..., None]:
    """Open the log from --config/--db, pass it on as ``runlog``, close it afterwards."""

    @functools.wraps(fn)
    def wrapper(config_path: str | None, db: str | None, **kw: Any) -> None:
        with open_log(_settings(config_path, db)) as runlog:
            fn(runlog=runlog, **kw)

    return wrapper


def _filter(kw: dict[str, Any]) -> LogFilter:
    keys = ("model", "mode", "source", "status", "since", "until", "min_cost", "max_cost", "limit")
    return LogFilter.parse(**{k: kw.pop(k) for k in keys})


def _console() -> Console:
    """Stdout; piped output gets wide lines rather than cells cut to 80 columns."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=240)


def _cost(value: float, known: bool = True) -> str:
    return f"${value:.6f}" + ("" if known else "+?")


@click.group()
def log() -> None:
    """The run log: every fusion run, with its candidates, verdict and totals."""


@log.command("list")
@_where_options
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@_opened
def list_runs(runlog: RunLog, as_json: bool, **kw: Any) -> None:
    """Runs, newest first."""
    kw_filter = _filter(kw)
    runs = runlog.runs(kw_filter)
    if as_json:
        for run in runs:
            click.echo(run.model_dump_json(exclude={"candidates"}))
        _report_dropped(runlog, kw_filter)
        return
    table = Table(box=None, header_style="bold")
    for col in ("id", "when (UTC)", "source", "mode", "models", "tokens", "cost", "wall", "answer"):
        table.add_column(col)
    for r in runs:
        answer = r.answer if r.answer is not None else f"sha256:{(r.answer_hash or '')[:12]}"
        table.add_row(
            str(r.id),
            r.created_at[:19].replace("T", " "),
            r.source,
            r.mode,
            ", ".join(r.models),
            str(r.total_tokens),
            _cost(r.cost, r.cost_known),
            f"{r.wall_time:.2f}s",
            f"[red]{short(r.error or '', 40)}" if r.status == "failed" else short(answer, 40),
        )
    _console().print(table)
    click.echo(f"{len(runs)} run(s) in {runlog.where}", err=True)
    _report_dropped(runlog, kw_filter)


def _report_dropped(runlog: RunLog, where: LogFilter) -> int:
    """Gaps in the log (runs the server could not record in time), one line each on stderr; their total."""
    gaps = runlog.dropped(where)
    for gap in gaps:
        click.echo(f"warning: {gap.describe()}", err=True)
    return sum(g.runs for g in gaps)


@log.command("show")
@click.argument("run_id", type=int)
@_where_options
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@_opened
def show(runlog: RunLog, run_id: int, as_json: bool) -> None:
    """One run: request, every candidate, the verdict and the totals."""
    run = runlog.get(run_id)
    if as_json:
        click.echo(run.model_dump_json(indent=2))
        return
    _print_run(run)


def _print_run(r: RunRecord) -> None:
    out = _console()
    out.print(
        f"[bold]run {r.id}[/] {r.created_at} from {r.source}: {r.mode}, judge {r.judge or '-'}, {r.status}"
    )
    if r.error:
        out.print(f"[red]error:[/] {r.error}")
    out.print(f"[bold]prompt[/] {r.prompt if r.prompt is not None else 'sha256:' + (r.prompt_hash or '')}")
    table = Table(box=None, header_style="bold")
    for col in ("role", "member", "round", "status", "latency", "tokens", "cost", "chosen", "text / error"):
        table.add_column(col)
    for c in r.candidates:
        text = c.error or (c.text if c.text is not None else f"sha256:{(c.text_hash or '')[:12]}")
        table.add_row(
            c.role,
            c.member,
            str(c.round),
            c.status,
            f"{c.latency:.2f}s",
            str(c.prompt_tokens + c.completion_tokens),
            "?" if c.cost is None else f"${c.cost:.6f}",
            "yes" if c.chosen else "",
            short(text, 60),
        )
    out.print(table)
    if r.status == "ok":
        answer = r.answer if r.answer is not None else "sha256:" + (r.answer_hash or "")
        out.print(f"[bold]answer[/] {answer}")
    out.print(
        f"agreement {r.agreement if r.agreement is not None else '-'}, tokens {r.total_tokens}, "
        f"cost {_cost(r.cost, r.cost_known)}, wall {r.wall_time:.2f}s, overhead {r.overhead:.3f}s"
    )


@log.command("stats")
@_where_options
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="Per-model figures as JSON.")
@_opened
def stats(runlog: RunLog, as_json: bool, **kw: Any) -> None:
    """Per model: runs, failure rate, median latency, cost, how often its answer was chosen; and editor
    suggestions per model and mode (single, fast, fused): shown, accepted, acceptance rate, median latency."""
    where = _filter(kw)
    runs = runlog.runs(where)
    rows = model_stats(runs)
    shown = suggestion_stats(runlog, where)
    if as_json:
        data = {
            "runs": len(runs),
            "dropped_runs": sum(g.runs for g in runlog.dropped(where)),
            "models": [s.to_dict() for s in rows],
            "suggestions": [s.to_dict() for s in shown],
        }
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in ("model", "role", "runs", "calls", "failed", "median latency", "tokens", "cost", "chosen"):
        table.add_column(col)
    for s in rows:
        chosen = "-" if s.chosen_rate is None else f"{s.chosen}/{s.choice_runs} ({s.chosen_rate:.0%})"
        median = "-" if s.median_latency is None else f"{s.median_latency:.2f}s"
        table.add_row(
            s.model,
            s.role,
            str(s.runs),
            str(s.calls),
            f"{s.failures} ({s.failure_rate:.0%})",
            median,
            str(s.tokens),
            _cost(s.cost, s.cost_known),
            chosen,
        )
    out = _console()
    out.print(table)
    if shown:
        out.print("\n[bold]editor suggestions[/]")
        out.print(_suggestion_table(shown))
    click.echo(f"{len(runs)} run(s), {sum(s.shown for s in shown)} suggestion(s) in {runlog.where}", err=True)
    _report_dropped(runlog, where)


def _suggestion_table(rows: list[SuggestionStats]) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("model", "mode", "shown", "accepted", "acceptance rate", "median latency"):
        table.add_column(col)
    for s in rows:
        rate = "-" if s.rate is None else f"{s.rate:.0%}"
        median = "-" if s.median_latency is None else f"{s.median_latency * 1000:.0f} ms"
        table.add_row(s.model, s.mode, str(s.shown), str(s.accepted), rate, median)
    return table


@log.command("export")
@_where_options
@_filter_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@_opened
def export(runlog: RunLog, fmt: str, output: str | None, **kw: Any) -> None:
    """Runs as JSONL (lossless) or CSV (one row per run; candidates and verdict as JSON cells)."""
    runs = runlog.runs(_filter(kw))
    if output is None:
        write_runs(runs, sys.stdout, fmt)
    else:
        with Path(output).open("w", encoding="utf-8", newline="") as fh:
            count = write_runs(runs, fh, fmt)
        click.echo(f"wrote {count} run(s) to {output}", err=True)


@log.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@_where_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), help="Default: from the file name.")
@_opened
def import_(runlog: RunLog, file: str, fmt: str | None) -> None:
    """Add runs from an export (e.g. a local log into a team's PostgreSQL log). Runs already present are
    recognised by their uid and not added twice."""
    path = Path(file)
    if not path.is_file():
        raise InvalidRequestError(f"no such file: {file}")
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    with path.open(encoding="utf-8", newline="") as fh:
        records = list(read_runs(fh, fmt))
    before = runlog.count()
    runlog.insert_many(records)
    added = runlog.count() - before
    click.echo(f"imported {added} new run(s) of {len(records)} into {runlog.where}", err=True)
