"""``POST /v1/completions``: OpenAI's completions API, for the editor plugins that autocomplete through it.

- ``model`` = ``polyfuse/<preset>``: a fused completion through the same library call as ``polyfuse code
  complete`` and the language server (``complete_text``): each member of the preset's pool in its own FIM
  format, the same checks, the first candidate that passes them answers (within ``[code] latency_budget``; an
  empty text when none did). The fusion goes on, and the same request again gets the fused answer.
- any other model id: a pass-through. A plain prompt goes to the model as it is (raw when it takes raw prompts),
  streamed token by token; with a ``suffix`` (or a prompt the client rendered in a FIM format itself, as Continue
  does) the model is prompted in its own FIM format, or the hole-filling chat prompt, and the answer is cleaned
  to what goes at the cursor.

The prompt may be a FIM prompt a client rendered (``<fim_prefix>...<fim_suffix>...<fim_middle>`` and the other
known formats): it is taken apart into prefix, suffix and the client's context. The server reads no file of its
own to build a prompt.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..code.complete import CompleteResult, complete_text, hole_parses, prompt_window
from ..code.fim import FimAdapter, FimTask, split_fim, template_for
from ..code.task import CodeEnv, language_of
from ..errors import NoSurvivorsError, PolyfuseError, ProviderTimeoutError
from ..fusion.stopcut import cut_at_stop
from ..fusion.strategies import get_strategy
from ..providers.base import ChatModel, Delta, StreamEvent
from ..types import Completion, GenerationParams, Message, Usage
from . import gate
from .asgi import JSONResponse, Request, StreamResponse, json_response
from .completion_schemas import (
    MAX_STOP_CHARS,
    MAX_STOPS,
    CompletionInfo,
    CompletionRequest,
    TextChoice,
    TextCompletion,
)
from .errors import ApiError, from_library, from_validation
from .routes import allowed
from .schemas import CompletionUsage, ErrorDetail
from .streaming import DONE, aclose
from .translate import preset_name, words

if TYPE_CHECKING:
    from .app import ServerState

__all__ = ["completions", "RefinedCompletions"]

_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this API


# -- request ------------------------------------------------------------------------------------------------------
def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


@dataclass(frozen=True)
class _Job:
    req: CompletionRequest
    prompt: str
    stops: list[str]

    @property
    def key(self) -> str:
        """The same request again (model, text and sampling): where the fused answer is looked up."""
        r = self.req
        parts = [r.model, self.prompt, r.suffix, r.max_tokens, r.temperature, r.top_p, r.seed, self.stops]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _parse(body: bytes) -> _Job:
    try:
        req = CompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    if req.n not in (None, 1):
        raise _bad("n must be 1: this server returns one completion per request", "n", "unsupported_value")
    if req.best_of not in (None, 1):
        raise _bad(
            "best_of is not supported (polyfuse fuses with a preset instead)", "best_of", "unsupported_value"
        )
    if req.logprobs is not None:
        raise _bad("logprobs are not supported", "logprobs", "unsupported_value")
    if req.echo and req.suffix is not None:
        raise _bad("echo cannot be used with suffix", "echo", "unsupported_value")
    prompt = _one_prompt(req.prompt)
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise _bad(f"stop: at most {MAX_STOPS} sequences of at most {MAX_STOP_CHARS} characters", "stop")
    return _Job(req, prompt, [s for s in stops if s])


def _one_prompt(prompt: str | list[str] | list[int] | list[list[int]]) -> str:
    if isinstance(prompt, str):
        return prompt
    texts = [p for p in prompt if isinstance(p, str)]
    if not prompt or len(texts) != len(prompt):
        raise _bad(
            "prompt must be a string (or a list of one string); token arrays are not supported", "prompt"
        )
    if len(texts) > 1:
        raise _bad(f"too many prompts: one per request, got {len(texts)}", "prompt", "too_many_prompts")
    return texts[0]


def _hole(job: _Job) -> tuple[str, str, str] | None:
    """(prefix, suffix, context) when the request is fill-in-the-middle, else None (a plain prompt)."""
    if job.req.suffix is not None:
        return job.prompt, job.req.suffix, ""
    split = split_fim(job.prompt)
    return (split.prefix, split.suffix, split.context) if split is not None else None


def _path(prefix: str, suffix: str) -> Path:
    """The file name the prompt and the checks assume: Python when the code around the hole parses as Python
    (then a candidate must parse too), else plain text (no syntax check)."""
    return Path("completion.py") if hole_parses(prefix, suffix) else Path("completion")


# -- responses ----------------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, model: str) -> None:
        self.id = "cmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model

    def answer(self, text: str, finish: str | None, **extra: Any) -> TextCompletion:
        choice = TextChoice(text=text, finish_reason=finish)
        return TextCompletion(id=self.id, created=self.created, model=self.model, choices=[choice], **extra)

    def event(self, text: str, finish: str | None = None, **extra: Any) -> bytes:
        chunk = self.answer(text, finish, **extra)
        return b"data: " + chunk.__pydantic_serializer__.to_json(chunk, exclude_none=True) + b"\n\n"

    def error(self, err: ApiError) -> bytes:
        detail = ErrorDetail(message=err.message, type=err.type, code=err.code or err.status)
        return self.event("", "error", error=detail)


async def _whole(
    writer: _Writer, text: str, finish: str, usage: CompletionUsage, **extra: Any
) -> AsyncIterator[bytes]:
    """An answer known in full, streamed in word-sized pieces."""
    for piece in words(text):
        yield writer.event(piece)
    yield writer.event("", finish, usage=usage, **extra)
    yield DONE


def _usage(usage: Usage, cost: float | None = None) -> CompletionUsage:
    return CompletionUsage.of(usage, cost)


# -- fused --------------------------------------------------------------------------------------------------------
class RefinedCompletions:
    """The fusions still running behind fast answers, by request; the same request again gets the fused answer
    (or the fast one while the fusion runs). Another request cancels the fusions still running (``supersede``):
    latency first, no request waits behind a refinement. ``kept`` answers are remembered."""

    def __init__(self, kept: int = 64) -> None:
        self.kept = kept
        self._entries: OrderedDict[str, tuple[CompleteResult, asyncio.Task[CompleteResult] | None]] = (
            OrderedDict()
        )

    def get(self, key: str) -> CompleteResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        fast, task = entry
        if task is not None and task.done():
            if not task.cancelled() and task.exception() is None and task.result().insertion.strip():
                fast = task.result()
            self._entries[key] = (fast, None)
        self._entries.move_to_end(key)
        return fast

    def supersede(self) -> None:
        """Cancel every fusion still running (a new request is about to need the models)."""
        for key, (fast, task) in list(self._entries.items()):
            if task is not None and not task.done():
                task.cancel()
                self._entries[key] = (fast, None)

    def put(self, key: str, result: CompleteResult) -> None:
        self._entries[key] = (result, result.refined)
        if result.refined is not None:
            result.refined.add_done_callback(_retrieved)
        while len(self._entries) > self.kept:
            _, (_, task) = self._entries.popitem(last=False)
            if task is not None:
                task.cancel()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Cancel the fusions still running and wait (bounded) until their model calls stopped."""
        running = [task for _, task in self._entries.values() if task is not None and not task.done()]
        for task in running:
            task.cancel()
        self._entries.clear()
        if running:
            await asyncio.wait(running, timeout=timeout)


def _retrieved(task: asyncio.Task[CompleteResult]) -> None:
    if not task.cancelled():
        task.exception()  # a fusion nobody waits for may end without an answer: no news to report


def _code_env(state: ServerState, preset: str, job: _Job) -> CodeEnv:
    r = job.req
    settings = state.config.code.model_copy(
        update={
            "preset": preset,
            "pool": None,
            "judge": None,
            "context_tokens": 0,  # the server never reads its own files into a prompt
            "complete_max_tokens": r.max_tokens or state.config.code.complete_max_tokens,
            "temperature": r.temperature if r.temperature is not None else state.config.code.temperature,
        }
    )
    return CodeEnv(state.config, state.hub, settings, task="complete", on_finished=state.finished)


async def _fused(
    state: ServerState, job: _Job, preset: str, call: gate.Call | None
) -> JSONResponse | StreamResponse:
    env = _code_env(state, preset, job)
    if call is not None:  # the gateway: every member and the judge must be allowed for the key
        fused = env.request(
            [Message(role="user", content=job.prompt)], max_tokens=env.settings.complete_max_tokens
        )
        judge = [fused.judge] if fused.judge and get_strategy(fused.mode).uses_judge else []
        models = tuple(dict.fromkeys([*(m.model for m in fused.pool), *judge]))
        await gate.before_completion(state, call, job.req.model, models, preset, fused, job.prompt, None)
    cache: RefinedCompletions = state.completions
    result = cache.get(job.key)
    if result is None:
        cache.supersede()
        prefix, suffix, context = _hole(job) or (job.prompt, "", "")
        text = prefix + suffix
        try:
            result = await complete_text(
                env, text, len(prefix), _path(prefix, suffix), fast=True, context=context, wait_refined=False
            )
        except NoSurvivorsError as exc:  # nothing to suggest is an answer, not an error
            result = CompleteResult("", None, None, run_id="")
            reason = str(exc)
        else:
            cache.put(job.key, result)
            reason = f"no candidate passed its checks within {env.settings.latency_budget:g}s"
    else:
        reason = "no candidate passed its checks"
    text = cut_at_stop(result.insertion, job.stops)
    if job.req.echo:
        text = job.prompt + text
    cost = result.fusion.cost if result.fusion is not None and result.fusion.cost_known else None
    usage = _usage(result.usage, cost)
    gate.completion_done(call, result.usage, cost)
    if result.insertion.strip():
        info = CompletionInfo(
            mode="fast" if result.fast else "fused",
            member=result.member,
            model=result.model,
            run=result.run_id,
        )
    else:
        info = CompletionInfo(mode="none", run=result.run_id or None, reason=reason)
    writer = _Writer(job.req.model)
    if job.req.stream:
        return StreamResponse(_whole(writer, text, "stop", usage, polyfuse=info))
    return json_response(writer.answer(text, "stop", usage=usage, polyfuse=info))


# -- single model -------------------------------------------------------------------------------------------------
def _params(job: _Job) -> GenerationParams:
    r = job.req
    return GenerationParams(
        temperature=r.temperature,
        top_p=r.top_p,
        max_tokens=r.max_tokens or _DEFAULT_MAX_TOKENS,
        stop=job.stops or None,
        seed=r.seed,
    )


def _events(state: ServerState, job: _Job, model: ChatModel) -> tuple[AsyncIterator[StreamEvent], bool]:
    """The model's event stream for the request, and whether its deltas are the answer as it is (a plain or
    client-rendered raw prompt) rather than text to clean once it is complete (fill-in-the-middle)."""
    params = _params(job)
    hole = _hole(job)
    raw_fim = job.req.suffix is None and hole is not None and model.supports_text_completion
    if hole is None or raw_fim:  # the prompt goes as it is
        if model.supports_text_completion:
            return model.stream_text(job.prompt, params), True
        return model.stream([Message(role="user", content=job.prompt)], params), True
    prefix, suffix, context = hole
    path = _path(prefix, suffix)
    code = state.config.code
    shown = prompt_window(prefix, suffix, code.complete_prefix_lines, code.complete_suffix_lines)
    task = FimTask(shown[0], shown[1], path.name, language_of(path), context)
    template = template_for(model, state.config.code.fim_templates)
    return FimAdapter(model, template, task, job.req.model, {}).stream([], params), False


async def _single(state: ServerState, job: _Job, call: gate.Call | None) -> JSONResponse | StreamResponse:
    """A pass-through within ``[server] passthrough_timeout``; the model is resolved as the chat route resolves
    one (the server's model policy: a refused id is a 400 that fetches and opens nothing)."""
    allowed(state, [job.req.model], "model")
    if call is not None:  # the gateway, after the server's own resolution
        out = job.req.max_tokens or _DEFAULT_MAX_TOKENS
        await gate.before_completion(
            state, call, job.req.model, (job.req.model,), None, None, job.prompt, out
        )
    model = state.hub.model(job.req.model)
    events, streams = _events(state, job, model)
    writer = _Writer(job.req.model)
    echo = job.prompt if job.req.echo else ""
    limit = state.settings.passthrough_timeout
    deadline = asyncio.get_running_loop().time() + limit
    try:
        with state.deadlines.until(deadline):
            if not job.req.stream or not streams:
                try:
                    final = await _final(events)
                finally:
                    await aclose(events)
                usage = _usage(final.usage or Usage(), final.cost)
                gate.completion_done(call, final.usage or Usage(), final.cost)
                finish = final.finish_reason or "stop"
                if job.req.stream:
                    return StreamResponse(_whole(writer, echo + final.text, finish, usage))
                return json_response(writer.answer(echo + final.text, finish, usage=usage))
            try:  # the first event before the 200: an upstream that fails at once is an HTTP error
                first = await anext(events)
            except BaseException:
                await aclose(events)
                raise
    except TimeoutError:
        raise _too_late(limit) from None
    return StreamResponse(_stream(events, first, writer, echo, state, deadline, call))


def _too_late(limit: float) -> ProviderTimeoutError:
    return ProviderTimeoutError(f"no complete answer within the server's passthrough_timeout of {limit:g}s")


async def _final(events: AsyncIterator[StreamEvent]) -> Completion:
    final: Completion | None = None
    async for event in events:
        if isinstance(event, Completion):
            final = event
    if final is None:
        raise ApiError(502, "the upstream ended without a completion", "upstream_error", "upstream_error")
    return final


async def _stream(
    events: AsyncIterator[StreamEvent],
    first: StreamEvent,
    writer: _Writer,
    echo: str,
    state: ServerState,
    deadline: float,
    call: gate.Call | None,
) -> AsyncIterator[bytes]:
    """Deltas as the upstream sends them; past the deadline the stream ends with an error chunk."""
    if echo:
        yield writer.event(echo)
    event: StreamEvent | None = first
    try:
        while event is not None:
            if isinstance(event, Delta):
                yield writer.event(event.text)
            else:
                usage = _usage(event.usage or Usage(), event.cost)
                gate.completion_done(call, event.usage or Usage(), event.cost)
                yield writer.event("", event.finish_reason or "stop", usage=usage)
            with state.deadlines.until(deadline):  # entered and left within this step, never across a yield
                event = await anext(events, None)
    except TimeoutError:
        yield writer.error(from_library(_too_late(state.settings.passthrough_timeout), state.redact))
    except PolyfuseError as exc:
        yield writer.error(from_library(exc, state.redact))
    finally:
        await aclose(events)
    yield DONE


# -- the route ----------------------------------------------------------------------------------------------------
async def completions(state: ServerState, request: Request, body: bytes) -> JSONResponse | StreamResponse:
    job = _parse(body)
    preset = preset_name(job.req.model, state.config)
    if preset is not None:
        return await _fused(state, job, preset, request.call)
    return await _single(state, job, request.call)
