"""Make a JSON verdict coherent before anyone sees it: the choice follows the scores, and each reason stays
with the answer it was written about (or is dropped).

Small judges write verdicts that contradict themselves: "choice": "A" next to a higher score for B, or the
reason for A quoting B's answer ("Paris" under the answer that said "The City of Love"). A reason is taken to
be about the answer whose distinctive words (words no other answer uses) it quotes; one that quotes only another
answer's moves there when that answer's own reason is misplaced too (a swap), and is dropped otherwise. Scores
stay under the label the judge wrote them for (labels are keys of the JSON object, reasons are free text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..types import Candidate, CandidateScore
from .agreement import FUNCTION_WORDS, normalize

__all__ = ["Coherent", "make_coherent", "top_scored"]

_STOPWORDS = FUNCTION_WORDS | {
    "answer",
    "correct",
    "right",
    "wrong",
    "yes",
    "no",
    "not",
}  # words that say nothing of a reason


class Coherent:
    """The repaired scores, the label chosen, and what was changed (for the verdict's notes)."""

    def __init__(self, scores: list[CandidateScore], choice_label: str | None, notes: list[str]) -> None:
        self.scores = scores
        self.choice_label = choice_label
        self.notes = notes


def _words(text: str) -> set[str]:
    return {w for w in normalize(text).split() if w not in _STOPWORDS and len(w) > 1}


def _distinctive(texts: Mapping[str, str]) -> dict[str, set[str]]:
    words = {label: _words(text) for label, text in texts.items()}
    out = {}
    for label, own in words.items():
        others = set().union(*(w for lb, w in words.items() if lb != label)) if len(words) > 1 else set()
        out[label] = own - others
    return out


def _about(reason: str, distinctive: Mapping[str, set[str]]) -> set[str]:
    """Labels whose distinctive words the reason quotes."""
    said = _words(reason)
    return {label for label, words in distinctive.items() if words & said}


def top_scored(scores: Sequence[CandidateScore], preferred: str | None = None) -> str | None:
    """The label with the highest score; among equals, the judge's own choice if it is one of them, else
    None."""
    if not scores:
        return preferred
    best = max(s.score for s in scores)
    tied = [s.label for s in scores if s.score == best]
    if len(tied) == 1:
        return tied[0]
    return preferred if preferred in tied else None


def _reattach(
    scores: list[CandidateScore], texts: Mapping[str, str], notes: list[str]
) -> list[CandidateScore]:
    distinctive = _distinctive(texts)
    misplaced: dict[str, str] = {}  # label the reason sits under -> label it is about
    for s in scores:
        if not s.reason.strip() or s.label not in texts:
            continue
        about = _about(s.reason, distinctive)
        if about and s.label not in about:
            misplaced[s.label] = next(iter(sorted(about))) if len(about) == 1 else ""
    if not misplaced:
        return scores
    by_label = {s.label: s for s in scores}
    reasons = {s.label: s.reason for s in scores}
    new_reason = dict(reasons)
    for under in misplaced:
        new_reason[under] = ""
    for under, target in misplaced.items():
        # it moves only into a slot whose own reason was misplaced too (a swap); never over a fitting reason
        if target and target in by_label and (target in misplaced or not reasons.get(target, "").strip()):
            new_reason[target] = reasons[under]
            notes.append(f"the reason written under {under} was about answer {target}; moved there")
        else:
            notes.append(f"the reason written under {under} was about another answer; dropped")
    return [s.model_copy(update={"reason": new_reason[s.label]}) for s in scores]


def make_coherent(
    scores: list[CandidateScore], stated_choice: str | None, ballot_texts: Mapping[str, str]
) -> Coherent:
    """Repair reasons, then let the choice follow the scores. ``ballot_texts``: label -> candidate text."""
    notes: list[str] = []
    fixed = _reattach(scores, ballot_texts, notes)
    choice = top_scored(fixed, stated_choice)
    if (
        choice is None and fixed
    ):  # a tie the scores do not break and no stated choice among the tied: the first of them
        best = max(s.score for s in fixed)
        choice = next(s.label for s in fixed if s.score == best)
    if stated_choice is not None and choice != stated_choice:
        notes.append(
            f"the judge named {stated_choice} but scored {choice} highest; the choice follows the scores"
        )
    return Coherent(fixed, choice, notes)


def texts_of(labels: Mapping[str, Candidate]) -> dict[str, str]:
    return {label: c.text for label, c in labels.items()}
