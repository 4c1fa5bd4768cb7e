"""``explain``: a short explanation of a piece of code, fused over the pool (no code runs: prose is judged)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidRequestError
from ..types import FusionResult, Message
from .task import CodeEnv

__all__ = ["ExplainResult", "explain"]


@dataclass
class ExplainResult:
    text: str
    fusion: FusionResult
    redactions: tuple[str, ...] = ()


async def explain(
    env: CodeEnv, code: str, *, language: str = "python", path: str = "selection"
) -> ExplainResult:
    if not code.strip():
        raise InvalidRequestError("nothing to explain: the selection is empty")
    user = (
        f"Explain what this {language} code does, in three to six plain sentences, and point out anything "
        f"surprising or wrong:\n```{language}\n{env.prepare(code, path)}\n```"
    )
    messages = [
        Message(role="system", content="You explain code clearly and briefly."),
        Message(role="user", content=user),
    ]
    result = await env.fuse(messages, max_tokens=min(env.settings.max_tokens, 256))
    return ExplainResult(env.redactor.restore(result.answer), result, tuple(env.redactor.report()))
