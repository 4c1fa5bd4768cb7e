"""The gateway at the server's edge (only when ``[gateway]`` turns something on).

Per request the app makes a ``Call``; the chat route asks ``before_fusion``/``before_single`` (the key's
allow-list on top of the server's own resolution, the response cache, then limits and budget holds) and
reports what the answer cost (``fusion_done``/``single_done``); after the response is sent, ``finish`` turns
the call into metrics, a usage record, the settlement of its holds and a cache entry. ``/metrics`` and
``/admin/usage`` are here too. Decisions stay in ``polyfuse.gateway``; this module translates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from ..errors import ConfigError, UserError
from ..fusion.budget import estimate_cost
from ..fusion.request import FusionRequest
from ..fusion.strategies import get_strategy
from ..gateway.cache import cache_key, deterministic
from ..gateway.metrics import CONTENT_TYPE
from ..gateway.report import GROUPS, to_json, usage_report
from ..gateway.service import Demand, Principal, Ticket
from ..gateway.usage import UsageRecord
from ..providers.pricing import estimate_tokens
from ..store import parse_when
from ..types import Completion, FusionResult, GenerationParams, Message, Usage
from .asgi import JSONResponse, Request, Response, StreamResponse, encode
from .errors import ApiError
from .schemas import ChatCompletion, ChatCompletionRequest, ChunkDelta
from .streaming import DONE, ChunkWriter
from .translate import completion_id, fusion_response, single_response, words

if TYPE_CHECKING:
    from .app import ServerState

__all__ = [
    "Call",
    "before_fusion",
    "before_single",
    "before_completion",
    "completion_done",
    "fusion_done",
    "single_done",
    "finish",
    "metrics",
    "usage",
    "sample_queues",
    "sample_queues_forever",
]

log = logging.getLogger("polyfuse.server")

CACHE_HEADER = b"x-polyfuse-cache"
_DEFAULT_OUTPUT = 1024  # tokens assumed for a pass-through's estimate when the client sets no max_tokens


@dataclass(slots=True)
class Call:
    """What one request did, filled in as it runs."""

    route: str
    started: float
    metered: bool  # a usage record is written (chat routes, once the caller is known)
    principal: Principal | None = None
    model: str = "-"
    preset: str = "-"
    mode: str = "-"
    status: int = 0
    ticket: Ticket | None = None
    usage: Usage | None = None
    cost: float = 0.0
    cost_known: bool = True
    cached: bool = False
    result: FusionResult | None = None
    cache_key: str | None = None
    cache_body: Callable[[], bytes] | None = None


def _cache_mode(headers: Mapping[str, str]) -> str:
    """``use`` (look up and store), ``refresh`` (no-cache: store a fresh answer) or ``off`` (no-store)."""
    value = headers.get("cache-control", "").lower()
    if "no-store" in value:
        return "off"
    return "refresh" if "no-cache" in value else "use"


def _needs_estimate(state: ServerState, principal: Principal) -> bool:
    key = principal.key
    if key is None:
        return False
    team = state.gateway.settings.teams.get(key.team) if state.gateway else None
    return key.budget is not None or (team is not None and team.budget is not None)


async def _lookup(state: ServerState, call: Call, kind: str, normalised: str, req: ChatCompletionRequest,
                  headers: Mapping[str, str]) -> bytes | None:  # fmt: skip
    gw = state.gateway
    if gw is None or gw.cache is None or not deterministic(req.temperature, req.seed):
        return None
    mode = _cache_mode(headers)
    if mode == "off":
        return None
    call.cache_key = cache_key(kind, normalised)
    if mode == "refresh":
        _cache_event(state, "bypass")
        return None
    body: bytes | None = await gw.cache.get(call.cache_key)
    _cache_event(state, "hit" if body is not None else "miss")
    return body


def _cache_event(state: ServerState, what: str) -> None:
    if state.gateway is not None and state.gateway.metrics is not None:
        state.gateway.metrics.cache_event(what)


async def _gate(state: ServerState, call: Call, demand: Demand, hit: bytes | None) -> None:
    gw = state.gateway
    assert gw is not None and call.principal is not None
    gw.check_allowed(call.principal, demand)
    if hit is not None:  # costs nothing: counts as a request, holds no budget
        demand = Demand(demand.models, demand.preset, 0, 0.0)
    call.ticket = await gw.admit(call.principal, demand)


async def before_fusion(
    state: ServerState, call: Call, req: ChatCompletionRequest, fused: FusionRequest, preset: str,
    headers: Mapping[str, str],
) -> Response | None:  # fmt: skip
    """Allow-list, cache, limits and holds for a fusion; a cached response when there is one."""
    call.model, call.preset, call.mode = req.model, preset, fused.mode
    assert call.principal is not None
    strategy = get_strategy(fused.mode)
    judge = [fused.judge] if fused.judge and strategy.uses_judge else []
    models = tuple(dict.fromkeys([*(s.model for s in fused.pool), *judge]))
    estimate: float | None = 0.0
    if _needs_estimate(state, call.principal):
        try:
            estimate = estimate_cost(
                fused, state.hub, strategy.judge_calls(fused), strategy.member_rounds(fused)
            )
        except ConfigError:
            estimate = None
    normalised = fused.model_dump_json(exclude={"shuffle_seed", "max_cost"})
    hit = await _lookup(state, call, "fusion", normalised, req, headers)
    await _gate(state, call, Demand(models, preset, estimate_tokens(fused.messages), estimate), hit)
    return _cached(call, hit, req.stream) if hit is not None else None


async def before_single(
    state: ServerState,
    call: Call,
    req: ChatCompletionRequest,
    ids: list[str],
    messages: list[Message],
    params: GenerationParams,
    headers: Mapping[str, str],
) -> Response | None:
    """The same for a pass-through (its model and every fallback)."""
    call.model, call.mode = req.model, "single"
    assert call.principal is not None
    tokens = estimate_tokens(messages)
    estimate: float | None = 0.0
    if _needs_estimate(state, call.principal):
        out = req.max_tokens or req.max_completion_tokens or _DEFAULT_OUTPUT
        prices = [state.hub.prices.estimate(m, tokens, out) for m in ids]
        estimate = None if any(p is None for p in prices) else max(p or 0.0 for p in prices)
    hit = None
    if state.gateway is not None and state.gateway.cache is not None:
        normalised = orjson.dumps(
            {
                "models": ids,
                "messages": [m.model_dump(mode="json") for m in messages],
                "params": params.model_dump(mode="json"),
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()
        hit = await _lookup(state, call, "single", normalised, req, headers)
    await _gate(state, call, Demand(tuple(ids), None, tokens, estimate), hit)
    return _cached(call, hit, req.stream) if hit is not None else None


async def before_completion(
    state: ServerState, call: Call, model: str, models: tuple[str, ...], preset: str | None, fused: FusionRequest | None,
    prompt: str, max_tokens: int | None,
) -> None:  # fmt: skip
    """``/v1/completions``: the key's allow-list (every model the request may call), limits and budget holds. No
    response cache: a completion is asked per keystroke, and a fused one is refined by the route itself."""
    call.model, call.preset, call.mode = model, preset or "-", "complete" if fused is not None else "single"
    assert call.principal is not None
    tokens = estimate_tokens([Message(role="user", content=prompt)])
    estimate: float | None = 0.0
    if _needs_estimate(state, call.principal):
        if fused is not None:
            strategy = get_strategy(fused.mode)
            try:
                estimate = estimate_cost(
                    fused, state.hub, strategy.judge_calls(fused), strategy.member_rounds(fused)
                )
            except ConfigError:
                estimate = None
        else:
            prices = [state.hub.prices.estimate(m, tokens, max_tokens or _DEFAULT_OUTPUT) for m in models]
            estimate = None if any(p is None for p in prices) else max(p or 0.0 for p in prices)
    await _gate(state, call, Demand(models, preset, tokens, estimate), None)


def completion_done(call: Call | None, usage: Usage, cost: float | None) -> None:
    if call is None:
        return
    call.usage, call.cost, call.cost_known = usage, cost or 0.0, cost is not None


def _cached(call: Call, body: bytes, stream: bool) -> Response:
    """A stored response, re-stamped: a new id and time, cost 0, ``fusion.cached``."""
    call.cached, call.cache_key = True, None
    stored = ChatCompletion.model_validate_json(body)
    usage = stored.usage.model_copy(update={"cost": 0.0})
    fusion = stored.fusion.model_copy(update={"cached": True}) if stored.fusion is not None else None
    fresh = stored.model_copy(
        update={"id": completion_id(), "created": int(time.time()), "usage": usage, "fusion": fusion}
    )
    headers = [(CACHE_HEADER, b"hit")]
    if not stream:
        return JSONResponse(encode(fresh), headers=headers)
    return StreamResponse(_replay(fresh), headers=headers)


async def _replay(completion: ChatCompletion) -> AsyncIterator[bytes]:
    writer = ChunkWriter(completion.model)
    writer.id, writer.created = completion.id, completion.created
    choice = completion.choices[0]
    yield writer.role()
    for piece in words(choice.message.content or ""):
        yield writer.text(piece)
    calls = choice.message.tool_calls
    delta = ChunkDelta(tool_calls=[{"index": i, **c} for i, c in enumerate(calls)] if calls else None)
    yield writer.chunk(delta, choice.finish_reason, usage=completion.usage, fusion=completion.fusion)
    yield DONE


def miss_header(call: Call | None) -> list[tuple[bytes, bytes]]:
    return [(CACHE_HEADER, b"miss")] if call is not None and call.cache_key is not None else []


def fusion_done(state: ServerState, call: Call | None, model: str, result: FusionResult, preset: str) -> None:
    if call is None:
        return
    call.result, call.usage = result, result.usage
    call.cost, call.cost_known = result.cost, result.cost_known
    if call.cache_key is not None:
        call.cache_body = lambda: encode(fusion_response(model, result, preset, state.redact))


def single_done(state: ServerState, call: Call | None, model_id: str, completion: Completion) -> None:
    if call is None:
        return
    call.usage = completion.usage or Usage()
    call.cost, call.cost_known = completion.cost or 0.0, completion.cost is not None
    if call.cache_key is not None and completion.finish_reason != "error":
        call.cache_body = lambda: encode(single_response(model_id, completion))


def finish(state: ServerState, call: Call) -> None:
    """After the response went out: metrics, usage record and settlement, cache entry."""
    gw = state.gateway
    assert gw is not None
    seconds = time.perf_counter() - call.started
    principal = call.principal
    if gw.metrics is not None:
        gw.metrics.request(call.route, call.status, call.model, call.preset, call.mode, seconds)
        if call.result is not None and principal is not None:
            gw.metrics.fusion(call.result, principal.key_label, principal.team_label)
    if call.metered and principal is not None:
        usage = call.usage if not call.cached else None
        record = UsageRecord(
            route=call.route,
            model=call.model,
            status=call.status or 499,  # 499: the client left before a response started
            preset=None if call.preset == "-" else call.preset,
            mode=None if call.mode == "-" else call.mode,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost=0.0 if call.cached else call.cost,
            cost_known=call.cost_known,
            latency=seconds,
            cached=call.cached,
        )
        gw.finish(principal, call.ticket, record, usage if call.result is None else None)
    if (
        gw.cache is not None
        and call.cache_key is not None
        and call.cache_body is not None
        and call.status == 200
    ):
        body = call.cache_body()
        task = asyncio.get_running_loop().create_task(gw.cache.put(call.cache_key, body))
        gw.background(task)


def sample_queues(state: ServerState) -> None:
    """The write queues into the metrics: the run log's (``runs``) and the usage records' (``usage``), their
    depth and their drops. Sampled (every second, and at each scrape) rather than updated per request."""
    gw = state.gateway
    if gw is None or gw.metrics is None:
        return
    if state.run_log is not None:
        stats = state.run_log.writer.stats()
        gw.metrics.queue("runs", stats.pending, stats.dropped)
    if gw.writer is not None:
        gw.metrics.queue("usage", gw.writer.depth, gw.writer.dropped)


async def sample_queues_forever(state: ServerState, every: float = 1.0) -> None:
    """Each worker samples its own queues, so a scrape answered by any worker sees every worker's (multiprocess
    mode) within a second."""
    while True:
        sample_queues(state)
        await asyncio.sleep(every)


# -- operator routes ------------------------------------------------------------------------------------------------
async def metrics(state: ServerState, request: Request, body: bytes) -> JSONResponse:
    gw = state.gateway
    if gw is None or gw.metrics is None:
        raise ApiError(404, "metrics are off: set [gateway] metrics = true", code="not_found")
    if not gw.may_read_metrics(request.headers.get("authorization")):
        raise ApiError(
            401,
            "/metrics needs an operator key or the metrics token: 'Authorization: Bearer <token>'",
            "authentication_error",
            "invalid_api_key",
        )
    sample_queues(state)
    return JSONResponse(gw.metrics.render(), content_type=CONTENT_TYPE)


async def usage(state: ServerState, request: Request, body: bytes) -> JSONResponse:
    """``GET /admin/usage?by=team&since=7d&until=...``: the usage report as JSON, for operators."""
    gw = state.gateway
    call = request.call
    if gw is None or gw.writer is None:
        raise ApiError(
            404, "usage is recorded only with the gateway on and the run-log database open", code="not_found"
        )
    if call is None or call.principal is None or not call.principal.admin:
        raise ApiError(
            403, "the usage report is for operators ([server] api_keys)", "permission_error", "forbidden"
        )
    query = request.query
    by = query.get("by", "key")
    if by not in GROUPS:
        raise ApiError(400, f"by must be one of {', '.join(GROUPS)}", code="invalid_value", param="by")
    try:
        since = parse_when(query["since"]) if query.get("since") else None
        until = parse_when(query["until"], end_of_day=True) if query.get("until") else None
    except UserError as exc:  # a date it cannot read
        raise ApiError(400, str(exc), code="invalid_value", param="since") from None
    rows = await asyncio.to_thread(usage_report, gw.writer.backend, by, since, until)
    return JSONResponse(to_json(rows, by).encode())
