"""The wire format: OpenAI chat-completions requests and responses, plus polyfuse's ``fusion`` extensions.

These models are what the routes validate requests with and build responses from, and /openapi.json is
generated from them, so the document cannot drift from what the server really accepts and returns. Requests
ignore fields polyfuse does not use (standard clients send many); ``fusion`` options forbid unknown keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import Candidate, FailedModel, Usage, Verdict

__all__ = [
    "ContentPart",
    "ChatMessage",
    "ResponseFormat",
    "FusionOptions",
    "ChatCompletionRequest",
    "ChoiceMessage",
    "Choice",
    "CompletionUsage",
    "JudgeCall",
    "FusionInfo",
    "ChatCompletion",
    "ChunkDelta",
    "ChunkChoice",
    "ChatCompletionChunk",
    "ErrorDetail",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
    "PresetInfo",
    "PanelConfig",
    "Health",
    "RunLogHealth",
    "ProgressEvent",
]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- request ------------------------------------------------------------------------------------------------------
class ContentPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class FusionOptions(_Strict):
    """Overrides of the preset for one request (only with a ``polyfuse/<preset>`` model)."""

    pool: list[str] | str | None = Field(default=None, description="member model ids, or 'a,b*2'")
    judge: str | None = None
    mode: str | None = Field(default=None, description="best-of, merge, debate or vote")
    rounds: int | None = Field(default=None, ge=1)
    min_responses: int | None = Field(default=None, ge=1)
    straggler_grace: float | None = Field(default=None, ge=0, le=3600, allow_inf_nan=False)
    skip_judge_on_consensus: float | None = Field(default=None, ge=0, le=1)
    max_cost: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="USD; refused with 402 when the estimate exceeds it",
    )
    member_timeout: float | None = Field(default=None, gt=0, le=3600, allow_inf_nan=False)
    judge_method: Literal["json", "auto", "label", "yesno", "label+yesno", "likelihood", "pmi"] | None = (
        Field(
            default=None,
            description="how the judge chooses: its written JSON verdict, or token probabilities (label, yesno, "
            "both; a judge without log-probabilities falls back to json, said in verdict.method_note)",
        )
    )
    analysis: bool | None = Field(
        default=None,
        description="add the structured analysis (consensus, contradictions with each model's stance, partial "
        "coverage, unique insights, blind spots) to the verdict",
    )
    progress: Literal["none", "status", "full"] = Field(
        default="status",
        description="streamed progress comments: none, status (members, judge, verdict) or full (+ member text)",
    )


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1, description="polyfuse/<preset> for fusion, or a single model id")
    messages: list[ChatMessage] = Field(min_length=1)
    models: list[str] | None = Field(default=None, description="fallback model ids, tried in order")
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    n: int | None = Field(default=None, ge=1, le=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    fusion: FusionOptions | None = None


# -- response -----------------------------------------------------------------------------------------------------
class ChoiceMessage(_Strict):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(_Strict):
    index: int = 0
    message: ChoiceMessage
    finish_reason: str | None
    logprobs: None = None


class CompletionUsage(_Strict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = Field(description="USD; null when some call had no known price")
    estimated: bool = False

    @classmethod
    def of(cls, usage: Usage, cost: float | None) -> CompletionUsage:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
            cost=cost,
            estimated=usage.estimated,
        )


class JudgeCall(_Strict):
    model: str
    latency: float
    usage: Usage
    cost: float | None


class FusionInfo(_Strict):
    """What happened inside a fusion: every candidate (usage, latency, cost, error), the verdict, the overhead."""

    preset: str
    mode: str
    candidates: list[Candidate]
    verdict: Verdict
    agreement: float
    failed_models: list[FailedModel]
    judge_calls: list[JudgeCall]
    cost_known: bool
    wall_time: float
    critical_path: float
    overhead: float
    rounds: int
    answer_reset: bool = False
    cached: bool = Field(default=False, description="served from the response cache: it cost nothing")


class ChatCompletion(_Strict):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    fusion: FusionInfo | None = None


class ChunkDelta(_Strict):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_Strict):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ErrorDetail(_Strict):
    message: str
    type: str
    code: str | int | None = None
    param: str | None = None
    metadata: dict[str, Any] | None = None


class ChatCompletionChunk(_Strict):
    """One ``data:`` event of a stream; the last carries ``usage`` (and ``fusion``); an ``error`` ends it."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    fusion: FusionInfo | None = None
    error: ErrorDetail | None = None


class ErrorResponse(_Strict):
    error: ErrorDetail


class PresetInfo(_Strict):
    description: str
    pool: list[str]
    judge: str | None
    mode: str
    rounds: int


class ModelCard(_Strict):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    preset: PresetInfo | None = None


class ModelList(_Strict):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class PanelConfig(_Strict):
    """What the web panel's pickers offer."""

    default_preset: str
    presets: dict[str, PresetInfo]
    models: list[str]
    modes: list[str]
    judge_methods: list[str] = Field(default_factory=list)
    max_pool_members: int


class RunLogHealth(_Strict):
    """The run log's write queue: runs waiting, written, and not recorded (queue full or a failed write)."""

    pending: int
    written: int
    dropped: int
    write_errors: int
    queue_runs: int


class Health(_Strict):
    status: Literal["ok"] = "ok"
    version: str
    run_log: RunLogHealth | None = None  # absent when the server runs without a run log


class ProgressEvent(_Strict):
    """A panel progress event, sent in a stream as an SSE comment line ``: polyfuse {json}`` (standard SSE
    clients skip comments)."""

    type: str
    round: int = 0
    member: str | None = None
    model: str | None = None
    text: str | None = None
    candidate: Candidate | None = None
    verdict: Verdict | None = None
    data: dict[str, Any] | None = None
