"""``polyfuse mcp``: fusion as Model Context Protocol tools, on the official ``mcp`` SDK's low-level server.

Tools: ``fuse`` (the fused answer with its verdict and per-member figures), ``consult`` (the advisors' answers and
the panel's analysis, no final answer: the calling agent acts) and ``review_diff`` (the merged, consensus-gated
review of a diff). Progress notifications go out as members answer; a client's cancellation cancels the tool's
task and with it every model call in flight. Each call's depth (how many polyfuse hops it has passed through)
comes from the process environment (``POLYFUSE_DEPTH``, stdio) or the ``X-Polyfuse-Depth`` header (HTTP); calls
deeper than ``[server] max_depth`` are refused, and model calls carry depth + 1 onwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from pydantic import BaseModel, ValidationError

from ..code.checks import describe_no_survivors
from ..code.review import review
from ..code.review_config import load_review_options
from ..code.review_format import to_text
from ..code.task import CodeEnv
from ..config import Config
from ..errors import NoSurvivorsError, PolyfuseError
from ..fusion.engine import fuse
from ..fusion.events import EventSink, FusionEvent
from ..fusion.request import FusionRequest
from ..providers.policy import ModelPolicy
from ..providers.registry import ProviderHub
from ..server.settings import DEPTH_HEADER
from ..store import RunLog
from ..types import FusionResult, Message
from .schemas import (
    ConsultArgs,
    ConsultOutput,
    FuseArgs,
    FuseOutput,
    ReviewArgs,
    ReviewOutput,
    analysis_of,
    argument_error,
    fuse_output,
    member_outcomes,
    review_output,
)

__all__ = ["PolyfuseTools", "build_server", "make_hub", "DEPTH_ENV"]

DEPTH_ENV = "POLYFUSE_DEPTH"  # the stdio server's depth, set by whoever started it (an agent inside a panel)
log = logging.getLogger("polyfuse.mcp")
HubFactory = Callable[[Config, int, ModelPolicy | None], ProviderHub]
Send = Callable[[float, float | None, str], Awaitable[None]]


class ToolError(Exception):
    """A call that cannot run as given: answered as a tool result with ``isError``, never a protocol error."""


def make_hub(config: Config, depth: int, policy: ModelPolicy | None = None) -> ProviderHub:
    """The one place the MCP server builds a hub: model calls carry the next hop's depth; ``policy`` limits
    which model ids a client may name (None: the CLI's freedom, for stdio, where the client is the user's)."""
    return ProviderHub.from_config(config, headers={DEPTH_HEADER: str(depth + 1)}, policy=policy)


def parse_depth(raw: str | None, source: str) -> int:
    if raw is None or not raw.strip():
        return 0
    if not raw.strip().isdigit() or len(raw.strip()) > 4:
        raise ToolError(f"{source} must be a small non-negative integer (got {raw[:20]!r})")
    return int(raw)


_TOOLS: list[tuple[str, str, type[BaseModel], type[BaseModel]]] = [
    (
        "fuse",
        "Ask a pool of LLMs the same prompt and get one fused answer from a judge, with the verdict "
        "(consensus, contradictions), the pool's agreement, each member's latency and cost, and failed members.",
        FuseArgs,
        FuseOutput,
    ),
    (
        "consult",
        "Consult a panel of LLMs as advisors: each member's answer plus an analysis of where they agree and "
        "contradict each other. No final answer: you weigh the advice and act.",
        ConsultArgs,
        ConsultOutput,
    ),
    (
        "review_diff",
        "Review a code change with a pool of LLM reviewers: give a unified diff, or a base to diff the "
        "server's repository against. Comments raised by fewer than min_agreement reviewers are returned "
        "apart as disputed.",
        ReviewArgs,
        ReviewOutput,
    ),
]


class PolyfuseTools:
    """The tools over one config: hubs (one per depth, created on first use), the run log, the repository."""

    def __init__(
        self,
        config: Config,
        *,
        root: Path,
        depth: int = 0,
        run_log: RunLog | None = None,
        policy: ModelPolicy | None = None,
        hub_factory: HubFactory = make_hub,
    ) -> None:
        self.config, self.root, self.depth, self.run_log = config, root.resolve(), depth, run_log
        self.policy = policy
        self._hub_factory = hub_factory
        self._hubs: dict[int, ProviderHub] = {}

    def hub(self, depth: int) -> ProviderHub:
        if depth not in self._hubs:
            self._hubs[depth] = self._hub_factory(self.config, depth, self.policy)
        return self._hubs[depth]

    async def aclose(self) -> None:
        for hub in self._hubs.values():
            await hub.aclose()
        self._hubs.clear()

    def list_tools(self) -> list[types.Tool]:
        hints = types.ToolAnnotations(read_only_hint=True, open_world_hint=True)
        return [
            types.Tool(
                name=name,
                description=text,
                input_schema=args.model_json_schema(),
                output_schema=out.model_json_schema(),
                annotations=hints,
            )
            for name, text, args, out in _TOOLS
        ]

    async def call(
        self, name: str, arguments: Mapping[str, Any] | None, headers: Mapping[str, str] | None, send: Send
    ) -> types.CallToolResult:
        """Run one tool; every mistake of the caller's is an ``isError`` result with one clear line."""
        spec = next((t for t in _TOOLS if t[0] == name), None)
        try:
            if spec is None:
                raise ToolError(f"unknown tool '{name}': polyfuse offers {', '.join(t[0] for t in _TOOLS)}")
            try:
                args = spec[2].model_validate(dict(arguments or {}))
            except ValidationError as exc:
                raise ToolError(argument_error(name, exc)) from None
            depth = self._depth(headers)
            text, out = await self._run(name, args, depth, send)
        except (ToolError, PolyfuseError) as exc:
            log.info("tool %s refused: %s", name, exc)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=str(exc))], is_error=True
            )
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=out.model_dump(mode="json"),
        )

    def _depth(self, headers: Mapping[str, str] | None) -> int:
        depth = max(self.depth, parse_depth((headers or {}).get(DEPTH_HEADER), DEPTH_HEADER))
        limit = self.config.server.max_depth
        if depth > limit:
            raise ToolError(
                f"recursion guard: this call already passed through polyfuse {depth} times (limit {limit}, "
                "[server] max_depth); a panel member is probably an agent calling polyfuse again"
            )
        return depth

    async def _run(self, name: str, args: BaseModel, depth: int, send: Send) -> tuple[str, BaseModel]:
        if isinstance(args, FuseArgs):
            return await self._fuse(args, depth, send)
        if isinstance(args, ConsultArgs):
            return await self._consult(args, depth, send)
        assert isinstance(args, ReviewArgs)
        return await self._review(args, depth, send)

    def _check_pool(self, request: FusionRequest) -> None:
        limit = self.config.server.max_pool_members
        if len(request.pool) > limit:
            raise ToolError(
                f"the pool has {len(request.pool)} members; at most {limit} ([server] max_pool_members)"
            )

    async def _fused(self, request: FusionRequest, depth: int, send: Send) -> FusionResult:
        self._check_pool(request)
        async with progress(send, request) as sink:
            try:
                result = await fuse(request, self.hub(depth), on_event=sink)
            except PolyfuseError as exc:
                if self.run_log is not None:
                    await asyncio.to_thread(self.run_log.record_error, request, exc, source="mcp")
                raise
        if self.run_log is not None:
            await self.run_log.arecord(request, result, source="mcp")
        return result

    async def _fuse(self, args: FuseArgs, depth: int, send: Send) -> tuple[str, BaseModel]:
        request = self.config.build_request(
            args.prompt, preset=args.preset, pool=args.pool, judge=args.judge, mode=args.mode
        )
        result = await self._fused(request, depth, send)
        out = fuse_output(result)
        cost = f"${result.cost:.4f}" + ("" if result.cost_known else "+")
        note = (
            f"\n\n[polyfuse {result.mode}: {len(result.candidates)} members, agreement {result.agreement:.2f}, "
            f"{cost}, {result.wall_time:.1f}s"
            + (f"; failed: {len(result.failed_models)}" if result.failed_models else "")
            + "]"
        )
        return result.answer + note, out

    async def _consult(self, args: ConsultArgs, depth: int, send: Send) -> tuple[str, BaseModel]:
        preset = self.config.preset(args.preset)
        mode = "best-of" if preset.judge else "vote"  # the judge analyses the answers; its pick is not used
        request = self.config.build_request(args.prompt, preset=args.preset, mode=mode)
        result = await self._fused(request, depth, send)
        advice, analysis = analysis_of(result)
        out = ConsultOutput(
            advisors=advice,
            analysis=analysis,
            members=member_outcomes(result),
            failed_models=[f"{f.member}: {f.reason}" for f in result.failed_models],
            cost=result.cost,
            wall_time=round(result.wall_time, 3),
        )
        lines = ["Advisors' answers (no final answer: weigh them and decide):"]
        lines += [f"\n## {a.member}\n{a.answer}" for a in advice]
        if analysis.consensus:
            lines.append("\nConsensus: " + "; ".join(analysis.consensus))
        if analysis.contradictions:
            lines.append("Contradictions: " + "; ".join(analysis.contradictions))
        lines.append(f"Agreement (measured): {analysis.agreement:.2f}")
        return "\n".join(lines), out

    async def _review(self, args: ReviewArgs, depth: int, send: Send) -> tuple[str, BaseModel]:
        if args.diff is not None and args.base is not None:
            raise ToolError("review_diff: give either diff or base, not both")
        options = load_review_options(
            self.root,
            self.config.code,
            min_agreement=args.min_agreement,
            min_severity=args.min_severity,
            max_comments=args.max_comments,
        )
        env = CodeEnv.create(
            self.config, self.hub(depth), run_log=self.run_log, task="review", preset=args.preset
        )
        base = args.base or ("(given diff)" if args.diff is not None else "main")
        probe = env.request([Message(role="user", content="review")])  # for the progress total
        async with progress(send, probe) as sink:
            env.on_event = sink
            try:
                result = await review(env, self.root, base=base, diff=args.diff, options=options)
            except NoSurvivorsError as exc:
                raise ToolError(
                    "no review passed the checks: " + describe_no_survivors(exc, getattr(exc, "scores", None))
                ) from None
        return to_text(result), review_output(result)


@asynccontextmanager
async def progress(send: Send, request: FusionRequest | None) -> AsyncIterator[EventSink]:
    """An event sink that forwards members' progress to the client as MCP progress notifications.

    The engine's sinks are synchronous; a task sends the notifications in order. ``total`` is the pool's size
    plus the judge for one round (None when unknown)."""
    queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
    total = float(len(request.pool) + (1 if request.judge else 0)) if request is not None else None
    done = 0

    def sink(event: FusionEvent) -> None:
        nonlocal done
        if event.type in ("member_finished", "member_failed") and event.candidate is not None:
            c = event.candidate
            done += 1
            what = f"answered in {c.latency:.1f}s" if c.ok else f"{c.status}: {(c.error or '')[:80]}"
            queue.put_nowait((done, f"{c.member} {what}"))
        elif event.type == "judge_started":  # half a step: progress must grow with every notification
            queue.put_nowait((done + 0.5, f"judge {event.model} is weighing the answers"))
        elif event.type == "judge_finished":
            done += 1
            queue.put_nowait((done, f"judge {event.model} finished"))

    async def pump() -> None:
        while (item := await queue.get()) is not None:
            count, message = item
            await send(count, total if total is not None and count <= total else None, message)

    task = asyncio.create_task(pump())
    try:
        yield sink
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    queue.put_nowait(None)
    try:
        await asyncio.wait_for(task, timeout=5)
    except TimeoutError:
        log.warning("progress notifications did not drain within 5 s")


def build_server(tools: PolyfuseTools, version: str) -> Server[Any]:
    """The SDK's low-level server with polyfuse's three tools."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools.list_tools())

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        headers = getattr(ctx.request, "headers", None)  # the HTTP request's headers; None on stdio

        async def send(count: float, total: float | None, message: str) -> None:
            await ctx.session.report_progress(count, total, message)

        return await tools.call(params.name, params.arguments, headers, send)

    return Server(
        "polyfuse",
        version=version,
        instructions=(
            "polyfuse asks a pool of LLMs at once. Use `consult` on a hard step to hear several models and see "
            "where they disagree; `fuse` for one fused answer; `review_diff` for a consensus-gated code review."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
