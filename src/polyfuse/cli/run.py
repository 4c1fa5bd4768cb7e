"""``polyfuse run``: fuse one prompt and print the answer (stdout) and the report (stderr)."""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console

from ..config import load_config
from ..errors import FusionError, InvalidRequestError
from ..fusion.engine import fuse
from ..fusion.events import EventSink, FusionEvent
from ..fusion.request import FusionRequest
from ..providers.registry import ProviderHub
from ..types import FusionResult
from .render import LineProgress, LiveProgress, report
from .runlog import opened_log


def read_prompt(prompt: str | None) -> str:
    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            raise InvalidRequestError('no prompt: pass it as an argument (polyfuse run "...") or on stdin')
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise InvalidRequestError("the prompt is empty: give some text to ask the pool")
    return prompt


class _StreamPrinter:
    """Prints the fused answer to stdout as it streams; notes when a streamed answer was withdrawn."""

    def __init__(self, progress: EventSink | None) -> None:
        self.progress = progress
        self.printed = False
        self.reset = False

    def __call__(self, event: FusionEvent) -> None:
        if self.progress is not None:
            self.progress(event)
        if event.type == "answer_delta" and event.text:
            if self.reset:
                click.echo("\n--- final answer ---", err=True)
                self.reset = False
            sys.stdout.write(event.text)
            sys.stdout.flush()
            self.printed = True
        elif event.type == "answer_reset" and self.printed:
            click.echo(f"\n[answer withdrawn: {event.data.get('reason')}]", err=True)
            self.reset = True


async def _execute(request: FusionRequest, hub: ProviderHub, sink: EventSink | None) -> FusionResult:
    async with hub:
        return await fuse(request, hub, on_event=sink)


def _fuse(request: FusionRequest, hub: ProviderHub, stream: bool, interactive: bool) -> FusionResult:
    if stream:
        err = sys.stderr if interactive else None
        sink: EventSink | None = _StreamPrinter(LineProgress(err) if err is not None else None)
        result = asyncio.run(_execute(request, hub, sink))
        sys.stdout.write("\n")
        return result
    if interactive:
        with LiveProgress(Console(stderr=True, highlight=False)) as live:
            return asyncio.run(_execute(request, hub, live))
    return asyncio.run(_execute(request, hub, None))


@click.command()
@click.argument("prompt", required=False)
@click.option("--preset", help="Preset name (built-in: local, quality, budget).")
@click.option("--pool", help="Comma-separated members, e.g. 'local/smollm2-135m*3,local/gemma3-270m'.")
@click.option("--judge", help="Judge model id.")
@click.option("--mode", help="best-of, merge, debate or vote.")
@click.option("--rounds", type=int, help="Debate rounds (default 2).")
@click.option("--system", help="System prompt for every member.")
@click.option("--temperature", type=float)
@click.option("--max-tokens", type=int)
@click.option("--min-responses", type=int, help="Answers needed before stragglers may be cut.")
@click.option("--straggler-grace", type=float, help="Seconds to wait for the rest once min-responses are in.")
@click.option("--timeout", "member_timeout", type=float, help="Per-member timeout in seconds.")
@click.option("--skip-judge-on-consensus", type=float, help="Skip the judge when agreement >= this (0-1).")
@click.option("--max-cost", type=float, help="Refuse to run when the estimated cost (USD) exceeds this.")
@click.option("--seed", "shuffle_seed", type=int, help="Seed for the judge's candidate order.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--stream", is_flag=True, help="Stream the fused answer as it is written.")
@click.option("--quiet", "-q", is_flag=True, help="Only the answer, no report.")
@click.option("--no-log", is_flag=True, help="Do not record this run in the run log.")
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default: ./polyfuse.toml)."
)
def run(
    prompt: str | None,
    preset: str | None,
    pool: str | None,
    judge: str | None,
    mode: str | None,
    rounds: int | None,
    system: str | None,
    as_json: bool,
    stream: bool,
    quiet: bool,
    no_log: bool,
    config_path: str | None,
    **limits: float | int | None,
) -> None:
    """Fuse one PROMPT (or stdin) through a pool of models and a judge."""
    text = read_prompt(prompt)
    cfg = load_config(config_path)
    request = cfg.build_request(
        text, preset=preset, pool=pool, judge=judge, mode=mode, rounds=rounds, system=system, **limits
    )
    hub = ProviderHub.from_config(cfg)
    err = Console(stderr=True, highlight=False)
    interactive = err.is_terminal and not as_json and not quiet
    with opened_log(cfg, no_log) as runlog:
        try:
            result = _fuse(request, hub, stream, interactive)
        except FusionError as exc:
            if runlog is not None:
                runlog.record_error(request, exc, source="cli")
            raise
        run_id = runlog.record(request, result, source="cli") if runlog is not None else None
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    if not stream:
        click.echo(result.answer)
    if not quiet:
        click.echo("", err=True)
        click.echo(report(result), err=True)
        if run_id is not None:
            click.echo(f"logged as run {run_id} (polyfuse log show {run_id})", err=True)
