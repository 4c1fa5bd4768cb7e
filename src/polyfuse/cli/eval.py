"""``polyfuse eval DATASET``: every pool member alone, each fusion mode, and self-consistency at equal budget,
on one dataset; a table, JSON and an HTML report, and a recommendation."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import load_config
from ..eval import EvalOutput, EvalSpec, builtin_datasets, evaluate, load_dataset, render_table, summary_lines
from ..eval.errors import EvalError
from ..eval.report import render_judge_table
from ..eval.spec import MODE_NAMES
from ..fusion.scoring import method_names
from ..providers.registry import ProviderHub
from .flags import json_flag, output_format

__all__ = ["eval_command"]


class _LineProgress:
    """Progress for logs and pipes: one line each time another tenth of the work is done."""

    def __init__(self) -> None:
        self.shown = -1

    def __call__(self, done: int, total: int, what: str) -> None:
        step = 10 * done // max(1, total)
        if step != self.shown:
            self.shown = step
            click.echo(f"progress: {done}/{total} arms scored", err=True)


def _list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


async def _run(spec: EvalSpec, config_path: str | None, out: Path | None, fresh: bool) -> EvalOutput:
    cfg = load_config(config_path)
    err = Console(stderr=True)
    async with ProviderHub.from_config(cfg) as hub:
        for judge in spec.judge_models:  # an id that does not resolve stops here, before any work
            hub.model(judge)
        if not err.is_terminal:
            return await evaluate(spec, hub, out, fresh=fresh, progress=_LineProgress())
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("evaluating", total=None)

            def advance(done: int, total: int, what: str) -> None:
                bar.update(task, completed=done, total=total, description=what[:40])

            return await evaluate(spec, hub, out, fresh=fresh, progress=advance)


@click.command("eval")
@click.argument("dataset", required=False)
@click.option("--scorer", help="Scorer for every item (overrides the items' own 'scorer' field).")
@click.option("--limit", type=int, help="Only the first N items.")
@click.option("--preset", help="Preset whose pool, judge and limits to start from.")
@click.option("--pool", help="Comma-separated members, e.g. 'local/smollm2-135m,local/gemma3-270m'.")
@click.option("--judge", help="Judge model id for best-of, merge and debate.")
@click.option(
    "--judges", help="Judge model ids compared side by side (with --judge, if given, as the first)."
)
@click.option(
    "--judge-methods",
    help=f"How the judges choose, comma-separated, each compared side by side: {', '.join(method_names())} "
    "(default: the preset's).",
)
@click.option("--modes", default=",".join(MODE_NAMES), show_default=True, help="Arms to compare.")
@click.option("--rounds", type=int, help="Debate rounds.")
@click.option("--max-tokens", type=int, help="Per member answer.")
@click.option("--temperature", type=float)
@click.option("--system", help="System prompt for every member.")
@click.option("--timeout", "member_timeout", type=float, help="Per-member timeout in seconds.")
@click.option("--grader", help="Model that grades 'rubric' items (LLM-as-judge); reported as such.")
@click.option("--sc-k", type=int, help="Samples for self-consistency (default: matched to the fused tokens).")
@click.option("--no-equal-budget", is_flag=True, help="Skip the self-consistency comparison.")
@click.option(
    "--no-code-checks",
    is_flag=True,
    help="Do not screen code candidates by the prompt's own examples before the fusion arms choose.",
)
@click.option("--concurrency", type=int, default=2, show_default=True, help="Items evaluated at once.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the judges' candidate order.")
@click.option(
    "--out", type=click.Path(file_okay=False), help="Results directory (default: polyfuse-eval/...)."
)
@click.option("--fresh", is_flag=True, help="Discard earlier results in --out instead of resuming.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@json_flag
@click.option("--list-datasets", is_flag=True, help="List the built-in datasets and exit.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def eval_command(
    dataset: str | None,
    scorer: str | None,
    limit: int | None,
    preset: str | None,
    pool: str | None,
    judge: str | None,
    judges: str | None,
    judge_methods: str | None,
    modes: str,
    rounds: int | None,
    max_tokens: int | None,
    temperature: float | None,
    system: str | None,
    member_timeout: float | None,
    grader: str | None,
    sc_k: int | None,
    no_equal_budget: bool,
    no_code_checks: bool,
    concurrency: int,
    seed: int,
    out: str | None,
    fresh: bool,
    fmt: str,
    as_json: bool,
    list_datasets: bool,
    config_path: str | None,
) -> None:
    """Evaluate single models and fusion modes on DATASET (a JSONL file or a built-in name)."""
    fmt = output_format(fmt, as_json, "table")
    if list_datasets or dataset is None:
        for name, description in builtin_datasets().items():
            click.echo(f"{name:12} {description}")
        if dataset is None and not list_datasets:
            click.echo("give a DATASET: a JSONL file or one of the names above", err=True)
        return
    methods = _list(judge_methods)
    unknown = [m for m in methods if m not in method_names()]
    if unknown or (judge_methods is not None and not methods):
        raise EvalError(
            f"unknown --judge-methods {', '.join(unknown) or '(empty)'}; valid: {', '.join(method_names())}"
        )
    data = load_dataset(dataset, scorer=scorer, limit=limit)
    # The preset resolves like `polyfuse run` would; the prompt is per item, so a placeholder stands in.
    cfg = load_config(config_path)
    request = cfg.build_request(
        "(per item)", preset=preset, pool=pool, judge=judge, rounds=rounds, max_tokens=max_tokens,
        temperature=temperature, member_timeout=member_timeout,
    )  # fmt: skip
    spec = EvalSpec(
        dataset=data,
        pool=request.pool,
        judge=request.judge,
        judges=([judge] if judge and judges else []) + _list(judges),
        judge_methods=methods or [request.judge_method],
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        rounds=request.rounds,
        params=request.params,
        judge_params=request.judge_params,
        member_timeout=request.member_timeout,
        judge_timeout=request.judge_timeout,
        system=system,
        grader=grader,
        equal_budget=not no_equal_budget,
        code_checks=not no_code_checks,
        sc_k=sc_k,
        seed=seed,
        concurrency=concurrency,
        allow_weak_sandbox=cfg.code.allow_weak_sandbox,
    )
    if data.skipped:
        for s in data.skipped:
            click.echo(f"warning: {data.source} line {s.line} skipped: {s.reason}", err=True)
        click.echo(
            f"warning: {len(data.skipped)} malformed line(s) skipped, {len(data.items)} items used", err=True
        )
    result = asyncio.run(_run(spec, config_path, Path(out) if out else None, fresh))
    if fmt == "json":
        click.echo(json.dumps(result.report.to_dict(), indent=2))
    else:
        console = Console(highlight=False) if sys.stdout.isatty() else Console(highlight=False, width=200)
        console.print(render_table(result.report))
        judge_table = render_judge_table(result.report)
        if judge_table is not None:
            console.print(judge_table)
        for line in summary_lines(result.report):
            click.echo(line)  # unwrapped: these lines are read (and grepped) whole
    if result.resumed:
        click.echo(f"resumed: {result.resumed} result(s) came from an earlier run", err=True)
    click.echo(f"results: {result.results_path}", err=True)
    click.echo(f"report: {result.json_path} and {result.html_path}", err=True)
