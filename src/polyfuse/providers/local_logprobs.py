"""Log-probabilities from llama.cpp: the next token's options after one forward pass, and the mean
log-probability of each token a member generates.

Both read raw logits (before repetition penalty and grammar), normalised over the whole vocabulary. Called
from the local provider's worker threads, under the model's lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .logprobs import Options, logsumexp

__all__ = ["TokenLogprobs", "option_logprobs_of"]


def _log_softmax_at(logits: Any, ids: Sequence[int]) -> list[float]:
    top = float(logits.max())
    lse = top + float(np.log(np.exp(logits - top, dtype=np.float64).sum()))
    return [float(logits[i]) - lse for i in ids]


def _first_tokens(llm: Any, spellings: Sequence[str]) -> list[int]:
    ids: list[int] = []
    for spelling in spellings:
        tokens = llm.tokenize(spelling.encode("utf-8"), add_bos=False, special=False)
        if tokens and tokens[0] not in ids:
            ids.append(int(tokens[0]))
    return ids


def _eval_reusing_prefix(llm: Any, tokens: Sequence[int]) -> None:
    """Evaluate ``tokens``, keeping the cached prefix they share with what the context holds (the question
    and instructions repeat across a judge's forward passes)."""
    held = llm._input_ids  # noqa: SLF001 - llama-cpp-python keeps no public accessor for the cached tokens
    shared = 0
    for a, b in zip(held, tokens, strict=False):
        if a != b:
            break
        shared += 1
    shared = min(shared, len(tokens) - 1)  # at least one token to decode, so the logits are fresh
    llm.n_tokens = shared  # eval() drops the cache from here on
    llm.eval(list(tokens[shared:]))


def option_logprobs_of(llm: Any, tokens: Sequence[int], options: Options) -> dict[str, float]:
    """One forward pass over ``tokens``; each option's log-probability as the next token (summed over the
    first tokens of its spellings)."""
    if not tokens:
        raise ValueError("nothing to score: the prompt is empty")
    _eval_reusing_prefix(llm, tokens)
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))  # noqa: SLF001
    out: dict[str, float] = {}
    for name, spellings in options.items():
        ids = _first_tokens(llm, spellings)
        out[name] = logsumexp(_log_softmax_at(logits, ids)) if ids else float("-inf")
    return out


class TokenLogprobs:
    """A llama-cpp-python logits processor that records the log-probability of each sampled token.

    Called before each token is sampled with the logits for it; the token chosen shows up at the end of
    ``input_ids`` on the next call, so each token's log-probability is read one call later. The last token of a
    run (usually end-of-sequence, or the one cut by ``max_tokens``) is not counted.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self._pending: Any = None
        self._pending_at = -1

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._pending is not None and len(input_ids) > self._pending_at:
            chosen = int(input_ids[self._pending_at])
            value = float(self._pending[0][chosen]) - self._pending[1]
            if np.isfinite(value):
                self.total += value
                self.count += 1
        top = float(scores.max())
        lse = top + float(np.log(np.exp(scores - top, dtype=np.float64).sum()))
        self._pending = (np.array(scores, copy=True), lse)
        self._pending_at = len(input_ids)
        return scores

    def mean(self) -> float | None:
        return round(self.total / self.count, 6) if self.count else None
