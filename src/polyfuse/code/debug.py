"""``debug``: run a failing command (or read a traceback), explain the failure, propose a fix as a diff; with
``verify`` each candidate fix is applied to a scratch copy of the project and the command re-run there, in the
sandbox, before the judge sees it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidRequestError
from ..types import Candidate, Check, FusionResult, Message
from .checks import CheckFailed, CheckFn, CheckSuite, Program, syntax_error
from .context import RepoFilter, find_root, gather_context, read_source
from .edits import EDIT_FORMAT_HELP, EditError, apply_to_files, parse_edits, unified_diff
from .sandbox import SandboxLimits, SandboxResult, run_sandboxed
from .task import CodeEnv

__all__ = ["DebugResult", "debug", "run_command"]

_OUTPUT_TAIL = 4000
_MAX_FILES = 6
_MENTIONED = re.compile(r'File "([^"]+)", line \d+|^([\w./-]+\.\w+):\d+', re.M)


@dataclass
class DebugResult:
    explanation: str
    diff: str
    changed: dict[str, str]  # relative path -> new content
    fusion: FusionResult
    run: SandboxResult | None = None  # the failing run, when a command was given
    verified: bool = False  # the chosen fix made the command pass in a scratch copy
    redactions: tuple[str, ...] = ()


def _argv(cmd: str, root: Path) -> list[str]:
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise InvalidRequestError(f"cannot parse the command {cmd!r}: {exc}") from None
    if not argv:
        raise InvalidRequestError("the command is empty")
    if shutil.which(argv[0]) is None and not (root / argv[0]).is_file():
        raise InvalidRequestError(f"command not found: {argv[0]}")
    return argv


def _copy_project(root: Path, target: Path, rf: RepoFilter) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        d = Path(directory)
        return [
            n for n in names if n in (".git", "__pycache__", ".venv", "node_modules") or rf.ignored(d / n)
        ]

    shutil.copytree(root, target, ignore=ignore, dirs_exist_ok=True, symlinks=True)


async def run_command(
    argv: list[str], root: Path, changed: dict[str, str] | None, limits: SandboxLimits
) -> SandboxResult:
    """Run ``argv`` in a sandboxed scratch copy of the project, with ``changed`` files overlaid."""
    rf = RepoFilter(root)
    with tempfile.TemporaryDirectory(prefix="polyfuse-debug-") as tmp:
        os.chmod(tmp, 0o711)  # searchable, not listable: a sandbox that drops to uid 65534 can reach the copy
        scratch = Path(tmp) / "project"
        _copy_project(root, scratch, rf)
        for rel, content in (changed or {}).items():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch / rel).write_text(content, encoding="utf-8")
        return await run_sandboxed(argv, workdir=scratch, limits=limits)


def _mentioned(output: str, root: Path, rf: RepoFilter) -> list[Path]:
    found: list[Path] = []
    for m in _MENTIONED.finditer(output):
        raw = m.group(1) or m.group(2)
        p = Path(raw) if Path(raw).is_absolute() else root / raw
        # a scratch-copy path: map it back into the project by its relative tail
        if "polyfuse-debug-" in raw and "/project/" in raw:
            p = root / raw.split("/project/", 1)[1]
        p = p.resolve()
        if p.is_file() and root in p.parents and not rf.ignored(p) and p not in found:
            found.append(p)
    return found


def _verify_check(argv: list[str], root: Path, limits: SandboxLimits) -> CheckFn:
    async def check(program: Program) -> Check:
        res = await run_command(argv, root, program.files, limits)
        return Check(
            name="command passes",
            passed=res.ok,
            detail=res.summary(),
            seconds=res.duration,
            sandbox=res.sandbox,
        )

    return check


def _syntax_all() -> CheckFn:
    async def check(program: Program) -> Check | None:
        for rel, content in program.files.items():
            error = syntax_error(content, rel) if rel.endswith(".py") else None
            if error is not None:
                return Check(name="parses", passed=False, detail=f"{rel} {error}")
        return Check(name="parses", passed=True, detail="ok")

    return check


async def debug(
    env: CodeEnv,
    *,
    root: Path,
    cmd: str | None = None,
    traceback: str | None = None,
    files: list[Path] | None = None,
    verify: bool = False,
) -> DebugResult:
    root = find_root(root)
    rf = RepoFilter(root)
    if cmd is None and not (traceback or "").strip():
        raise InvalidRequestError("nothing to debug: give --cmd or a traceback on stdin")
    if verify and cmd is None:
        raise InvalidRequestError("--verify needs --cmd: there is no command to re-run")
    argv = _argv(cmd, root) if cmd is not None else None
    for f in files or []:
        read_source(f)
    limits = env.sandbox_limits()
    run = None
    output = traceback or ""
    if argv is not None:
        run = await run_command(argv, root, None, limits)
        if run.ok:
            raise InvalidRequestError(f"the command passed ({' '.join(argv)}): nothing to debug")
        output = (run.stdout + "\n" + run.stderr).strip()[-_OUTPUT_TAIL:] + f"\n[{run.summary()}]"
    shown_files = [*(p.resolve() for p in files or []), *_mentioned(output, root, rf)][:_MAX_FILES]
    originals = {
        str(p.relative_to(root)): read_source(p) for p in dict.fromkeys(shown_files) if not rf.ai_excluded(p)
    }
    ctx = (
        gather_context(root, query=output, budget_tokens=env.settings.context_tokens)
        if env.settings.context_tokens
        else None
    )
    for cf in ctx.files if ctx else []:
        if cf.path not in originals and not cf.truncated and len(originals) < _MAX_FILES:
            originals[cf.path] = cf.text
    shown = "\n\n".join(f"--- {rel} ---\n{env.prepare(t, rel)}" for rel, t in originals.items())
    what = f"The command `{cmd}` failed" if cmd else "This failure happened"
    user = (
        f"{what}:\n```\n{env.prepare(output, 'output')}\n```\n\nProject files:\n{shown}\n\n"
        "First explain the cause in two or three sentences. Then give the fix.\n" + EDIT_FORMAT_HELP
    )
    messages = [
        Message(role="system", content="You are an expert debugger."),
        Message(role="user", content=user),
    ]

    def materialise(c: Candidate) -> Program:
        answer = env.redactor.restore(c.text)
        try:
            changed = apply_to_files(originals, parse_edits(answer))
        except EditError as exc:
            raise CheckFailed("applies", str(exc)) from None
        if not changed:
            raise CheckFailed("applies", "the fix changes nothing")
        explanation = answer.split("<<<<<<<")[0].split("\n@@")[0].strip()
        diff = "".join(unified_diff(originals[p], new, p) for p, new in changed.items())
        return Program(changed, next(iter(changed)), data={"diff": diff, "explanation": explanation})

    checks: list[CheckFn] = [_syntax_all()]
    if verify and argv is not None:
        checks.append(_verify_check(argv, root, limits))
    suite = CheckSuite(materialise, checks)
    result = await env.fuse(messages, screen=suite)
    program = suite.programs[result.verdict.choice or ""]
    return DebugResult(
        explanation=str(program.data["explanation"]),
        diff=str(program.data["diff"]),
        changed=program.files,
        fusion=result,
        run=run,
        verified=verify,
        redactions=tuple(env.redactor.report()),
    )
