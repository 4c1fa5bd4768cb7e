"""``transform``: an edit to existing code (fix, document, simplify, add types, refactor) as a unified diff.

Members answer with SEARCH/REPLACE blocks (or a diff); each candidate's edit must apply to the file (tolerantly
of whitespace) and the result must parse and keep its docstring examples passing, before the judge ranks the
survivors. The file is written (atomically) only with ``apply=True``, only from a candidate that passed.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..errors import FusionError, InvalidRequestError
from ..types import Candidate, FusionResult, Message
from .checks import CheckFailed, CheckSuite, Program, examples_check, syntax_check, syntax_error
from .context import find_root, gather_context, read_source
from .edits import EDIT_FORMAT_HELP, Edit, EditError, apply_to_files, atomic_write, parse_edits, unified_diff
from .task import CodeEnv, check_range, extract_code, language_of

__all__ = ["TransformResult", "transform", "transform_text"]


@dataclass
class TransformResult:
    path: str
    diff: str
    new_text: str
    fusion: FusionResult
    applied: bool = False
    redactions: tuple[str, ...] = ()


def _selection(text: str, line_range: tuple[int, int] | None) -> str:
    if line_range is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[line_range[0] - 1 : line_range[1]])


def _change_outside(old: str, new: str, first: int, last: int) -> int | None:
    """The first (1-based) line of ``old`` that the edit changes outside ``first``-``last``, if any; text
    inserted right before or after the selection counts as inside."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag == "equal":
            continue
        start, end = i1 + 1, max(i2, i1 + 1)  # an insertion at i1 sits between lines i1 and i1 + 1
        if tag == "insert" and first - 1 <= i1 <= last:
            continue
        if start < first or end > last:
            return start if start < first else end
    return None


def _edits(answer: str, original: str, selection: str, has_range: bool) -> list[Edit]:
    try:
        return parse_edits(answer)
    except EditError:
        if "```" not in answer:
            raise
    # Tolerated: a fenced block holding the rewritten selection (or the whole file) instead of edit blocks.
    code = extract_code(answer)
    if has_range:
        return [Edit(selection, code)]
    if len(code.splitlines()) >= 0.6 * len(original.splitlines()):
        return [Edit(original, code)]
    raise EditError("the answer has a code block but no SEARCH/REPLACE block saying where it goes")


def _messages(
    env: CodeEnv,
    rel: str,
    text: str,
    instruction: str,
    selection: str,
    line_range: tuple[int, int] | None,
    context: str,
) -> list[Message]:
    lang = language_of(Path(rel))
    where = (
        f" Change only lines {line_range[0]}-{line_range[1]}:\n```{lang}\n{selection}```\n"
        if line_range
        else ""
    )
    related = f"Related files, for reference only:\n{context}\n\n" if context else ""
    user = f"{related}File {rel}:\n```{lang}\n{text}```\n\nInstruction: {instruction.strip()}.{where}\n{EDIT_FORMAT_HELP}"
    return [
        Message(role="system", content="You are an expert programmer who edits code precisely."),
        Message(role="user", content=user),
    ]


async def transform(
    env: CodeEnv,
    path: Path,
    instruction: str,
    *,
    line_range: tuple[int, int] | None = None,
    apply: bool = False,
) -> TransformResult:
    text = read_source(path)
    return await transform_text(env, path, text, instruction, line_range=line_range, apply=apply)


async def transform_text(
    env: CodeEnv,
    path: Path,
    text: str,
    instruction: str,
    *,
    line_range: tuple[int, int] | None = None,
    apply: bool = False,
    root: Path | None = None,
) -> TransformResult:
    if not instruction.strip():
        raise InvalidRequestError("the instruction is empty: say how to change the code")
    if line_range is not None:
        check_range(text, line_range[0], line_range[1], path)
    root = root or find_root(path)
    rel = path.name
    selection = _selection(text, line_range)
    context = ""
    if env.settings.context_tokens:
        ctx = gather_context(
            root, current=path, query=selection + instruction, budget_tokens=env.settings.context_tokens
        )
        context = "\n\n".join(f"--- {f.path} ---\n{env.prepare(f.text, f.path)}" for f in ctx.files)
    lang = language_of(path)
    shown = env.prepare(text, str(path))

    def materialise(c: Candidate) -> Program:
        answer = env.redactor.restore(c.text)
        try:
            edits = _edits(answer, text, selection, line_range is not None)
            changed = apply_to_files({rel: text}, edits, default=rel)
        except EditError as exc:
            raise CheckFailed("applies", str(exc)) from None
        if rel not in changed:
            raise CheckFailed("applies", "the edit changes nothing")
        new = changed[rel]
        if line_range is not None:
            stray = _change_outside(text, new, *line_range)
            if stray is not None:
                raise CheckFailed(
                    "applies",
                    f"the edit changes line {stray}, outside the lines {line_range[0]}-{line_range[1]}",
                )
        name = rel if lang != "python" or rel.endswith(".py") else "candidate.py"
        return Program({name: new}, name, lang, {"diff": unified_diff(text, new, rel)})

    limits = env.sandbox_limits()
    checks = (
        [syntax_check(syntax_error(text) is not None), examples_check(limits, import_errors_fail=False)]
        if lang == "python"
        else []
    )
    suite = CheckSuite(materialise, checks)
    messages = _messages(env, rel, shown, instruction, env.prepare(selection, str(path)), line_range, context)
    result = await env.fuse(messages, screen=suite)
    program = suite.programs.get(result.verdict.choice or "")
    if program is None:  # cannot happen with best-of/vote over survivors; be explicit rather than write junk
        raise FusionError("the chosen candidate has no applied edit")
    applied = False
    if apply:
        if read_source(path) != text:
            raise InvalidRequestError(f"{path} changed while the pool was working; nothing written")
        atomic_write(path, program.source)
        applied = True
    return TransformResult(
        rel, str(program.data["diff"]), program.source, result, applied, tuple(env.redactor.report())
    )
