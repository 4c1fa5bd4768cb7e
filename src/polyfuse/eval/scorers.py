"""Scorers: decide whether an answer is right for one dataset item. A registry, so a new scorer is one class.

| name | item fields | right when |
| --- | --- | --- |
| exact | answer (text or list) | the answer, stripped, equals one expected text |
| normalized | answer (text or list) | equal after lowercasing, removing accents, punctuation and filler |
| contains | answer (text or list) | the normalised expected text appears in the answer as whole words |
| choice | answer (a letter), choices (optional) | the letter the answer picks is the expected one |
| numeric | answer (number), tolerance (optional) | the last number in the answer is within tolerance |
| regex | pattern | the pattern is found in the answer (``re.search``; add ``(?i)`` to ignore case) |
| code | tests, entry_point/code_prefix (optional) | the answer's code passes the tests in the sandbox |
| rubric | rubric, reference (optional) | a grader model (its own, reported as such) says it meets the rubric |
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..code.sandbox import SandboxLimits, run_python
from ..errors import ProviderError
from ..fusion.agreement import normalize
from ..providers.base import ChatModel
from ..types import GenerationParams, Message, Usage
from .errors import UnknownScorerError

__all__ = [
    "Score",
    "ScoringContext",
    "Scorer",
    "register_scorer",
    "get_scorer",
    "scorer_names",
    "extract_code",
]


@dataclass
class Score:
    correct: bool
    detail: str = ""
    grader_usage: Usage = field(default_factory=Usage)
    grader_cost: float = 0.0


@dataclass
class ScoringContext:
    """What a scorer may use: the grader model for rubric scoring, sandbox limits for code."""

    grader: ChatModel | None = None
    grader_params: GenerationParams = field(
        default_factory=lambda: GenerationParams(temperature=0.0, max_tokens=160)
    )
    sandbox: SandboxLimits = field(default_factory=lambda: SandboxLimits(timeout=15.0, cpu_seconds=10))


class Scorer(ABC):
    name: ClassVar[str]
    required: ClassVar[tuple[str, ...]] = ()
    needs_grader: ClassVar[bool] = False

    def check(self, item: dict[str, Any]) -> str | None:
        """Why the item cannot be scored (missing or malformed fields), or None."""
        for name in self.required:
            if item.get(name) in (None, "", []):
                return f"needs the field '{name}'"
        return self.check_values(item)

    def check_values(self, item: dict[str, Any]) -> str | None:
        return None

    @abstractmethod
    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score: ...


_SCORERS: dict[str, Scorer] = {}


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    _SCORERS[cls.name] = cls()
    return cls


def get_scorer(name: str) -> Scorer:
    try:
        return _SCORERS[name]
    except KeyError:
        raise UnknownScorerError(
            f"unknown scorer {name!r}; valid scorers: {', '.join(scorer_names())}"
        ) from None


def scorer_names() -> list[str]:
    return list(_SCORERS)


def _expected(item: dict[str, Any]) -> list[str]:
    value = item["answer"]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@register_scorer
class Exact(Scorer):
    name = "exact"
    required = ("answer",)

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        ok = answer.strip() in [e.strip() for e in _expected(item)]
        return Score(ok, "" if ok else f"expected {_expected(item)[0]!r}")


@register_scorer
class Normalized(Scorer):
    name = "normalized"
    required = ("answer",)

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        lines = answer.strip().splitlines() or [""]
        got = {normalize(answer), normalize(lines[0])}
        ok = any(normalize(e) in got for e in _expected(item))
        return Score(ok, "" if ok else f"expected {_expected(item)[0]!r}")


@register_scorer
class Contains(Scorer):
    name = "contains"
    required = ("answer",)

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        text = f" {normalize(answer)} "
        ok = any(f" {normalize(e)} " in text for e in _expected(item))
        return Score(ok, "" if ok else f"expected {_expected(item)[0]!r} in the answer")


_LETTER_PATTERNS = (
    re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?\**([A-J])\b", re.I),
    re.compile(r"^\W*\(?([A-J])(?:[\).:\]]|\s|$)"),
    re.compile(r"(?:^|\s)\(([A-J])\)"),
    re.compile(r"\b([A-J])\)"),
)


def pick_letter(answer: str, choices: list[str] | None = None) -> str | None:
    """The option an answer picks: an explicit letter first, else the one option whose text it quotes."""
    for pattern in _LETTER_PATTERNS:
        m = pattern.search(answer.strip())
        if m:
            return m.group(1).upper()
    if choices:
        text = f" {normalize(answer)} "
        hits = [i for i, c in enumerate(choices) if f" {normalize(str(c))} " in text]
        if len(hits) == 1:
            return "ABCDEFGHIJ"[hits[0]]
    return None


@register_scorer
class Choice(Scorer):
    name = "choice"
    required = ("answer",)

    def check_values(self, item: dict[str, Any]) -> str | None:
        if not re.fullmatch(r"[A-Ja-j]", str(item["answer"]).strip()):
            return f"needs 'answer' to be one letter A-J (got {item['answer']!r})"
        if "choices" in item and not isinstance(item["choices"], list):
            return "needs 'choices' to be a list of option texts"
        return None

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        want = str(item["answer"]).strip().upper()
        got = pick_letter(answer, item.get("choices"))
        return Score(got == want, f"picked {got or 'nothing'}, expected {want}")


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@register_scorer
class Numeric(Scorer):
    name = "numeric"
    required = ("answer",)

    def check_values(self, item: dict[str, Any]) -> str | None:
        try:
            float(str(item["answer"]).replace(",", ""))
            float(item.get("tolerance", 0))
        except ValueError:
            return f"needs 'answer' to be a number (got {item['answer']!r})"
        return None

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        want = float(str(item["answer"]).replace(",", ""))
        tolerance = float(item.get("tolerance", 1e-6))
        found = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", answer))
        if not found:
            return Score(False, "no number in the answer")
        got = float(found[-1])
        return Score(abs(got - want) <= tolerance, f"got {found[-1]}, expected {item['answer']}")


@register_scorer
class Regex(Scorer):
    name = "regex"
    required = ("pattern",)

    def check_values(self, item: dict[str, Any]) -> str | None:
        try:
            re.compile(str(item["pattern"]))
        except re.error as exc:
            return f"has an invalid 'pattern': {exc}"
        return None

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        ok = re.search(str(item["pattern"]), answer) is not None
        return Score(ok, "" if ok else f"no match for /{item['pattern']}/")


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|$)", re.S | re.I)


def extract_code(answer: str) -> str:
    """The code in an answer: the longest fenced block (an unclosed one counts), else the whole text."""
    blocks = [b for b in _FENCE.findall(answer) if b.strip()]
    return max(blocks, key=len) if blocks else answer


@register_scorer
class Code(Scorer):
    """Runs ``code_prefix`` + the answer's code + ``tests`` in the sandbox. With an ``entry_point`` (HumanEval),
    an answer that only writes the body continues the prefix's signature; one that writes the whole function
    redefines it."""

    name = "code"
    required = ("tests",)

    def program(self, item: dict[str, Any], answer: str) -> str:
        code = extract_code(answer)
        prefix = str(item.get("code_prefix") or "")
        entry = item.get("entry_point")
        if prefix and entry and not re.search(rf"^\s*def\s+{re.escape(str(entry))}\b", code, re.M):
            body = code if code.startswith((" ", "\t")) else "    " + code.replace("\n", "\n    ")
            return f"{prefix}{body}\n\n{item['tests']}\n"
        return f"{prefix}\n\n{code}\n\n{item['tests']}\n"

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        result = await run_python(self.program(item, answer), limits=ctx.sandbox)
        return Score(result.ok, "tests pass" if result.ok else result.summary())


_GRADER_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["pass", "fail"]},
        "reason": {"type": "string", "maxLength": 200},
    },
    "required": ["verdict", "reason"],
}


@register_scorer
class Rubric(Scorer):
    """LLM-as-judge: a grader model (``--grader``, never silently the fusion judge) checks the answer against
    the item's rubric. Its tokens and cost are reported apart from the arms'."""

    name = "rubric"
    required = ("rubric",)
    needs_grader = True

    def messages(self, item: dict[str, Any], answer: str) -> list[Message]:
        reference = f"\nA reference answer:\n{item['reference']}\n" if item.get("reference") else ""
        return [
            Message(
                role="system",
                content="You grade answers strictly against a rubric. Reply with JSON: "
                '{"verdict": "pass" or "fail", "reason": "one sentence"}.',
            ),
            Message(
                role="user",
                content=f"Question:\n{item['prompt']}\n\nRubric:\n{item['rubric']}\n{reference}\n"
                f"Answer to grade:\n<<<\n{answer}\n>>>\n\nDoes the answer meet the rubric?",
            ),
        ]

    async def score(self, item: dict[str, Any], answer: str, ctx: ScoringContext) -> Score:
        if ctx.grader is None:
            raise UnknownScorerError("the rubric scorer needs a grader model: --grader MODEL")
        params = ctx.grader_params.merged(json_schema=_GRADER_SCHEMA)
        try:
            done = await ctx.grader.complete(self.messages(item, answer), params)
        except ProviderError as exc:
            return Score(False, f"grader failed: {exc}")
        verdict = _grader_verdict(done.text)
        detail = f"grader {ctx.grader.id}: {verdict or 'unreadable reply'}"
        return Score(verdict == "pass", detail, done.usage, done.cost or 0.0)


def _grader_verdict(text: str) -> str | None:
    try:
        data = json.loads(text[text.find("{") : text.rfind("}") + 1])
        verdict = str(data.get("verdict", "")).lower()
        return verdict if verdict in ("pass", "fail") else None
    except (ValueError, AttributeError):
        words = set(re.findall(r"[a-z]+", text.lower()))
        if ("pass" in words) != ("fail" in words):
            return "pass" if "pass" in words else "fail"
        return None
