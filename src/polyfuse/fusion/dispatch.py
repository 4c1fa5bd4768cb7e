"""Run pool members in parallel: per-member timeout, quorum (``min_responses``) with ``straggler_grace``, and
cancellation that reaches every in-flight call before we return."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ProviderError
from ..providers.base import ChatModel, Delta, MemberSpec
from ..types import Candidate, Completion, GenerationParams, Message, Usage
from .events import EventSink, FusionEvent

__all__ = ["Quorum", "dispatch", "run_member"]


@dataclass(frozen=True)
class Quorum:
    """Once ``min_responses`` members answered, wait at most ``grace`` seconds for the rest."""

    min_responses: int | None = None
    grace: float | None = None

    @classmethod
    def resolve(cls, pool_size: int, min_responses: int | None, grace: float | None) -> Quorum:
        if min_responses is None and grace is None:
            return cls()
        k = min_responses if min_responses is not None else pool_size // 2 + 1
        return cls(min(k, pool_size), grace if grace is not None else 0.0)


def _tool_text(calls: list[dict[str, object]] | None) -> str:
    if not calls:
        return ""
    parts = []
    for c in calls:
        fn = c.get("function") or {}
        if isinstance(fn, dict):
            parts.append(f"[tool call] {fn.get('name')}({fn.get('arguments')})")
    return "\n".join(parts)


async def run_member(
    spec: MemberSpec,
    model: ChatModel,
    messages: Sequence[Message],
    params: GenerationParams,
    timeout: float | None,
    round_no: int,
    emit: EventSink,
) -> Candidate:
    """Call one member; every failure becomes a Candidate with a status and a reason, never an exception
    (except cancellation, which the dispatcher owns)."""
    emit(FusionEvent("member_started", member=spec.id, model=spec.model, round=round_no))
    start = time.perf_counter()
    final: Completion | None = None
    status, error = "ok", None
    try:
        async with asyncio.timeout(timeout):
            async for event in model.stream(messages, params):
                if isinstance(event, Delta):
                    emit(FusionEvent("member_delta", member=spec.id, round=round_no, text=event.text))
                else:
                    final = event
    except TimeoutError:
        status, error = "timeout", f"no answer within the member timeout of {timeout:g}s"
    except ProviderError as exc:
        status, error = "failed", str(exc)
    latency = time.perf_counter() - start
    if final is not None and status == "ok" and not final.text.strip() and not final.tool_calls:
        status, error = "failed", "empty answer"
    if final is None and status == "ok":
        status, error = "failed", "no completion returned"
    cand = Candidate(
        member=spec.id,
        model=final.model if final and final.model else spec.model,
        text=(final.text.strip() or _tool_text(final.tool_calls)) if final else "",
        status=status,  # type: ignore[arg-type]
        error=error,
        latency=final.latency if final and status == "ok" else latency,
        ttft=final.ttft if final else None,
        usage=final.usage if final else Usage(),
        cost=final.cost if final else (0.0 if status != "ok" else None),
        round=round_no,
        tool_calls=final.tool_calls if final else None,
        logprob=final.logprob if final and status == "ok" else None,
    )
    emit(
        FusionEvent(
            "member_finished" if cand.ok else "member_failed", member=spec.id, round=round_no, candidate=cand
        )
    )
    return cand


async def dispatch(
    members: Sequence[MemberSpec],
    models: dict[str, ChatModel],
    messages_for: Callable[[MemberSpec], Sequence[Message]],
    params: GenerationParams,
    *,
    timeout: float | None,
    quorum: Quorum,
    round_no: int,
    emit: EventSink,
) -> list[Candidate]:
    """Start every member at once; return one Candidate per member, in pool order."""
    starts: dict[asyncio.Task[Candidate], float] = {}
    tasks: dict[asyncio.Task[Candidate], MemberSpec] = {}
    for spec in members:
        task = asyncio.create_task(
            run_member(
                spec,
                models[spec.id],
                messages_for(spec),
                spec.generation_params(params),
                timeout,
                round_no,
                emit,
            ),
            name=f"polyfuse:{spec.id}",
        )
        tasks[task] = spec
        starts[task] = time.perf_counter()
    results: dict[str, Candidate] = {}
    pending: set[asyncio.Task[Candidate]] = set(tasks)
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    answered = 0
    try:
        while pending:
            wait_for = None if deadline is None else max(0.0, deadline - loop.time())
            done, pending = await asyncio.wait(pending, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                cand = task.result()
                results[cand.member] = cand
                answered += cand.ok
            if quorum.min_responses is not None and deadline is None and answered >= quorum.min_responses:
                deadline = loop.time() + (quorum.grace or 0.0)
            if deadline is not None and pending and loop.time() >= deadline:
                break
    finally:
        # Cut stragglers (or everything, if we are being cancelled) and wait until they really stopped.
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    now = time.perf_counter()
    for task in pending:
        spec = tasks[task]
        cand = Candidate(
            member=spec.id,
            model=spec.model,
            status="cut",
            error=f"cut: {answered} answers were in and straggler_grace ({quorum.grace:g}s) had passed",
            latency=now - starts[task],
            cost=0.0,
            round=round_no,
        )
        results[spec.id] = cand
        emit(FusionEvent("member_failed", member=spec.id, round=round_no, candidate=cand))
    return [results[spec.id] for spec in members]
