"""The wire format of ``POST /v1/completions`` (OpenAI's completions API, as editor plugins use it for
fill-in-the-middle): the request, validated and bounded, and the ``text_completion`` objects sent back (whole,
or as the chunks of a stream). /openapi.json is generated from these models too."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import CompletionUsage, ErrorDetail

__all__ = ["CompletionRequest", "StreamOptions", "TextChoice", "CompletionInfo", "TextCompletion"]

MAX_STOPS = 16
MAX_STOP_CHARS = 64


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """Fields clients send and polyfuse does not use (``user``, penalties, ``logit_bias``) are ignored;
    ``n > 1``, ``best_of > 1``, ``logprobs``, several prompts, token-array prompts and ``echo`` with a
    ``suffix`` are refused with a 400 saying so."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(
        min_length=1, description="polyfuse/<preset> for a fused completion, or a single model id"
    )
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="the code before the cursor (one prompt; a FIM template the client rendered is understood)"
    )
    suffix: str | None = Field(default=None, description="the code after the cursor")
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    best_of: int | None = None
    echo: bool = False
    logprobs: int | None = None


class TextChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: str | None


class CompletionInfo(BaseModel):
    """What polyfuse adds to a fused completion: how it was answered, by which member."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["fast", "fused", "none"] = Field(
        description="fast: the first candidate that passed its checks; fused: the fusion's answer (the same "
        "request again, once the fusion finished); none: no candidate passed its checks in time"
    )
    member: str | None = None
    model: str | None = None
    run: str | None = Field(default=None, description="the completion run (the run log's meta 'completion')")
    reason: str | None = None


class TextCompletion(BaseModel):
    """A whole answer, or one ``data:`` event of a stream (the last carries ``usage``; one whose choice has
    ``finish_reason: "error"`` and an ``error`` object ends a failed stream)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: CompletionUsage | None = None
    error: ErrorDetail | None = None
    polyfuse: CompletionInfo | None = None
