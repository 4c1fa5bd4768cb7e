"""OpenAI request <-> library calls: messages, generation params, the FusionRequest for a preset, and the
response objects built from a Completion or a FusionResult. Translation only: the decisions stay in the
library (``Config.build_request``, the engine, the strategies)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..config import Config, request_for
from ..errors import TooManyMembersError
from ..fusion.request import FusionRequest
from ..types import Completion, FusionResult, GenerationParams, Message
from .errors import ApiError
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceMessage,
    CompletionUsage,
    FusionInfo,
    JudgeCall,
)
from .settings import ServerSettings

__all__ = [
    "PRESET_PREFIX",
    "preset_name",
    "to_messages",
    "generation_params",
    "fusion_request",
    "answer_content",
    "completion_id",
    "single_response",
    "fusion_info",
    "fusion_response",
    "words",
]

PRESET_PREFIX = "polyfuse"
_ROLE = {"developer": "system"}  # OpenAI's newer name for the system role
_WORDS = re.compile(r"\s*\S+\s*|\s+")


def preset_name(model: str, config: Config) -> str | None:
    """``polyfuse/<preset>`` (or bare ``polyfuse``: the default preset) -> the preset name; else None."""
    if model == PRESET_PREFIX:
        return config.default_preset
    prefix, sep, name = model.partition("/")
    return name if sep and prefix == PRESET_PREFIX else None


def _text(message: ChatMessage, index: int) -> str | None:
    if message.content is None or isinstance(message.content, str):
        return message.content
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ApiError(
                400,
                f"messages.{index}.content: only text parts are supported (got '{part.type}')",
                code="unsupported_content",
                param=f"messages.{index}.content",
            )
        parts.append(part.text)
    return "".join(parts)


def to_messages(request: ChatCompletionRequest) -> list[Message]:
    return [
        Message(
            role=_ROLE.get(m.role, m.role),  # type: ignore[arg-type]
            content=_text(m, i),
            name=m.name,
            tool_calls=m.tool_calls,
            tool_call_id=m.tool_call_id,
        )
        for i, m in enumerate(request.messages)
    ]


def _json_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema":
        schema = (fmt.json_schema or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(
                400,
                "response_format.json_schema.schema: a JSON schema object is required",
                param="response_format.json_schema",
            )
        return schema
    return {"type": "object"}


def generation_params(request: ChatCompletionRequest) -> GenerationParams:
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    return GenerationParams(
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.max_tokens or request.max_completion_tokens,
        stop=stop or None,
        seed=request.seed,
        json_schema=_json_schema(request),
        tools=request.tools,
        tool_choice=request.tool_choice,
    )


def fusion_request(
    config: Config,
    settings: ServerSettings,
    request: ChatCompletionRequest,
    preset: str,
    check: Callable[[list[str], str], None] | None = None,
) -> FusionRequest:
    """The FusionRequest for a preset plus the request's ``fusion`` overrides and sampling options.

    The pool is bounded before it is expanded, and ``check(ids, param)`` sees every member and the judge
    before anything else happens (the server's model policy). Members get every sampling option. The judge
    gets the client's temperature and seed, and room for an answer of the client's max_tokens on top of its
    verdict. Stop sequences and response_format apply to the answer the judge writes (cut at a stop sequence;
    a JSON value of the requested schema), not to its verdict JSON as a whole, which they would break.
    """
    opts = request.fusion
    params = generation_params(request)
    try:
        resolved = config.resolve(
            preset=preset,
            pool=opts.pool if opts else None,
            judge=opts.judge if opts else None,
            mode=opts.mode if opts else None,
            rounds=opts.rounds if opts else None,
            max_members=settings.max_pool_members,
            temperature=params.temperature,
            max_tokens=params.max_tokens,
            seed=params.seed,
            top_p=params.top_p,
            stop=params.stop,
            min_responses=opts.min_responses if opts else None,
            straggler_grace=opts.straggler_grace if opts else None,
            skip_judge_on_consensus=opts.skip_judge_on_consensus if opts else None,
            max_cost=opts.max_cost if opts else None,
            member_timeout=opts.member_timeout if opts else None,
        )
    except TooManyMembersError as exc:
        raise ApiError(400, str(exc), code="too_many_members", param="fusion.pool") from None
    if check is not None:
        check([s.model for s in resolved.pool], "fusion.pool" if opts and opts.pool is not None else "model")
        if resolved.judge:
            check([resolved.judge], "fusion.judge" if opts and opts.judge is not None else "model")
    if resolved.mode == "debate" and resolved.rounds > settings.max_rounds:
        raise ApiError(
            400,
            f"rounds {resolved.rounds} exceeds this server's limit of {settings.max_rounds}",
            param="fusion.rounds",
        )
    fused = request_for(resolved, to_messages(request))
    fused.params = fused.params.merged(
        json_schema=params.json_schema, tools=params.tools, tool_choice=params.tool_choice
    )
    judge_room = (fused.judge_params.max_tokens or 0) + (params.max_tokens or 0)
    fused.judge_params = fused.judge_params.merged(
        temperature=params.temperature, seed=params.seed, max_tokens=judge_room or None
    )
    return fused


def answer_content(text: str, tools: list[dict[str, Any]] | None) -> str | None:
    """OpenAI's ``content``: null for a pure tool-call answer (the engine renders calls as ``[tool call] ...``
    lines so a judge can read them; clients get them in ``tool_calls`` instead)."""
    if tools and (not text or all(line.startswith("[tool call] ") for line in text.splitlines())):
        return None
    return text


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def single_response(model_id: str, completion: Completion) -> ChatCompletion:
    tools = completion.tool_calls
    return ChatCompletion(
        id=completion_id(),
        created=int(time.time()),
        model=model_id,
        choices=[
            Choice(
                message=ChoiceMessage(content=answer_content(completion.text, tools), tool_calls=tools),
                finish_reason=completion.finish_reason or ("tool_calls" if tools else "stop"),
            )
        ],
        usage=CompletionUsage.of(completion.usage, completion.cost),
    )


def _redacted(result: FusionResult, redact: Callable[[str], str]) -> FusionResult:
    """The result with every error text passed through the redactor (an upstream may echo a key back)."""

    def clean(text: str | None) -> str | None:
        return None if text is None else redact(text)

    return result.model_copy(
        update={
            "candidates": [c.model_copy(update={"error": clean(c.error)}) for c in result.candidates],
            "failed_models": [
                f.model_copy(update={"reason": redact(f.reason)}) for f in result.failed_models
            ],
            "verdict": result.verdict.model_copy(
                update={"failure_reason": clean(result.verdict.failure_reason)}
            ),
        }
    )


def fusion_info(
    result: FusionResult, preset: str, redact: Callable[[str], str], answer_reset: bool = False
) -> FusionInfo:
    result = _redacted(result, redact)
    return FusionInfo(
        preset=preset,
        mode=result.mode,
        candidates=result.candidates,
        verdict=result.verdict,
        agreement=result.agreement,
        failed_models=result.failed_models,
        judge_calls=[
            JudgeCall(model=c.model, latency=c.latency, usage=c.usage, cost=c.cost)
            for c in result.judge_calls
        ],
        cost_known=result.cost_known,
        wall_time=result.wall_time,
        critical_path=result.critical_path,
        overhead=result.overhead,
        rounds=max(1, len(result.rounds)),
        answer_reset=answer_reset,
    )


def fusion_response(
    model: str, result: FusionResult, preset: str, redact: Callable[[str], str]
) -> ChatCompletion:
    tools = result.tool_calls
    return ChatCompletion(
        id=completion_id(),
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                message=ChoiceMessage(content=answer_content(result.answer, tools), tool_calls=tools),
                finish_reason="tool_calls" if tools else "stop",
            )
        ],
        usage=CompletionUsage.of(result.usage, result.cost if result.cost_known else None),
        fusion=fusion_info(result, preset, redact),
    )


def words(text: str) -> list[str]:
    """A whole answer (best-of, vote) in word-sized pieces, so it streams like generated text."""
    return _WORDS.findall(text)
