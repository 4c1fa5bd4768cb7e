"""``complete``: fill in the code at a cursor from what comes before and after it, fused best-of.

Each member is prompted in its own fill-in-the-middle format (``fim.py``). Candidates must parse (when the file
parsed around the hole) and pass the file's docstring examples. With ``fast=True`` the first candidate that
passes its checks within ``latency_budget`` seconds is returned at once, and the full fusion keeps running as
``refined``; when the budget passes first, ``wait_refined`` says whether to wait for the fusion (a command line)
or to answer "nothing yet" at once (an editor, which asks again on the next keystroke).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from ..fusion.engine import Adapt
from ..fusion.events import EventSink, FusionEvent
from ..providers.base import ChatModel, MemberSpec
from ..providers.registry import ProviderHub
from ..types import Candidate, FusionResult, GenerationParams, Message, Usage
from .checks import CheckFailed, CheckFn, CheckSuite, Program, examples_check, syntax_check, syntax_error
from .context import find_root, gather_context, read_source
from .fim import FimAdapter, FimTask, template_for
from .redact import is_remote_model
from .task import CodeEnv, language_of

__all__ = [
    "CompleteResult",
    "complete",
    "complete_text",
    "cursor_offset",
    "hole_parses",
    "load_models",
    "prime_cache",
    "prompt_window",
    "related_context",
    "warm_models",
]


@dataclass
class CompleteResult:
    insertion: str  # the text to insert at the cursor; "" when nothing passed its checks in time
    fusion: FusionResult | None  # None when the fast path answered before the fusion finished
    member: str | None
    fast: bool = False
    refined: asyncio.Task[CompleteResult] | None = None  # the full fusion, still running after a fast answer
    redactions: tuple[str, ...] = ()
    model: str | None = None  # the model of ``member``
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # also in the run log's meta ("completion")
    latency: float = 0.0  # seconds from the call to this answer
    usage: Usage = field(default_factory=Usage)  # of the answer's model call (fast), or of the whole fusion


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


def hole_parses(prefix: str, suffix: str) -> bool:
    """Whether the file is valid Python once the hole holds something trivial: then a candidate must parse."""
    indent = re.match(r"[ \t]*", prefix.rsplit("\n", 1)[-1]).group(0)  # type: ignore[union-attr]
    deeper = indent + "    "
    fillers = ["", "pass", "pass\n", f"\n{deeper}pass\n", f"{deeper}pass\n", "None"]
    return any(syntax_error(prefix + f + suffix) is None for f in fillers)


def _module_file(path: str) -> str:
    name = Path(path).name
    return name if re.fullmatch(r"[A-Za-z_]\w*\.py", name) else "candidate.py"


_EXAMPLE_LINE = re.compile(r"^\s*(>>>|\w+\(.*\)\s*(==|➞|=>|->)\s*\S)", re.M)


def _has_examples(text: str) -> bool:
    """Whether the file has docstring examples to run: without any, running each candidate in the sandbox
    would only cost time (a subprocess per keystroke) and prove nothing."""
    return _EXAMPLE_LINE.search(text) is not None


_WINDOW_STEP = 20


def prompt_window(prefix: str, suffix: str, before: int, after: int) -> tuple[str, str]:
    """The code a prompt shows around the cursor: about ``before`` lines before it, starting on a line that is
    a multiple of 20 (so it stays put while the user types), and ``after`` lines after it."""
    lines = prefix.split("\n")
    first = max(0, len(lines) - 1 - before)
    first -= first % _WINDOW_STEP
    return "\n".join(lines[first:]), "\n".join(suffix.split("\n")[: after + 1])


def related_context(env: CodeEnv, path: Path, root: Path, query: str) -> str:
    """Related files for the prompt, rendered (and redacted for remote models). Blocking file reads: call it in
    a thread. An editor computes it once per document, so the prompt's stable part stays the same across
    keystrokes and a local model's KV cache stays valid."""
    if not env.settings.context_tokens:
        return ""
    ctx = gather_context(root, current=path, query=query, budget_tokens=env.settings.context_tokens)
    return "\n\n".join(f"--- {f.path} ---\n{env.prepare(f.text, f.path)}" for f in ctx.files)


def _in_process(env: CodeEnv) -> list[tuple[MemberSpec, ChatModel]]:
    """The pool members whose model runs in this process (loading and a KV cache are theirs alone)."""
    pool = env.request([Message(role="user", content="-")]).pool
    return [(spec, env.hub.model(spec.model)) for spec in pool if not is_remote_model(spec.model)]


async def _one_token(model: ChatModel) -> None:
    async for _ in model.stream([Message(role="user", content="-")], GenerationParams(max_tokens=1)):
        pass


async def load_models(
    hub: ProviderHub, ids: list[str], on_ready: Callable[[str, int, int], None] | None = None
) -> list[str]:
    """Resolve each model id and load the in-process ones (one token each), so that a first request does not
    pay for it; remote models are not called. ``on_ready(model_id, done, total)`` follows the progress."""
    ids = list(dict.fromkeys(ids))
    for i, model_id in enumerate(ids):
        model = hub.model(model_id)  # an unknown id fails here, not on the first keystroke
        if not is_remote_model(model_id):
            await _one_token(model)
        if on_ready is not None:
            on_ready(model_id, i + 1, len(ids))
    return ids


async def warm_models(env: CodeEnv, on_ready: Callable[[str, int, int], None] | None = None) -> list[str]:
    """``load_models`` for a code task's pool and judge."""
    return await load_models(env.hub, env.model_ids(), on_ready)


async def prime_cache(env: CodeEnv, path: Path, context: str) -> None:
    """Evaluate the part of a document's completion prompts that every cursor position shares (instructions and
    related files) with each in-process member, so the first completion in the document starts from a warm KV
    cache. Remote members are not called."""
    task = FimTask("", "", path.name, language_of(path), context)
    params = GenerationParams(max_tokens=1)
    for spec, model in _in_process(env):
        adapter = FimAdapter(model, template_for(model, env.settings.fim_templates), task, spec.id, {})
        async for _ in adapter.stream([], params):
            pass


async def complete(env: CodeEnv, path: Path, line: int, col: int, *, fast: bool = False) -> CompleteResult:
    """Complete the file at 1-based ``line``/``col``."""
    text = read_source(path)
    offset = cursor_offset(text, line, col, path)
    return await complete_text(env, text, offset, path, fast=fast)


async def complete_text(
    env: CodeEnv,
    text: str,
    offset: int,
    path: Path,
    *,
    fast: bool = False,
    root: Path | None = None,
    context: str | None = None,
    wait_refined: bool = True,
) -> CompleteResult:
    """Complete a buffer (which may differ from the file on disk, as in an editor) at ``offset``.

    ``context``: the related files, already rendered (``related_context``); by default gathered now from the
    root (``find_root(path)`` unless given). ``wait_refined``: see the module docstring."""
    started = time.perf_counter()
    lang = language_of(path)
    prefix, suffix = text[:offset], text[offset:]
    if context is None:
        query = prefix[-600:] + suffix[:200]
        context = await asyncio.to_thread(related_context, env, path, root or find_root(path), query)
    s = env.settings
    shown = prompt_window(prefix, suffix, s.complete_prefix_lines, s.complete_suffix_lines)
    task = FimTask(
        env.prepare(shown[0], str(path)), env.prepare(shown[1], str(path)), path.name, lang, context
    )
    outputs: dict[str, str] = {}

    def adapt(spec: MemberSpec, model: ChatModel) -> ChatModel:
        return FimAdapter(model, template_for(model, env.settings.fim_templates), task, spec.id, outputs)

    def materialise(c: Candidate) -> Program:
        insertion = env.redactor.restore(outputs.get(c.member, c.text))
        if not insertion.strip():
            raise CheckFailed("completes", "empty completion")
        name = _module_file(str(path))
        return Program({name: prefix + insertion + suffix}, name, lang, {"insertion": insertion})

    checks: list[CheckFn] = []
    if lang == "python":
        checks.append(syntax_check(not hole_parses(prefix, suffix)))
        if _has_examples(text):
            checks.append(examples_check(env.sandbox_limits(), import_errors_fail=False))
    run = _Run(env, CheckSuite(materialise, checks), task, adapt, tuple(env.redactor.report()), started)
    if not fast:
        return await run.full()
    return await run.fast(s.latency_budget, wait_refined=wait_refined)


@dataclass
class _Run:
    env: CodeEnv
    suite: CheckSuite
    task: FimTask
    adapt: Adapt
    redactions: tuple[str, ...]
    started: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def _result(self, insertion: str, member: str | None, model: str | None, **kw: Any) -> CompleteResult:
        latency = time.perf_counter() - self.started
        return CompleteResult(
            insertion, member=member, model=model, redactions=self.redactions, run_id=self.run_id,
            latency=latency, **kw,
        )  # fmt: skip

    async def full(self, watch: EventSink | None = None) -> CompleteResult:
        result = await self.env.fuse(
            self.task.chat_messages(),
            screen=self.suite,
            adapt=self.adapt,
            max_tokens=self.env.settings.complete_max_tokens,
            watch=watch,
            meta={"completion": self.run_id},
        )
        member = result.verdict.choice
        program = self.suite.programs.get(member or "")
        insertion = str(program.data["insertion"]) if program else result.answer
        model = next((c.model for c in result.candidates if c.member == member), None)
        return self._result(insertion, member, model, fusion=result, usage=result.usage)

    async def fast(self, budget: float, *, wait_refined: bool) -> CompleteResult:
        """The first candidate that passes its checks, within ``budget`` seconds (0: no limit)."""
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
        try:
            waiting: set[asyncio.Future[Any]] = {first, refined}
            done, _ = await asyncio.wait(waiting, timeout=budget or None, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller gave up: nothing may keep calling models for it
            refined.cancel()
            for t in checking:
                t.cancel()
            raise
        finally:
            first.cancel()
        if refined in done or (first not in done and wait_refined):
            return await refined
        if first not in done:  # nothing passed in time: no suggestion now; the fusion goes on
            return self._result("", None, None, fusion=None, fast=True, refined=refined)
        c = first.result()
        _, program, _ = await self.suite.evaluate(c)  # cached: no second run
        assert program is not None
        insertion = str(program.data["insertion"])
        return self._result(
            insertion, c.member, c.model, fusion=None, fast=True, refined=refined, usage=c.usage
        )
