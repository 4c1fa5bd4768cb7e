"""Code actions on a selection: explain, fix, document, generate tests. Each computes a WorkspaceEdit through
the same library tasks as the CLI (a registry, not a string switch)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import from_fs_path, to_fs_path

from ..code.explain import explain
from ..code.task import language_of
from ..code.testgen import generate_tests
from ..code.transform import transform_text
from .protocol import open_document

if TYPE_CHECKING:
    from .server import PolyfuseServer

__all__ = ["ACTIONS", "ActionSpec", "resolve_action"]


@dataclass(frozen=True)
class Selection:
    uri: str
    path: Path
    text: str
    start: int  # 1-based first line
    end: int  # 1-based last line


Run = Callable[["PolyfuseServer", Selection], Awaitable[types.WorkspaceEdit]]


@dataclass(frozen=True)
class ActionSpec:
    title: str
    kind: str
    run: Run


def _whole(text: str) -> types.Range:
    lines = text.split("\n")
    return types.Range(
        start=types.Position(line=0, character=0),
        end=types.Position(line=len(lines) - 1, character=len(lines[-1])),
    )


async def _rewrite(ls: PolyfuseServer, sel: Selection, instruction: str) -> types.WorkspaceEdit:
    result = await transform_text(
        ls.env("transform"),
        sel.path,
        sel.text,
        instruction,
        line_range=(sel.start, sel.end),
        root=ls.root_for(sel.path),
    )
    return types.WorkspaceEdit(
        changes={sel.uri: [types.TextEdit(range=_whole(sel.text), new_text=result.new_text)]}
    )


async def _fix(ls: PolyfuseServer, sel: Selection) -> types.WorkspaceEdit:
    return await _rewrite(ls, sel, "Fix the bugs in this code")


async def _document(ls: PolyfuseServer, sel: Selection) -> types.WorkspaceEdit:
    return await _rewrite(ls, sel, "Add clear docstrings and comments; do not change behaviour")


async def _explain(ls: PolyfuseServer, sel: Selection) -> types.WorkspaceEdit:
    lines = sel.text.split("\n")
    code = "\n".join(lines[sel.start - 1 : sel.end])
    result = await explain(ls.env("explain"), code, language=language_of(sel.path), path=str(sel.path))
    first = lines[sel.start - 1]
    indent = first[: len(first) - len(first.lstrip())]
    mark = "#" if language_of(sel.path) in ("python", "ruby", "bash") else "//"
    comment = "".join(f"{indent}{mark} {ln}".rstrip() + "\n" for ln in result.text.strip().splitlines())
    at = types.Position(line=sel.start - 1, character=0)
    return types.WorkspaceEdit(
        changes={sel.uri: [types.TextEdit(range=types.Range(start=at, end=at), new_text=comment)]}
    )


async def _tests(ls: PolyfuseServer, sel: Selection) -> types.WorkspaceEdit:
    result = await generate_tests(ls.env("tests"), sel.path)
    target = from_fs_path(result.test_path) or result.test_path
    start = types.Position(line=0, character=0)
    return types.WorkspaceEdit(
        document_changes=[
            types.CreateFile(
                uri=target, options=types.CreateFileOptions(overwrite=False, ignore_if_exists=True)
            ),
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=target, version=None),
                edits=[types.TextEdit(range=types.Range(start=start, end=start), new_text=result.code)],
            ),
        ]
    )


ACTIONS: dict[str, ActionSpec] = {
    "explain": ActionSpec("polyfuse: explain this code", types.CodeActionKind.Source.value, _explain),
    "fix": ActionSpec("polyfuse: fix this code", types.CodeActionKind.QuickFix.value, _fix),
    "document": ActionSpec(
        "polyfuse: document this code", types.CodeActionKind.RefactorRewrite.value, _document
    ),
    "tests": ActionSpec("polyfuse: generate tests", types.CodeActionKind.Source.value, _tests),
}


async def resolve_action(ls: PolyfuseServer, action: types.CodeAction) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    spec = ACTIONS.get(str(data.get("action")))
    rng = data.get("range")
    if spec is None or not isinstance(rng, list) or len(rng) != 2:
        raise JsonRpcInvalidParams("code action data is missing or not from this server")
    uri = str(data.get("uri", ""))
    doc = open_document(ls.workspace, uri)
    sel = Selection(uri, Path(to_fs_path(uri) or "untitled.py"), doc.source, int(rng[0]) + 1, int(rng[1]) + 1)
    action.edit = await spec.run(ls, sel)
    return action
