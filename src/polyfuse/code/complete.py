"""``complete``: fill in the code at a cursor from what comes before and after it, fused best-of.

Each member is prompted in its own fill-in-the-middle format (``fim.py``). Candidates must parse (when the file
parsed around the hole) and pass the file's docstring examples. With ``fast=True`` the first candidate that
passes its checks within ``latency_budget`` seconds is returned at once, and the full fusion keeps running as
``refined``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from ..fusion.engine import Adapt
from ..fusion.events import EventSink, FusionEvent
from ..providers.base import ChatModel, MemberSpec
from ..types import Candidate, FusionResult
from .checks import CheckFailed, CheckSuite, Program, examples_check, syntax_check, syntax_error
from .context import find_root, gather_context, read_source
from .fim import FimAdapter, FimTask, template_for
from .task import CodeEnv, language_of

__all__ = ["CompleteResult", "complete", "complete_text", "cursor_offset"]


@dataclass
class CompleteResult:
    insertion: str  # the text to insert at the cursor
    fusion: FusionResult | None  # None when the fast path answered before the fusion finished
    member: str | None
    fast: bool = False
    refined: asyncio.Task[CompleteResult] | None = None  # the full fusion, still running after a fast answer
    redactions: tuple[str, ...] = ()


def cursor_offset(text: str, line: int, col: int, path: Path | str) -> int:
    """Offset of a 1-based line and column; a position outside the file is the user's mistake."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise InvalidRequestError(f"line {line} is outside {path} (lines 1-{len(lines)})")
    if not 1 <= col <= len(lines[line - 1]) + 1:
        raise InvalidRequestError(
            f"column {col} is outside line {line} of {path} (columns 1-{len(lines[line - 1]) + 1})"
        )
    return sum(len(ln) + 1 for ln in lines[: line - 1]) + col - 1


def _hole_parses(prefix: str, suffix: str) -> bool:
    """Whether the file is valid Python once the hole holds something trivial: then a candidate must parse."""
    indent = re.match(r"[ \t]*", prefix.rsplit("\n", 1)[-1]).group(0)  # type: ignore[union-attr]
    deeper = indent + "    "
    fillers = ["", "pass", "pass\n", f"\n{deeper}pass\n", f"{deeper}pass\n", "None"]
    return any(syntax_error(prefix + f + suffix) is None for f in fillers)


def _module_file(path: str) -> str:
    name = Path(path).name
    return name if re.fullmatch(r"[A-Za-z_]\w*\.py", name) else "candidate.py"


async def complete(env: CodeEnv, path: Path, line: int, col: int, *, fast: bool = False) -> CompleteResult:
    """Complete the file at 1-based ``line``/``col``."""
    text = read_source(path)
    offset = cursor_offset(text, line, col, path)
    return await complete_text(env, text, offset, path, fast=fast)


async def complete_text(
    env: CodeEnv, text: str, offset: int, path: Path, *, fast: bool = False, root: Path | None = None
) -> CompleteResult:
    """Complete a buffer (which may differ from the file on disk, as in an editor) at ``offset``."""
    lang = language_of(path)
    prefix, suffix = text[:offset], text[offset:]
    root = root or find_root(path)
    around = prefix[-600:] + suffix[:200]
    context = ""
    if env.settings.context_tokens:
        ctx = gather_context(root, current=path, query=around, budget_tokens=env.settings.context_tokens)
        context = "\n\n".join(f"--- {f.path} ---\n{env.prepare(f.text, f.path)}" for f in ctx.files)
    task = FimTask(env.prepare(prefix, str(path)), env.prepare(suffix, str(path)), path.name, lang, context)
    outputs: dict[str, str] = {}

    def adapt(spec: MemberSpec, model: ChatModel) -> ChatModel:
        return FimAdapter(model, template_for(model, env.settings.fim_templates), task, spec.id, outputs)

    def materialise(c: Candidate) -> Program:
        insertion = env.redactor.restore(outputs.get(c.member, c.text))
        if not insertion.strip():
            raise CheckFailed("completes", "empty completion")
        name = _module_file(str(path))
        return Program({name: prefix + insertion + suffix}, name, lang, {"insertion": insertion})

    limits = env.sandbox_limits()
    suite = CheckSuite(
        materialise,
        [syntax_check(not _hole_parses(prefix, suffix)), examples_check(limits, import_errors_fail=False)]
        if lang == "python"
        else [],
    )
    redactions = tuple(env.redactor.report())
    run = _Run(env, suite, task, adapt, redactions)
    if not fast:
        return await run.full()
    return await run.fast(env.settings.latency_budget)


@dataclass
class _Run:
    env: CodeEnv
    suite: CheckSuite
    task: FimTask
    adapt: Adapt
    redactions: tuple[str, ...]

    async def full(self, watch: EventSink | None = None) -> CompleteResult:
        result = await self.env.fuse(
            self.task.chat_messages(),
            screen=self.suite,
            adapt=self.adapt,
            max_tokens=self.env.settings.complete_max_tokens,
            watch=watch,
        )
        member = result.verdict.choice
        program = self.suite.programs.get(member or "")
        insertion = str(program.data["insertion"]) if program else result.answer
        return CompleteResult(insertion, result, member, redactions=self.redactions)

    async def fast(self, budget: float) -> CompleteResult:
        loop = asyncio.get_running_loop()
        first: asyncio.Future[Candidate] = loop.create_future()
        checking: set[asyncio.Task[None]] = set()

        async def check(c: Candidate) -> None:
            checks, program, _ = await self.suite.evaluate(c)
            if program is not None and all(k.passed for k in checks) and not first.done():
                first.set_result(c.model_copy(update={"checks": checks}))

        def watch(event: FusionEvent) -> None:
            if event.type == "member_finished" and event.candidate is not None:
                t = asyncio.ensure_future(check(event.candidate))
                checking.add(t)
                t.add_done_callback(checking.discard)

        refined = asyncio.create_task(self.full(watch))
        waiting: set[asyncio.Future[Any]] = {first, refined}
        done, _ = await asyncio.wait(waiting, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        if refined in done or first not in done:
            first.cancel()
            return await refined
        c = first.result()
        _, program, _ = await self.suite.evaluate(c)  # cached: no second run
        assert program is not None
        return CompleteResult(
            str(program.data["insertion"]),
            None,
            c.member,
            fast=True,
            refined=refined,
            redactions=self.redactions,
        )
