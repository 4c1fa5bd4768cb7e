"""OpenAI-format SSE streams: the fused answer (with panel progress as SSE comments) and pass-through.

Progress goes out as comment lines, ``: polyfuse {json}``. The SSE spec has every client skip comments (the
openai SDK's decoder does, as it does OpenRouter's keep-alive comments), whereas a named ``event:`` is handed
to the caller by the openai SDK as if it were a chunk. The web panel reads the comments itself.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from ..errors import PolyfuseError, ProviderTimeoutError
from ..fusion.events import FusionEvent
from ..providers.base import Delta, StreamEvent
from ..types import Completion, FusionResult, Usage
from .deadlines import Deadlines
from .errors import ApiError, Redactor, from_library
from .schemas import ChatCompletionChunk, ChunkChoice, ChunkDelta, CompletionUsage, ErrorDetail, FusionInfo
from .translate import answer_content, completion_id, fusion_info, words

__all__ = ["ChunkWriter", "fusion_stream", "single_stream", "aclose", "DONE"]

DONE = b"data: [DONE]\n\n"
_STATUS_EVENTS = frozenset(
    {
        "run_started",
        "round_started",
        "member_started",
        "member_finished",
        "member_failed",
        "candidate_checked",
        "judge_started",
        "judge_finished",
        "verdict",
        "answer_reset",
    }
)
_LEVELS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "status": _STATUS_EVENTS,
    "full": _STATUS_EVENTS | {"member_delta"},
}
_WITHDRAWN = "\n\n[polyfuse: the answer above was withdrawn ({reason}); the final answer follows]\n\n"


async def aclose(events: AsyncIterator[Any]) -> None:
    """Close an event iterator (an async generator): for fuse_events and model streams this cancels the
    upstream calls still in flight."""
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


class ChunkWriter:
    """Builds the ``data:`` events of one completion stream (one id, one created time, one model)."""

    def __init__(self, model: str) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model

    def _event(self, chunk: ChatCompletionChunk) -> bytes:
        return b"data: " + chunk.__pydantic_serializer__.to_json(chunk, exclude_none=True) + b"\n\n"

    def chunk(
        self,
        delta: ChunkDelta,
        finish_reason: str | None = None,
        usage: CompletionUsage | None = None,
        fusion: FusionInfo | None = None,
    ) -> bytes:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        return self._event(
            ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[choice],
                usage=usage,
                fusion=fusion,
            )
        )

    def role(self) -> bytes:
        return self.chunk(ChunkDelta(role="assistant", content=""))

    def text(self, text: str) -> bytes:
        return self.chunk(ChunkDelta(content=text))

    def error(self, err: ApiError) -> bytes:
        """A mid-stream error: OpenRouter's form, ``finish_reason: "error"`` plus an ``error`` object."""
        detail = ErrorDetail(message=err.message, type=err.type, code=err.code or err.status)
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(delta=ChunkDelta(), finish_reason="error")],
            error=detail,
        )
        return self._event(chunk)


def _indexed(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **call} for i, call in enumerate(calls)]


def progress(event: FusionEvent, redact: Redactor) -> bytes:
    data = event.to_dict()
    cand = data.get("candidate")
    if cand and cand.get("error"):
        cand["error"] = redact(cand["error"])
    verdict = data.get("verdict")
    if verdict and verdict.get("failure_reason"):
        verdict["failure_reason"] = redact(verdict["failure_reason"])
    if event.type in ("judge_finished", "answer_reset") and event.data:
        data["data"] = {k: redact(v) if isinstance(v, str) else v for k, v in event.data.items()}
    return b": polyfuse " + orjson.dumps(data) + b"\n\n"


class _FusionStreamState:
    """What a fusion stream has to remember: tool calls per member (to hide their text rendering), whether
    answer text went out (so a withdrawn answer is marked), the chosen member."""

    def __init__(self) -> None:
        self.tools: dict[str, list[dict[str, Any]] | None] = {}
        self.chosen: str | None = None
        self.sent_answer = False
        self.withdrawn: str | None = None
        self.reset = False


async def fusion_stream(
    events: AsyncIterator[FusionEvent],
    first: FusionEvent,
    writer: ChunkWriter,
    *,
    preset: str,
    level: str,
    redact: Redactor,
    on_result: Callable[[FusionResult], None],
) -> AsyncIterator[bytes]:
    """The SSE body of a fusion: progress comments, the fused answer as content chunks, the final chunk with
    usage and the ``fusion`` object, ``[DONE]``. Closing it closes ``events``, which cancels the run."""
    wanted = _LEVELS[level]
    st = _FusionStreamState()
    yield writer.role()
    event: FusionEvent | None = first
    try:
        while event is not None:
            if event.type in wanted:
                yield progress(event, redact)
            if event.type == "member_finished" and event.candidate is not None:
                st.tools[event.candidate.member] = event.candidate.tool_calls
            elif event.type == "verdict" and event.verdict is not None:
                st.chosen = event.verdict.choice
            elif event.type == "answer_reset" and st.sent_answer:
                st.withdrawn, st.reset = str(event.data.get("reason", "judge failed"))[:120], True
            elif event.type == "answer_delta" and event.text:
                for piece in _answer_pieces(event.text, st, redact):
                    yield writer.text(piece)
            elif event.type == "done" and event.result is not None:
                on_result(event.result)
                yield _final(writer, event.result, preset, st.reset, redact)
            event = await anext(events, None)
    except PolyfuseError as exc:
        yield writer.error(from_library(exc, redact))
    finally:
        await aclose(events)
    yield DONE


def _answer_pieces(text: str, st: _FusionStreamState, redact: Redactor) -> list[str]:
    tools = st.tools.get(st.chosen or "")
    if tools and answer_content(text, tools) is None:
        return []  # the chosen answer is a tool call: it goes out in the final chunk's delta.tool_calls
    pieces = words(text)
    if st.withdrawn is not None:
        pieces.insert(0, _WITHDRAWN.format(reason=redact(st.withdrawn)))
        st.withdrawn = None
    st.sent_answer = True
    return pieces


def _final(writer: ChunkWriter, result: FusionResult, preset: str, reset: bool, redact: Redactor) -> bytes:
    tools = result.tool_calls
    usage = CompletionUsage.of(result.usage, result.cost if result.cost_known else None)
    return writer.chunk(
        ChunkDelta(tool_calls=_indexed(tools) if tools else None),
        finish_reason="tool_calls" if tools else "stop",
        usage=usage,
        fusion=fusion_info(result, preset, redact, answer_reset=reset),
    )


async def single_stream(
    events: AsyncIterator[StreamEvent],
    first: StreamEvent,
    writer: ChunkWriter,
    redact: Redactor,
    deadlines: Deadlines | None = None,
    deadline: float | None = None,
    timeout_error: Callable[[], PolyfuseError] | None = None,
    on_done: Callable[[Completion], None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body of a pass-through: deltas as they arrive, the final chunk with usage, ``[DONE]``. Past
    ``deadline`` (loop time) the stream ends with ``timeout_error()`` as an error chunk: a dripping upstream
    cannot hold it open for ever. ``on_done`` gets the finished completion (usage and cost, for the gateway)."""
    watch = deadlines or Deadlines()
    yield writer.role()
    event: StreamEvent | None = first
    try:
        while event is not None:
            if isinstance(event, Delta):
                yield writer.text(event.text)
            else:
                if on_done is not None:
                    on_done(event)
                yield _single_final(writer, event)
            with watch.until(deadline):  # entered and left within this step, never across a yield
                event = await anext(events, None)
    except TimeoutError:
        exc = timeout_error() if timeout_error else ProviderTimeoutError("the upstream took too long")
        yield writer.error(from_library(exc, redact))
    except PolyfuseError as exc:
        yield writer.error(from_library(exc, redact))
    finally:
        await aclose(events)
    yield DONE


def _single_final(writer: ChunkWriter, completion: Completion) -> bytes:
    tools = completion.tool_calls
    return writer.chunk(
        ChunkDelta(tool_calls=_indexed(tools) if tools else None),
        finish_reason=completion.finish_reason or ("tool_calls" if tools else "stop"),
        usage=CompletionUsage.of(completion.usage or Usage(), completion.cost),
    )
