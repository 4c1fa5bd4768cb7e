"""Edits proposed by models: search/replace blocks or unified diffs, applied tolerantly, written atomically.

Models get line numbers and whitespace wrong, so an edit is located by its text, not its position: first an
exact match, then one ignoring trailing whitespace, then one ignoring indentation (the replacement is then
re-indented by the same offset). A search text that matches nowhere, or in more than one place, is an
``EditError``: the candidate fails, the file is never half-edited. ``atomic_write`` replaces a file in one step.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Edit",
    "EditError",
    "parse_edits",
    "apply_edits",
    "apply_to_files",
    "unified_diff",
    "atomic_write",
    "EDIT_FORMAT_HELP",
]

EDIT_FORMAT_HELP = (
    "Answer with one or more SEARCH/REPLACE blocks, exactly in this form:\n"
    "path/to/file.py\n<<<<<<< SEARCH\nlines copied exactly from the file\n=======\nthe new lines\n"
    ">>>>>>> REPLACE\n"
    "The SEARCH part must copy existing lines of the file exactly, enough of them to be unique. "
    "To insert code, search for the line before it and repeat it in the replacement."
)


class EditError(ValueError):
    """An edit that cannot be parsed or does not apply."""


@dataclass(frozen=True)
class Edit:
    search: str
    replace: str
    path: str | None = None  # the file the block names, if any


_BLOCK = re.compile(
    r"(?:^(?P<path>[^\n<>=`]*?\S)[ \t]*\n(?:```[^\n]*\n)?)?"
    r"^<{5,9} ?SEARCH[^\n]*\n(?P<search>.*?)^={5,9}[ \t]*\n(?P<replace>.*?)^>{5,9} ?REPLACE[^\n]*$",
    re.S | re.M,
)
_HUNK = re.compile(r"^@@[^\n]*@@[^\n]*$", re.M)
_FILE_HEADER = re.compile(r"^\+\+\+ (?:b/)?(?P<path>\S+)", re.M)


def _clean_path(raw: str | None) -> str | None:
    if not raw:
        return None
    raw = raw.strip().strip("`*:").strip()
    raw = re.sub(r"^(?:file|path)\s*[:=]\s*", "", raw, flags=re.I)
    return raw if raw and " " not in raw and len(raw) < 260 else None


def _parse_blocks(text: str) -> list[Edit]:
    return [
        Edit(m.group("search"), m.group("replace"), _clean_path(m.group("path")))
        for m in _BLOCK.finditer(text)
    ]


def _parse_diff(text: str) -> list[Edit]:
    edits: list[Edit] = []
    lines = text.splitlines(keepends=True)
    path: str | None = None
    i = 0
    while i < len(lines):
        header = _FILE_HEADER.match(lines[i])
        if header:
            path = None if header.group("path") == "/dev/null" else header.group("path")
        if not _HUNK.match(lines[i].rstrip("\n")):
            i += 1
            continue
        old: list[str] = []
        new: list[str] = []
        i += 1
        while i < len(lines) and not _HUNK.match(lines[i].rstrip("\n")) and not lines[i].startswith("--- "):
            line = lines[i]
            body = line[1:] if line[:1] in "+- " and line not in ("\n",) else line
            if line.startswith("-"):
                old.append(body)
            elif line.startswith("+"):
                new.append(body)
            elif line.startswith("\\"):
                pass  # "\ No newline at end of file"
            else:
                old.append(body)
                new.append(body)
            i += 1
        edits.append(Edit("".join(old), "".join(new), path))
    return edits


def parse_edits(text: str) -> list[Edit]:
    """Every edit in a model's answer (search/replace blocks first, else unified diff hunks)."""
    edits = _parse_blocks(text) or _parse_diff(text)
    if not edits:
        raise EditError("no SEARCH/REPLACE block or diff hunk found in the answer")
    return edits


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _find(lines: list[str], needle: list[str], norm: Callable[[str], str]) -> list[int]:
    target = [norm(x) for x in needle]
    hay = [norm(x) for x in lines]
    n = len(target)
    return [i for i in range(len(hay) - n + 1) if hay[i : i + n] == target]


def _reindent(replace: list[str], delta: str, remove: str) -> list[str]:
    out = []
    for line in replace:
        if not line.strip():
            out.append(line)
        elif remove and line.startswith(remove):
            out.append(delta + line[len(remove) :])
        else:
            out.append(delta + line)
    return out


# Exact, then ignoring trailing whitespace, then ignoring indentation.
_NORMALISERS: tuple[Callable[[str], str], ...] = (
    lambda s: s.rstrip("\r\n"),
    lambda s: s.rstrip(),
    lambda s: s.strip(),
)


def _apply_one(content: str, edit: Edit) -> str:
    if not edit.search.strip():
        if not content.strip():
            return edit.replace  # a new (or empty) file: the replacement is its content
        raise EditError("an edit with an empty SEARCH part is ambiguous in a non-empty file")
    lines = content.splitlines(keepends=True)
    needle = edit.search.splitlines(keepends=True)
    while needle and not needle[-1].strip():
        needle.pop()  # trailing blank lines in a block are noise
    while needle and not needle[0].strip():
        needle.pop(0)
    replace = edit.replace.splitlines(keepends=True)
    if replace and not replace[-1].endswith("\n"):
        replace[-1] += "\n"
    for norm in _NORMALISERS:
        hits = _find(lines, needle, norm)
        if len(hits) > 1:
            raise EditError(f"the SEARCH text matches {len(hits)} places; it must match exactly one")
        if hits:
            start = hits[0]
            found, wanted = _indent(lines[start]), _indent(needle[0])
            new = replace
            if found != wanted:
                new = _reindent(replace, found, wanted)
            end = start + len(needle)
            if end == len(lines) and lines and not lines[-1].endswith("\n") and new:
                new = [*new[:-1], new[-1].rstrip("\n")]
            return "".join(lines[:start] + new + lines[end:])
    first = needle[0].strip()[:60] if needle else ""
    raise EditError(f"the SEARCH text does not match the file (first line: {first!r})")


def apply_edits(content: str, edits: list[Edit]) -> str:
    """Apply edits to one file's content in order; raise EditError if any does not apply."""
    for edit in edits:
        content = _apply_one(content, edit)
    return content


def apply_to_files(files: dict[str, str], edits: list[Edit], default: str | None = None) -> dict[str, str]:
    """Apply edits across files (``path -> content``); returns only the files that changed. An edit naming no
    known file goes to ``default``; one naming an unknown file is an error (models invent paths)."""
    out = dict(files)
    for edit in edits:
        path = _resolve_path(edit.path, files, default)
        out[path] = _apply_one(out[path], edit)
    return {p: c for p, c in out.items() if c != files.get(p)}


def _resolve_path(path: str | None, files: dict[str, str], default: str | None) -> str:
    if path in files:
        return path
    if path is not None:
        matches = [p for p in files if p.endswith("/" + path) or path.endswith("/" + p)]
        if len(matches) == 1:
            return matches[0]
    if default is not None and (path is None or Path(path).name == Path(default).name):
        return default
    if default is not None and len(files) == 1:
        return default
    raise EditError(f"the edit names a file that is not part of the context: {path!r}")


def unified_diff(old: str, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory and rename it over the target: a reader (or a
    crash) sees the old file or the new one, never half of it. Keeps the file's permissions."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".polyfuse", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
