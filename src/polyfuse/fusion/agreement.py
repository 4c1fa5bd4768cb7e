"""How far candidates agree: normalised comparison for short answers, text similarity for long ones."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from difflib import SequenceMatcher

__all__ = ["FUNCTION_WORDS", "normalize", "similarity", "agreement_matrix", "vote", "VoteOutcome"]

_SHORT_WORDS = 12
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?")
_PUNCT = re.compile(r"[^\w\s.-]")
_WS = re.compile(r"\s+")
_FILLER = re.compile(r"^(?:the answer is|answer:|final answer:|it is|it's)\s*", re.I)


# words that carry no content of an answer (the guard and the verdict repair leave them out of comparisons)
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "and",
        "or",
        "but",
        "it",
        "its",
        "this",
        "that",
        "as",
        "by",
        "with",
        "from",
    ]
)


def normalize(text: str) -> str:
    """Lowercase, strip accents, punctuation, filler and trailing dots, collapse whitespace."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    t = _FILLER.sub("", t.strip().lower())
    t = _PUNCT.sub(" ", t)
    t = _WS.sub(" ", t).strip().rstrip(".").strip()
    return t


def _number(text: str) -> str | None:
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1].rstrip(".") if found else None


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def similarity(a: str, b: str) -> float:
    """0..1. Short answers compare normalised text (and the final number); long ones blend word overlap and
    sequence similarity."""
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return 1.0
    wa, wb = na.split(), nb.split()
    if len(wa) <= _SHORT_WORDS and len(wb) <= _SHORT_WORDS:
        num_a, num_b = _number(na), _number(nb)
        if num_a is not None and num_b is not None:
            return 1.0 if float(num_a) == float(num_b) else 0.0
        # "Paris" vs "paris, france": containment of the shorter as whole words counts as agreement.
        short, long_ = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
        if short and " ".join(short) in " ".join(long_):
            return 0.9
        return _jaccard(set(wa), set(wb))
    seq = SequenceMatcher(None, wa, wb, autojunk=False).ratio()
    return 0.5 * seq + 0.5 * _jaccard(set(wa), set(wb))


def agreement_matrix(texts: Sequence[str]) -> list[list[float]]:
    n = len(texts)
    m = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            m[i][j] = m[j][i] = similarity(texts[i], texts[j])
    return m


class VoteOutcome:
    """The most-agreed-with candidate (index), each one's support, and the pool's mean pairwise agreement."""

    def __init__(self, winner: int, support: list[float], agreement: float) -> None:
        self.winner = winner
        self.support = support
        self.agreement = agreement


def _weights(confidence: Sequence[float | None]) -> list[float]:
    """Mean token log-probability -> per-token geometric mean probability (0-1]; unknown: the known ones'
    mean (or 1 when none is known), so a member without log-probabilities is neither favoured nor ignored."""
    known = [math.exp(max(-50.0, c)) for c in confidence if c is not None and math.isfinite(c)]
    fill = sum(known) / len(known) if known else 1.0
    return [math.exp(max(-50.0, c)) if c is not None and math.isfinite(c) else fill for c in confidence]


def vote(
    texts: Sequence[str], confidence: Sequence[float | None] | None = None, *, weighted: bool = False
) -> VoteOutcome:
    """Pick the candidate with the highest mean similarity to the others. ``confidence``: each candidate's
    mean token log-probability (None where unknown); it breaks ties (then the earliest wins), and with
    ``weighted`` every candidate's agreement counts in proportion to its confidence, its own included."""
    if not texts:
        raise ValueError("vote needs at least one candidate")
    n = len(texts)
    if n == 1:
        return VoteOutcome(0, [1.0], 1.0)
    conf = list(confidence) if confidence is not None else [None] * n
    if len(conf) != n:
        raise ValueError("one confidence per candidate")
    tiebreak = [c if c is not None and math.isfinite(c) else -math.inf for c in conf]
    m = agreement_matrix(texts)
    if weighted:
        w = _weights(conf)
        total = sum(w)
        support = [sum(m[i][j] * w[j] for j in range(n)) / total for i in range(n)]
    else:
        support = [sum(m[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]
    winner = max(range(n), key=lambda i: (round(support[i], 9), tiebreak[i], -i))
    pairs = [m[i][j] for i in range(n) for j in range(i + 1, n)]
    return VoteOutcome(winner, support, sum(pairs) / len(pairs))
