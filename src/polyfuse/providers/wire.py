"""What an OpenAI-compatible upstream sends back, validated: completions, stream chunks and error bodies.

Upstreams are hostile or broken: any body may be a number, a list, the wrong shapes, huge. Each body is parsed
by pydantic straight from bytes into these lenient models (unknown keys ignored, known keys typed), so that any
deviation becomes one ``MalformedResponseError`` naming what was wrong, never an ``AttributeError`` deep in a
handler. Error bodies are read for ``message``, ``code`` and ``param`` so that callers decide on fields the
upstream set, not on words in its prose.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import (
    AuthenticationError,
    BadUpstreamRequestError,
    MalformedResponseError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UpstreamError,
)

__all__ = [
    "WireUsage",
    "WireToolCallDelta",
    "WireCompletion",
    "WireChunk",
    "parse_completion",
    "parse_chunk",
    "error_from_status",
    "error_text",
]

_MESSAGE_CHARS = 300  # of an upstream's error message repeated in ours


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WireError(_Wire):
    message: str | None = None
    code: str | int | None = None
    param: str | None = None
    type: str | None = None


class WireUsage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None


class WireFunction(_Wire):
    name: str | None = None
    arguments: str | None = None


class WireToolCallDelta(_Wire):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: WireFunction | None = None


class WireMessage(_Wire):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class WireChoice(_Wire):
    message: WireMessage | None = None
    text: str | None = None  # legacy /completions
    finish_reason: str | None = None


class WireCompletion(_Wire):
    model: str | None = None
    choices: list[WireChoice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None


class WireDelta(_Wire):
    content: str | None = None
    tool_calls: list[WireToolCallDelta] | None = None


class WireChunkChoice(_Wire):
    delta: WireDelta | None = None
    text: str | None = None  # legacy /completions
    finish_reason: str | None = None


class WireChunk(_Wire):
    model: str | None = None
    choices: list[WireChunkChoice] | None = None
    usage: WireUsage | None = None
    error: WireError | str | None = None


def _malformed(provider: str, what: str, exc: ValidationError) -> MalformedResponseError:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    detail = "not JSON" if err["type"] == "json_invalid" else f"{where or 'body'}: {err['msg']}"
    return MalformedResponseError(f"{provider}: malformed {what} ({detail})", provider=provider)


def parse_completion(raw: bytes, provider: str) -> WireCompletion:
    try:
        return WireCompletion.model_validate_json(raw)
    except ValidationError as exc:
        raise _malformed(provider, "response", exc) from exc


def parse_chunk(data: str, provider: str) -> WireChunk:
    try:
        return WireChunk.model_validate_json(data)
    except ValidationError as exc:
        raise _malformed(provider, "stream event", exc) from exc


def _details(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, code, param) from an OpenAI-style error body (or FastAPI's ``detail`` list, or vLLM's flat
    form); all None when the body is not JSON: its text is not repeated (it may be any page)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    err = data.get("error", data if "message" in data else None)
    if isinstance(err, str):
        return err, None, None
    if isinstance(err, dict):
        code, param = err.get("code"), err.get("param")
        message = err.get("message")
        return (
            str(message) if message is not None else None,
            str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
            param if isinstance(param, str) else None,
        )
    detail = data.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = [str(p) for p in detail[0].get("loc") or [] if p != "body"]
        return str(detail[0].get("msg") or "invalid request"), None, ".".join(loc) or None
    if isinstance(detail, str):
        return detail, None, None
    return None, None, None


def error_text(message: str | None, size: int) -> str:
    if message is None:
        return f"no readable detail ({size} bytes)"
    return message[:_MESSAGE_CHARS] + ("..." if len(message) > _MESSAGE_CHARS else "")


def error_from_status(
    status: int, body: bytes, provider: str, retry_after: float | None = None
) -> ProviderError:
    """Translate an HTTP error status (and OpenAI-style body) into the typed error tree."""
    message, code, param = _details(body)
    msg = f"{provider}: HTTP {status}: {error_text(message, len(body))}"
    kw: dict[str, Any] = {"status": status, "provider": provider, "code": code, "param": param}
    if status in (401, 403):
        return AuthenticationError(msg, **kw)
    if status == 429:
        return RateLimitedError(msg, retry_after=retry_after, **kw)
    if status in (408, 504, 524):
        return ProviderTimeoutError(msg, **kw)
    if status >= 500:
        return UpstreamError(msg, **kw)
    return BadUpstreamRequestError(msg, **kw)


def midstream_error(error: WireError | str, provider: str) -> UpstreamError:
    if isinstance(error, str):
        return UpstreamError(
            f"{provider}: error mid-stream: {error_text(error, len(error))}", provider=provider
        )
    code = str(error.code) if error.code is not None else None
    text = error_text(error.message or code, 0)
    return UpstreamError(
        f"{provider}: error mid-stream: {text}", provider=provider, code=code, param=error.param
    )
