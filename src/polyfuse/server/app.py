"""The ASGI application: lifespan (one ProviderHub per worker), auth, the recursion guard, the body limits,
routing by (method, path), error rendering, the web panel's static files and /openapi.json."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from ..config import Config, load_config
from ..errors import PolyfuseError, ProviderError
from ..fusion.request import FusionRequest
from ..gateway.service import Gateway
from ..presets import member_specs
from ..providers.local import BUNDLED
from ..providers.openai_compat import request_headers
from ..providers.policy import ModelPolicy
from ..providers.registry import ProviderHub
from ..redaction import Redactor, provider_keys
from ..store import RunLog, open_log
from ..types import FusionResult
from . import completions, gate, routes
from .asgi import (
    ClientGone,
    JSONResponse,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    encode,
    until_disconnect,
)
from .deadlines import Deadlines
from .errors import ApiError, from_library
from .gate import Call
from .openapi import openapi_document
from .policy import server_policy
from .preload import preload
from .runlog import RunLogHook
from .schemas import PresetInfo
from .settings import CONFIG_ENV, DEPTH_HEADER, NO_LOG_ENV, ServerSettings

__all__ = ["ServerApp", "ServerState", "create_app", "app_from_env", "CONFIG_ENV"]

log = logging.getLogger("polyfuse.server")

Handler = Callable[["ServerState", Request, bytes], Awaitable[Response]]
ResultHook = Callable[[FusionRequest, FusionResult], None]

# The panel is same-origin HTML, CSS and JavaScript: nothing inline, nothing from elsewhere, never in a frame.
_PANEL_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_DEPTH = re.compile(r"[0-9]{1,6}")
_STATIC_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}


@dataclass
class ServerState:
    """What the handlers share: config, settings, the hub, the redactor and the finished-run hook."""

    config: Config
    hub: ProviderHub
    redact: Redactor
    policy: ModelPolicy
    result_hooks: list[ResultHook] = field(default_factory=list)
    run_log: RunLogHook | None = None
    completions: completions.RefinedCompletions = field(default_factory=completions.RefinedCompletions)
    deadlines: Deadlines = field(default_factory=Deadlines)  # pass-through deadlines, one timer for all
    gateway: Gateway | None = None
    owned_log: RunLog | None = None  # the database opened for the gateway alone (run log off)

    @property
    def settings(self) -> ServerSettings:
        return self.config.server

    def finished(self, request: FusionRequest, result: FusionResult) -> None:
        """The one place where every finished fusion (streamed or not) passes: the run log hooks in here."""
        for hook in self.result_hooks:
            hook(request, result)

    def fell_back(self, model_id: str, exc: ProviderError) -> ProviderError:
        log.warning("model %s failed, trying the next fallback: %s", model_id, self.redact(str(exc)))
        return exc

    def presets(self) -> dict[str, PresetInfo]:
        return {
            name: PresetInfo(
                description=p.description,
                pool=[s.model if s.id == s.model else s.id for s in member_specs(p)],
                judge=p.judge,
                mode=p.mode,
                rounds=p.rounds,
            )
            for name, p in self.config.all_presets().items()
        }

    def models(self) -> list[str]:
        """Single-model ids worth offering: bundled and aliased local models, preset members, [server] models."""
        seen = dict.fromkeys(f"local/{n}" for n in [*BUNDLED, *self.config.local.models])
        for p in self.config.all_presets().values():
            seen.update(dict.fromkeys(s.model for s in member_specs(p)))
            if p.judge:
                seen[p.judge] = None
        seen.update(dict.fromkeys(self.settings.models))
        return list(seen)


class ServerApp:
    """``ServerApp(config)`` is an ASGI app; pass ``hub`` to share one (tests), else one is made per worker."""

    def __init__(
        self,
        config: Config,
        hub: ProviderHub | None = None,
        env: Mapping[str, str] | None = None,
        policy: ModelPolicy | None = None,
    ) -> None:
        policy = policy or server_policy(config, env)
        hub = hub or ProviderHub.from_config(config, env=env, policy=policy)
        self.keys = config.server.keys(env)
        self.state = ServerState(config, hub, Redactor([*provider_keys(hub), *self.keys]), policy)
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/chat/completions"): routes.chat_completions,
            ("POST", "/v1/completions"): completions.completions,
            ("GET", "/v1/models"): routes.list_models,
            ("GET", "/v1/fusion/config"): routes.panel_config,
            ("GET", "/health"): routes.health,
            ("GET", "/metrics"): gate.metrics,
            ("GET", "/admin/usage"): gate.usage,
        }
        self._metered = {"/v1/chat/completions", "/v1/completions"}
        self.static = _load_static()
        self.openapi = encode(openapi_document())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        preloading: asyncio.Future[None] | None = None
        sampling: asyncio.Future[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                preloading = asyncio.ensure_future(preload(self.state.config, self.state.hub))
                if self.state.gateway is not None:
                    self.state.gateway.start()
                    if self.state.gateway.metrics is not None:
                        sampling = asyncio.ensure_future(gate.sample_queues_forever(self.state))
                # What startup built (modules, schemas, config) lives as long as the worker: frozen, the
                # collector stops re-scanning it every time requests' garbage triggers a full collection
                # (bench/README.md: about 35 us per pass-through request).
                gc.collect()
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in (preloading, sampling):
                    if task is not None:
                        task.cancel()
                await self.state.completions.aclose()
                await self.state.hub.aclose()
                if self.state.gateway is not None:
                    await self.state.gateway.aclose()
                if self.state.run_log is not None:
                    await self.state.run_log.aclose()
                if self.state.owned_log is not None:
                    self.state.owned_log.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            await self._unrouted(request).send_to(send)
            return
        if self.state.gateway is None:
            await self._serve(handler, request, receive, send)
            return
        call = request.call = Call(request.path, time.perf_counter(), request.path in self._metered)

        async def observed(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                call.status = int(message["status"])  # type: ignore[call-overload]
            await send(message)

        try:
            await self._serve(handler, request, receive, observed)
        finally:
            gate.finish(self.state, call)

    async def _serve(self, handler: Handler, request: Request, receive: Receive, send: Send) -> None:
        try:
            self._guard(request)
            body = await self._body(request) if request.method == "POST" else b""
        except ApiError as exc:
            await _error(exc).send_to(send)
            return
        except ClientGone:
            return
        if request.method == "GET":
            try:
                response = await handler(self.state, request, body)
            except ApiError as exc:
                response = _error(exc)
            await response.send_to(send)
            return
        await until_disconnect(receive, self._respond(handler, request, body, send))

    async def _respond(self, handler: Handler, request: Request, body: bytes, send: Send) -> None:
        depth = int(request.headers.get(DEPTH_HEADER, "0"))
        request_headers.set(
            {DEPTH_HEADER: str(depth + 1)}
        )  # this task's context: calls made for this request
        try:
            response = await handler(self.state, request, body)
        except ApiError as exc:
            response = _error(exc)
        except PolyfuseError as exc:
            err = from_library(exc, self.state.redact)
            if err.status >= 500:
                log.warning("%s %s: %s", request.method, request.path, err.message)
            response = _error(err)
        await response.send_to(send)

    async def _body(self, request: Request) -> bytes:
        """A JSON body within the size limit. Only ``application/json``: a web page can make the
        browser send text/plain, form or typeless bodies to any origin without asking (no CORS preflight)."""
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise ApiError(
                415,
                f"the request body must be sent as Content-Type: application/json (got '{media[:60] or 'none'}')",
                code="unsupported_media_type",
            )
        # The body's deadline ([server] body_timeout) is kept by the connection (server/protocol.py), at no
        # cost per request; a client that stops sending gets a 408 and this read ends with ClientGone.
        return await request.body(self.state.settings.max_body_bytes)

    def _guard(self, request: Request) -> None:
        """Auth for /v1 routes when keys are configured; refuse requests that looped through polyfuse."""
        if request.call is not None and request.path.startswith(("/v1/", "/admin/")):
            assert self.state.gateway is not None
            try:
                request.call.principal = self.state.gateway.authenticate(request.headers.get("authorization"))
            except PolyfuseError as exc:
                raise from_library(exc, self.state.redact) from None
        elif self.keys and request.path.startswith("/v1/"):
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not any(
                hmac.compare_digest(token.strip().encode(), k.encode()) for k in self.keys
            ):
                raise ApiError(
                    401,
                    "missing or invalid API key: send 'Authorization: Bearer <key>'",
                    "authentication_error",
                    "invalid_api_key",
                )
        raw = request.headers.get(DEPTH_HEADER)
        if raw is None:
            return
        if not _DEPTH.fullmatch(raw.strip()):  # ASCII digits only: str.isdigit() accepts '²', int() does not
            raise ApiError(400, f"{DEPTH_HEADER} must be a non-negative integer", param=DEPTH_HEADER)
        if int(raw) > self.state.settings.max_depth:
            raise ApiError(
                400,
                f"recursion guard: this request already passed through polyfuse {int(raw)} times "
                f"(limit {self.state.settings.max_depth}); a model id probably points back at a polyfuse server",
                code="recursion_limit",
            )

    def _unrouted(self, request: Request) -> JSONResponse:
        path = request.path
        if request.method in ("GET", "HEAD"):
            if path == "/openapi.json":
                return JSONResponse(self.openapi)
            static = self.static.get("index.html" if path == "/" else path.removeprefix("/static/"))
            if static is not None and (path == "/" or path.startswith("/static/")):
                return JSONResponse(static[0], content_type=static[1], headers=_PANEL_HEADERS)
        if any(p == path for _, p in self.routes):
            allowed = ", ".join(m for m, p in self.routes if p == path)
            return _error(
                ApiError(
                    405,
                    f"method {request.method} not allowed on {path}; use {allowed}",
                    code="method_not_allowed",
                )
            )
        return _error(ApiError(404, f"no route {request.method} {path}", code="not_found"))


def _error(exc: ApiError) -> JSONResponse:
    headers = []
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    return JSONResponse(encode(exc.body()), exc.status, headers)


def _load_static() -> dict[str, tuple[bytes, bytes]]:
    out = {}
    for item in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in _STATIC_TYPES:
            out[item.name] = (item.read_bytes(), _STATIC_TYPES[suffix])
    return out


def create_app(
    config: Config | None = None,
    hub: ProviderHub | None = None,
    env: Mapping[str, str] | None = None,
    result_hooks: list[ResultHook] | None = None,
    run_log: RunLog | None = None,
    policy: ModelPolicy | None = None,
    gateway_log: RunLog | None = None,
) -> ServerApp:
    """The app; ``run_log`` records every finished fusion (closed at shutdown). ``policy`` defaults to the
    server's restrictive one built from the config (``server_policy``). The gateway (when ``[gateway]`` turns
    something on) keeps keys and usage in ``run_log``'s database, or in ``gateway_log``'s when runs are not
    recorded (closed at shutdown too)."""
    app = ServerApp(config or load_config(), hub, env, policy)
    app.state.result_hooks.extend(result_hooks or [])
    if run_log is not None:
        app.state.run_log = RunLogHook(run_log, app.state.redact, app.state.config.log)
        app.state.result_hooks.append(app.state.run_log)
    settings = app.state.config.gateway
    if settings.enabled:
        db = run_log or gateway_log
        app.state.owned_log = gateway_log if run_log is None else None
        app.state.gateway = Gateway.build(settings, db.backend if db else None, app.keys, env)
    return app


def app_from_env() -> ServerApp:
    """Factory for uvicorn workers: the config path comes from ``POLYFUSE_SERVER_CONFIG`` and the run log is
    off when ``POLYFUSE_SERVER_NO_LOG`` is set (both set by serve)."""
    config = load_config(os.environ.get(CONFIG_ENV) or None)
    logging_on = config.log.enabled and not os.environ.get(NO_LOG_ENV)
    run_log = open_log(config.log) if logging_on else None
    gateway_log = open_log(config.log) if run_log is None and config.gateway.keys else None
    return create_app(config, run_log=run_log, gateway_log=gateway_log)
