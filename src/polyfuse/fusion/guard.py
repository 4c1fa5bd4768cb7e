"""Writing guarded by choosing: merge and debate must not turn a right short answer wrong.

When the chosen candidate is a short answer (a number, a letter, a name or a short phrase; a code block that
passes its checks) the judge's written answer is held against it: it must say the same thing, briefly or at
length (a long answer must contain the chosen number, letter or name). When it does not (it contradicts every
candidate, or sides with one the judge did not choose), the engine returns the chosen candidate and records
``writer_rejected`` with what the writer wrote. When the judge chose nothing (its
written verdict scored no answer), the written answer only has to agree with some candidate; contradicting
them all returns the vote's pick. Long-form answers keep the written synthesis: there, differing from every
candidate is what a synthesis does.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..types import Candidate
from .agreement import FUNCTION_WORDS, normalize, similarity

__all__ = ["Claim", "claim_of", "agrees", "states", "Judgement", "hold_against"]

# Past these lengths an answer is prose, and the synthesis stands: a stated letter ("the answer is B") within
# 40 words, a final number within 25 (a worked sum), a name or short phrase within 12.
_LETTER_WORDS, _NUMBER_WORDS, _PHRASE_WORDS = 40, 25, 12
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LETTER = re.compile(r"^\W*\(?([A-J])(?:[\).:\]]|\s|$)")
_LETTER_SAID = re.compile(r"\b(?:answer|option)(?:\s+is)?\s*[:\-]?\s*\(?([A-J])\b", re.I)
_CODE = re.compile(r"```[^\n]*\n(.*?)(?:```|$)", re.S)
_SAME_PHRASE = 0.5

Screen = Callable[[list[Candidate]], Awaitable[list[Candidate]]]


@dataclass(frozen=True)
class Claim:
    """What a short answer asserts: a letter, a number, or a short phrase."""

    kind: str  # "letter" | "number" | "phrase"
    value: str


def claim_of(text: str) -> Claim | None:
    """The claim of a short answer; None for long-form text or code (checked by running it instead)."""
    if _CODE.search(text):
        return None
    words = normalize(text).split()
    if not words or len(words) > _LETTER_WORDS:
        return None
    letter = _LETTER.search(text.strip()) or _LETTER_SAID.search(text)
    if letter and (len(words) <= 3 or _LETTER_SAID.search(text)):
        return Claim("letter", letter.group(1).upper())
    numbers = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", text))
    if numbers and len(words) <= _NUMBER_WORDS:
        return Claim("number", str(float(numbers[-1])))
    if len(words) <= _PHRASE_WORDS and not numbers:
        return Claim("phrase", text.strip())
    return None


def agrees(a: Claim, b: Claim) -> bool:
    if a.kind == b.kind and a.kind in ("letter", "number"):
        return a.value == b.value
    if "phrase" in (a.kind, b.kind) and a.kind != b.kind:
        return False
    return similarity(a.value, b.value) >= _SAME_PHRASE


@dataclass(frozen=True)
class Judgement:
    keep_written: bool
    reason: str = ""


def _has_code(text: str) -> bool:
    return bool(_CODE.search(text))


async def hold_against(
    written: str,
    chosen: Candidate,
    candidates: Sequence[Candidate],
    screen: Screen | None,
    *,
    judged: bool = True,
) -> Judgement:
    """Whether the written answer may stand, given the chosen candidate and the others. ``judged=False``: the
    chosen one is only the vote's pick (the judge chose none), so agreeing with any candidate will do."""
    ok = [c for c in candidates if c.ok]
    if screen is not None and _has_code(written) and any(c.checks for c in ok):
        probe = chosen.model_copy(update={"member": "(written answer)", "text": written, "checks": []})
        checked = (await screen([probe]))[0]
        if not checked.ok:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in checked.checks if not c.passed)
            return Judgement(False, f"the written code fails its checks ({failed[:200]})")
        return Judgement(True)
    theirs = [(c, claim) for c in ok if (claim := claim_of(c.text)) is not None]
    chosen_claim = claim_of(chosen.text)
    if judged and chosen_claim is None:
        return Judgement(True)  # the chosen answer is prose: a synthesis is meant to differ from it
    if not judged and not theirs:
        return Judgement(True)
    if judged and chosen_claim is not None and states(written, chosen_claim):
        return Judgement(True)
    sides = [c.member for c, claim in theirs if states(written, claim)]
    if sides and not judged:
        return Judgement(True)
    if sides:
        return Judgement(
            False, f"the written answer sides with {', '.join(sides)}, not the chosen {chosen.member}"
        )
    return Judgement(False, "the written answer contradicts every candidate")


def states(written: str, claim: Claim) -> bool:
    """Whether the written answer says what a short claim says: as a short answer of its own, or, written out
    at length, by containing it (the letter it names, the number it ends on, the phrase itself)."""
    mine = claim_of(written)
    if mine is not None and mine.kind == claim.kind:
        return agrees(mine, claim)
    if claim.kind == "letter":
        said = _LETTER_SAID.search(written) or _LETTER.search(written.strip())
        return said is not None and said.group(1).upper() == claim.value
    if claim.kind == "number":
        numbers = _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", written))
        return bool(numbers) and float(numbers[-1]) == float(claim.value)
    if mine is not None:
        return agrees(mine, claim)
    # at length: every content word of the short answer is in it ("Paris" in "The capital is Paris, ...")
    content = set(normalize(claim.value).split()) - FUNCTION_WORDS
    words = set(normalize(written).split())
    return content <= words if content else f" {normalize(claim.value)} " in f" {normalize(written)} "
