"""Route handlers: HTTP <-> library calls, nothing more. Each takes the server state and the parsed request
and returns a response; errors are raised (ApiError or the library's typed errors) and rendered by the app."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .. import __version__
from ..errors import ConfigError, ProviderError, ProviderTimeoutError
from ..fusion.engine import fuse, fuse_events
from ..fusion.scoring import method_names
from ..fusion.strategies import strategy_names
from ..providers.base import ChatModel, StreamEvent
from ..types import FusionResult, GenerationParams, Message
from . import gate
from .asgi import JSONResponse, Request, StreamResponse, json_response
from .errors import ApiError, from_library, from_validation
from .schemas import ChatCompletionRequest, Health, ModelCard, ModelList, PanelConfig
from .streaming import ChunkWriter, aclose, fusion_stream, single_stream
from .translate import (
    PRESET_PREFIX,
    fusion_request,
    fusion_response,
    generation_params,
    preset_name,
    single_response,
    to_messages,
)

if TYPE_CHECKING:
    from .app import ServerState

__all__ = ["chat_completions", "list_models", "panel_config", "health"]


def parse(body: bytes) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def chat_completions(
    state: ServerState, request: Request, body: bytes
) -> JSONResponse | StreamResponse:
    req = parse(body)
    preset = preset_name(req.model, state.config)
    if preset is not None:
        return await _fusion(state, req, preset, request)
    if req.fusion is not None:
        raise ApiError(
            400, f"'fusion' options need a {PRESET_PREFIX}/<preset> model, not '{req.model}'", param="fusion"
        )
    return await _single(state, req, request)


async def _fusion(
    state: ServerState, req: ChatCompletionRequest, preset: str, request: Request
) -> JSONResponse | StreamResponse:
    if req.models:
        raise ApiError(400, "a 'models' fallback list takes single model ids, not a preset", param="models")
    fused = fusion_request(state.config, state.settings, req, preset, check=functools.partial(allowed, state))
    call = request.call
    if call is not None and (
        cached := await gate.before_fusion(state, call, req, fused, preset, request.headers)
    ):
        return cached
    done = functools.partial(gate.fusion_done, state, call, req.model, preset=preset)
    if not req.stream:
        result = await fuse(fused, state.hub)
        state.finished(fused, result)
        done(result)
        response = json_response(fusion_response(req.model, result, preset, state.redact))
        response.headers.extend(gate.miss_header(call))
        return response

    def on_result(result: FusionResult) -> None:
        state.finished(fused, result)
        done(result)

    events = fuse_events(fused, state.hub)
    try:  # the first event comes after validation, model resolution and the budget check: errors are 4xx
        first = await anext(events)
    except BaseException:
        await aclose(events)
        raise
    level = req.fusion.progress if req.fusion else "status"
    body = fusion_stream(
        events,
        first,
        ChunkWriter(req.model),
        preset=preset,
        level=level,
        redact=state.redact,
        on_result=on_result,
    )
    return StreamResponse(body, gate.miss_header(call))


def allowed(state: ServerState, ids: Iterable[str], param: str) -> None:
    """Refuse (404 unknown, 400 ``model_not_allowed``) any id this server may not resolve, naming the field;
    nothing is fetched or opened for a refused id."""
    for model_id in ids:
        try:
            state.hub.check(model_id)
            state.policy.check(model_id.strip())
        except ConfigError as exc:
            err = from_library(exc, state.redact)
            err.param = param
            raise err from None


def _routes(state: ServerState, req: ChatCompletionRequest) -> list[tuple[str, ChatModel]]:
    """The model and its fallbacks (OpenRouter's ``models``), each resolved up front: an unknown id is a 404."""
    ids = [req.model, *(m for m in req.models or [] if m != req.model)]
    for model_id in ids:
        if preset_name(model_id, state.config) is not None:
            raise ApiError(
                400, "a 'models' fallback list takes single model ids, not a preset", param="models"
            )
    allowed(state, [req.model], "model")
    allowed(state, ids[1:], "models")
    return [(model_id, state.hub.model(model_id)) for model_id in ids]


async def _single(
    state: ServerState, req: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamResponse:
    """A pass-through, all attempts and fallbacks within ``[server] passthrough_timeout``."""
    routes = _routes(state, req)
    messages, params = to_messages(req), generation_params(req)
    call = request.call
    if call is not None:  # the gateway: the key's allow-list, the cache, limits and budget holds
        ids = [model_id for model_id, _ in routes]
        cached = await gate.before_single(state, call, req, ids, messages, params, request.headers)
        if cached is not None:
            return cached
    limit = state.settings.passthrough_timeout
    deadline = asyncio.get_running_loop().time() + limit

    def too_late() -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"no complete answer within the server's passthrough_timeout of {limit:g}s"
        )

    try:
        with state.deadlines.until(deadline):
            return await _first_answer(state, req, routes, (messages, params), call, deadline, too_late)
    except TimeoutError:
        raise too_late() from None


async def _first_answer(
    state: ServerState,
    req: ChatCompletionRequest,
    routes: list[tuple[str, ChatModel]],
    prompt: tuple[list[Message], GenerationParams],
    call: gate.Call | None,
    deadline: float,
    too_late: Callable[[], ProviderTimeoutError],
) -> JSONResponse | StreamResponse:
    messages, params = prompt
    error: ProviderError | None = None
    for model_id, model in routes:
        if not req.stream:
            try:
                completion = await model.complete(messages, params)
            except ProviderError as exc:
                error = state.fell_back(model_id, exc)
                continue
            gate.single_done(state, call, model_id, completion)
            response = json_response(single_response(model_id, completion))
            response.headers.extend(gate.miss_header(call))
            return response
        events = model.stream(messages, params)
        try:  # fall back only while nothing has been sent
            first: StreamEvent = await anext(events)
        except BaseException as exc:
            await aclose(events)
            if not isinstance(exc, ProviderError):
                raise
            error = state.fell_back(model_id, exc)
            continue
        body = single_stream(
            events,
            first,
            ChunkWriter(model_id),
            state.redact,
            state.deadlines,
            deadline,
            too_late,
            on_done=functools.partial(gate.single_done, state, call, model_id),
        )
        return StreamResponse(body, gate.miss_header(call))
    assert error is not None
    raise error


async def list_models(state: ServerState, request: Request, body: bytes) -> JSONResponse:
    cards = [
        ModelCard(id=f"{PRESET_PREFIX}/{name}", owned_by=PRESET_PREFIX, preset=info)
        for name, info in state.presets().items()
    ]
    cards += [ModelCard(id=m, owned_by=m.split("/", 1)[0]) for m in state.models()]
    return json_response(ModelList(data=cards))


async def panel_config(state: ServerState, request: Request, body: bytes) -> JSONResponse:
    return json_response(
        PanelConfig(
            default_preset=state.config.default_preset,
            presets=state.presets(),
            models=state.models(),
            modes=strategy_names(),
            judge_methods=method_names(),
            max_pool_members=state.settings.max_pool_members,
        )
    )


async def health(state: ServerState, request: Request, body: bytes) -> JSONResponse:
    run_log = state.run_log.health() if state.run_log is not None else None
    return json_response(Health(version=__version__, run_log=run_log))
