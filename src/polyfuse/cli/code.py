"""``polyfuse code ...``: complete, generate, transform, debug, review, tests. Thin: parse, call, render.

The result goes to stdout (the completion, the code, the diff, the review); the candidates with their check
outcomes, the verdict and any redactions go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..code.checks import describe_no_survivors
from ..code.sandbox import SandboxLimits, require_sandbox
from ..code.task import CodeEnv
from ..config import Config, config_paths, load_config
from ..errors import ConfigError, InvalidRequestError, NoSurvivorsError
from ..providers.registry import ProviderHub
from ..redaction import Redactor, provider_keys
from ..store import RunLog
from ..types import FusionResult
from .flags import json_flag, output_format
from .render import report
from .runlog import opened_log

__all__ = ["code"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _common(fn: F) -> F:
    for option in reversed(
        [
            click.option(
                "--preset", help="Preset for the pool and judge (default: [code] preset or the default)."
            ),
            click.option("--pool", help="Comma-separated pool, e.g. 'local/smollm2-135m,local/gemma3-270m'."),
            click.option("--judge", help="Judge model id."),
            click.option("--mode", type=click.Choice(["best-of", "vote"]), help="best-of (default) or vote."),
            click.option("--config", "config_path", help="Config file (default: ./polyfuse.toml)."),
            click.option("--quiet", "-q", is_flag=True, help="Only the result, no report on stderr."),
            click.option("--no-log", is_flag=True, help="Do not record this task in the run log."),
        ]
    ):
        fn = option(fn)
    return fn


def _execute(
    opts: dict[str, Any],
    task: Callable[[CodeEnv], Awaitable[T]],
    cfg: Config | None = None,
    runs_code: bool = True,
) -> T:
    config_path = opts.pop("config_path", None)
    cfg = cfg or load_config(config_path)
    if runs_code:  # before any model runs: with no adequate sandbox, one line saying how to opt in (exit 2)
        require_sandbox(SandboxLimits(allow_weak=cfg.code.allow_weak_sandbox))
    overrides = {"preset": opts.pop("preset", None), "judge": opts.pop("judge", None)}
    pool = opts.pop("pool", None)
    if pool:
        overrides["pool"] = [p for p in pool.split(",")]
    mode = opts.pop("mode", None)
    name = click.get_current_context().info_name or "code"

    hub = ProviderHub.from_config(cfg)

    async def main(runlog: RunLog | None) -> T:
        async with hub:
            env = CodeEnv.create(cfg, hub, mode=mode, run_log=runlog, task=name, **overrides)
            return await task(env)

    redact = Redactor(provider_keys(hub))
    try:
        with opened_log(cfg, bool(opts.pop("no_log", False)), redact) as runlog:
            return asyncio.run(main(runlog))
    except NoSurvivorsError as exc:
        click.echo(describe_no_survivors(exc, getattr(exc, "scores", None)), err=True)
        sys.exit(1)


def _report(result: FusionResult | None, redactions: tuple[str, ...], quiet: bool) -> None:
    if quiet:
        return
    if redactions:
        click.echo("redacted before sending: " + "; ".join(redactions), err=True)
    if result is None:
        return
    ran_in = sorted({k.sandbox for c in result.candidates for k in c.checks if k.sandbox})
    click.echo("checks:" + (f" (code ran in {', '.join(ran_in)})" if ran_in else ""), err=True)
    for c in result.candidates:
        marks = (
            ", ".join(f"{k.name} {'ok' if k.passed else 'FAILED'} ({k.detail})" for k in c.checks)
            or "no checks"
        )
        click.echo(f"  [{c.status}] {c.member}: {marks}", err=True)
    click.echo(report(result), err=True)


def _range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, sep, end = text.partition(":")
    try:
        return int(start), int(end if sep else start)
    except ValueError:
        raise InvalidRequestError(
            f"--range must be START:END line numbers, e.g. 10:20 (got {text!r})"
        ) from None


@click.group()
def code() -> None:
    """Code assistant: candidates are checked by running them before the judge ranks the survivors."""


@code.command()
@click.argument("file")
@click.option("--line", type=int, required=True, help="1-based line of the cursor.")
@click.option("--col", type=int, required=True, help="1-based column of the cursor.")
@click.option(
    "--fast",
    is_flag=True,
    help="Return the first candidate that passes its checks within the latency budget.",
)
@_common
def complete(file: str, line: int, col: int, fast: bool, quiet: bool, **opts: Any) -> None:
    """Fill in the code at FILE:LINE:COL."""
    from ..code.complete import complete as run

    result = _execute(opts, lambda env: run(env, Path(file), line, col, fast=fast))
    click.echo(result.insertion)
    _report(result.fusion, result.redactions, quiet)


@code.command()
@click.argument("description")
@click.option("--lang", default="python", show_default=True)
@click.option("--tests", "tests_file", help="A test file the code must pass.")
@click.option("--module", default="solution", show_default=True, help="Module name the tests import.")
@_common
def generate(
    description: str, lang: str, tests_file: str | None, module: str, quiet: bool, **opts: Any
) -> None:
    """New code from a DESCRIPTION."""
    from ..code.generate import generate as run

    tests = Path(tests_file) if tests_file else None
    result = _execute(opts, lambda env: run(env, description, lang=lang, tests=tests, module=module))
    click.echo(result.code, nl=False)
    _report(result.fusion, result.redactions, quiet)


@code.command()
@click.argument("file")
@click.argument("instruction")
@click.option("--range", "line_range", help="Lines to change, START:END (1-based, inclusive).")
@click.option("--apply", is_flag=True, help="Write the change to FILE (atomically).")
@_common
def transform(
    file: str, instruction: str, line_range: str | None, apply: bool, quiet: bool, **opts: Any
) -> None:
    """Edit FILE as the INSTRUCTION says; print the change as a unified diff."""
    from ..code.transform import transform as run

    rng = _range(line_range)
    result = _execute(opts, lambda env: run(env, Path(file), instruction, line_range=rng, apply=apply))
    click.echo(result.diff, nl=False)
    _report(result.fusion, result.redactions, quiet)
    if apply and not quiet:
        click.echo(f"applied to {file}", err=True)


@code.command()
@click.option(
    "--cmd", help="The failing command, e.g. 'pytest -x'. Without it, a traceback is read from stdin."
)
@click.option("--file", "files", multiple=True, help="A file to show the pool (repeatable).")
@click.option("--verify", is_flag=True, help="Re-run the command on each candidate fix in a scratch copy.")
@click.option("--root", default=".", help="Project directory (default: the current one).")
@_common
def debug(cmd: str | None, files: tuple[str, ...], verify: bool, root: str, quiet: bool, **opts: Any) -> None:
    """Explain a failure and propose a fix as a diff."""
    from ..code.debug import debug as run

    traceback = None if cmd is not None or sys.stdin.isatty() else sys.stdin.read()
    result = _execute(
        opts,
        lambda env: run(
            env, root=Path(root), cmd=cmd, traceback=traceback, files=[Path(f) for f in files], verify=verify
        ),
        runs_code=cmd is not None,
    )
    click.echo(result.explanation + "\n")
    click.echo(result.diff, nl=False)
    _report(result.fusion, result.redactions, quiet)


@code.command()
@click.option(
    "--base",
    help="Branch, tag or commit to diff against (default: main; with --github the pull request's base).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif", "github"]),
    default="text",
    show_default=True,
    help="github: the exact payload of GitHub's create-review call (a dry run unless --github).",
)
@json_flag
@click.option(
    "--min-severity",
    type=click.Choice(["low", "medium", "high", "critical"]),
    help="Hide comments below this.",
)
@click.option(
    "--min-agreement",
    type=click.IntRange(1, 64),
    help="Keep a comment only when at least K reviewers raised it; the rest are reported as disputed.",
)
@click.option("--max-comments", type=click.IntRange(0, 1000), help="At most this many comments.")
@click.option(
    "--show-disputed/--hide-disputed", default=None, help="List disputed comments apart, or only count them."
)
@click.option(
    "--github",
    is_flag=True,
    help="Post the review on the pull request of this GitHub Actions run (GITHUB_TOKEN, GITHUB_REPOSITORY).",
)
@click.option("--root", default=".", help="The git work tree (default: the current directory).")
@_common
def review(
    base: str | None,
    fmt: str,
    as_json: bool,
    min_severity: str | None,
    min_agreement: int | None,
    max_comments: int | None,
    show_disputed: bool | None,
    github: bool,
    root: str,
    quiet: bool,
    **opts: Any,
) -> None:
    """Review the changes against BASE; .polyfuse/review.toml sets the gates (options override it)."""
    fmt = output_format(fmt, as_json, "text")
    from ..code import github_review as gh
    from ..code.github import GitHubClient, actions_context
    from ..code.review import review as run
    from ..code.review_config import REVIEW_CONFIG, load_review_options
    from ..code.review_format import FORMATS
    from ..code.trusted import toml_at_commit

    tree = Path(root)
    context = actions_context(os.environ) if github else None  # every setup mistake before any model call

    async def check() -> Any:
        assert context is not None
        async with GitHubClient(context.api_url, context.token) as client:
            return await gh.preflight(client, context.pull)

    pull = asyncio.run(check()) if context is not None else None
    config_path = opts.pop("config_path", None)
    review_data: dict[str, Any] | None = None
    base = base or (pull.base_sha if pull is not None else "main")
    if pull is not None:  # the checkout is the pull request's: its configuration comes from the base commit
        cfg = _base_config(tree, base, config_path)
        review_data = toml_at_commit(tree, base, tree / REVIEW_CONFIG) or {}
    else:
        cfg = load_config(config_path)
    options = load_review_options(
        tree.resolve(),
        cfg.code,
        data=review_data,
        min_severity=min_severity,
        min_agreement=min_agreement,
        max_comments=max_comments,
        show_disputed=show_disputed,
    )
    result = _execute(opts, lambda env: run(env, tree, base=base, options=options), cfg, runs_code=False)
    moved: list[Any] = []
    if context is not None and pull is not None:

        async def post() -> gh.Published:
            async with GitHubClient(context.api_url, context.token) as client:
                return await gh.publish(client, pull, result)

        published = asyncio.run(post())
        moved = published.moved
        if not quiet:
            verb = "updated" if published.updated else "posted"
            click.echo(
                f"review {verb}: {published.url} ({published.posted} new, {published.kept} kept, "
                f"{published.deleted} removed, {len(moved)} moved into the summary)",
                err=True,
            )
    if fmt == "github":
        commit = pull.head_sha if pull is not None else gh.head_commit(tree, os.environ)
        click.echo(json.dumps(gh.review_payload(result, commit, moved), indent=2))
    else:
        click.echo(FORMATS[fmt](result))
    _report(result.fusion, result.redactions, quiet or fmt != "text")


def _base_config(tree: Path, base: str, explicit: str | None) -> Config:
    """The config a pull request's review runs with: a polyfuse.toml inside the repository as it is on the base
    commit (a pull request cannot point the run's provider keys at another host); one outside it as it is."""
    from ..code.trusted import inside, toml_at_commit

    for path in config_paths(explicit):
        if inside(tree, path):
            data = toml_at_commit(tree, base, path)
            if data is not None:
                cfg = load_config(data=data)
                cfg.source = f"{path.name} at {base[:12]}"
                return cfg
            if explicit is not None:
                raise ConfigError(
                    f"config file {explicit} is not on the base commit {base[:12]}: a pull request cannot bring "
                    "its own configuration; commit it to the base branch or keep it outside the repository"
                )
        elif path.is_file() or explicit is not None:
            return load_config(path)
    return load_config(data={})


@code.command()
@click.argument("file")
@click.option("--function", help="Only this function (or class).")
@click.option("--output", help="Write the tests to this file (atomically) instead of stdout.")
@_common
def tests(file: str, function: str | None, output: str | None, quiet: bool, **opts: Any) -> None:
    """Generate unit tests for FILE; kept only if they pass against the code."""
    from ..code.edits import atomic_write
    from ..code.testgen import generate_tests

    result = _execute(opts, lambda env: generate_tests(env, Path(file), function=function))
    if output:
        atomic_write(Path(output), result.code)
    else:
        click.echo(result.code, nl=False)
    _report(result.fusion, result.redactions, quiet)
