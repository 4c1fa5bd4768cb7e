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

__all__ = ["TokenLogprobs", "option_logprobs_of", "continuation_logprobs_of"]


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


def _decode(llm: Any, chunk: Sequence[int], n_past: int, outputs: Sequence[bool]) -> None:
    """Decode ``chunk`` after ``n_past`` cached tokens, asking logits only where ``outputs`` says."""
    batch = llm._batch.batch  # noqa: SLF001 - one batch of n_batch slots, reused
    batch.n_tokens = len(chunk)
    for i, token in enumerate(chunk):
        batch.token[i] = token
        batch.pos[i] = n_past + i
        batch.seq_id[i][0] = 0
        batch.n_seq_id[i] = 1
        batch.logits[i] = outputs[i]
    llm._ctx.decode(llm._batch)  # noqa: SLF001
    llm.input_ids[n_past : n_past + len(chunk)] = chunk
    llm.n_tokens = n_past + len(chunk)


def continuation_logprobs_of(llm: Any, prompt: Sequence[int], continuation: Sequence[int]) -> list[float]:
    """The log-probability of each continuation token after the prompt (and the continuation before it), from
    one batched forward pass: the logits are read only at the positions that predict the continuation."""
    if not prompt or not continuation:
        raise ValueError("nothing to score: an empty prompt or continuation")
    tokens = [*prompt, *continuation]
    held = llm._input_ids  # noqa: SLF001
    shared = 0
    for a, b in zip(held, tokens, strict=False):
        if a != b:
            break
        shared += 1
    shared = min(shared, len(prompt) - 1)  # the position predicting the first continuation token is decoded
    llm._ctx.kv_cache_seq_rm(-1, shared, -1)  # noqa: SLF001
    llm.n_tokens = shared
    first_out = len(prompt) - 1  # the position whose logits predict continuation[0]
    out: list[float] = []
    n_vocab = llm.n_vocab()
    last = len(tokens) - 1  # the final token is only predicted, never decoded
    for start in range(shared, last, llm.n_batch):
        chunk = tokens[start : min(last, start + llm.n_batch)]
        wanted = [start + i >= first_out for i in range(len(chunk))]
        _decode(llm, chunk, start, wanted)
        for i, want in enumerate(wanted):
            if want:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(n_vocab,))  # noqa: SLF001
                out.append(_log_softmax_at(logits, [tokens[start + i + 1]])[0])
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
        # float32 throughout: one pass over the vocabulary per token (262k entries for Gemma) must stay cheap
        lse = top + float(np.log(np.exp(scores - top).sum(dtype=np.float64)))
        self._pending = (np.array(scores, copy=True), lse)
        self._pending_at = len(input_ids)
        return scores

    def mean(self) -> float | None:
        return round(self.total / self.count, 6) if self.count else None
