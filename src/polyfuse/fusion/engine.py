"""The fusion engine: resolve models, dispatch the pool, run the mode's strategy, account for everything."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from ..errors import AllMembersFailedError, NoSurvivorsError, ProviderError
from ..providers.base import ChatModel, Delta, MemberSpec
from ..providers.registry import ProviderHub
from ..types import (
    Candidate,
    Completion,
    FailedModel,
    FusionResult,
    GenerationParams,
    Message,
    Usage,
    Verdict,
)
from .agreement import vote
from .budget import check_budget
from .dispatch import Quorum, dispatch
from .events import EventSink, FusionEvent, null_sink
from .jsonstream import FieldStreamer
from .judge import (
    Ballot,
    JudgeKind,
    ParsedVerdict,
    VerdictParseError,
    judge_messages,
    make_ballot,
    parse_verdict,
    repair_messages,
    verdict_schema,
)
from .request import FusionRequest
from .stopcut import StopCutter, cut_at_stop
from .strategies import Outcome, get_strategy

__all__ = ["Adapt", "FusionContext", "Screen", "fuse", "fuse_events"]

# Checks run on a round's candidates before any judge sees them (the code assistant runs code here). It
# returns the candidates with ``checks`` filled and status "rejected" for those that failed; others untouched.
Screen = Callable[[list[Candidate]], Awaitable[list[Candidate]]]
# Wraps each resolved pool model for one run, e.g. to phrase the prompt in that model's own format (the code
# assistant's fill-in-the-middle templates). The judge is never adapted.
Adapt = Callable[[MemberSpec, ChatModel], ChatModel]


@dataclass
class FusionContext:
    """What a strategy may use: the request, the resolved models, dispatch and judge calls with accounting."""

    request: FusionRequest
    models: dict[str, ChatModel]
    judge: ChatModel | None
    emit: EventSink
    rng: random.Random
    screen: Screen | None = None
    history: list[list[Candidate]] = field(default_factory=list)
    judge_calls: list[Completion] = field(default_factory=list)
    critical_path: float = 0.0

    @property
    def quorum(self) -> Quorum:
        r = self.request
        return Quorum.resolve(len(r.pool), r.min_responses, r.straggler_grace)

    async def dispatch(
        self,
        messages_for: Callable[[MemberSpec], Sequence[Message]],
        members: Sequence[MemberSpec] | None = None,
    ) -> list[Candidate]:
        round_no = len(self.history)
        self.emit(FusionEvent("round_started", round=round_no))
        params = self.request.params
        if self.request.member_logprobs:
            params = params.merged(logprobs=True)  # members' own confidence, where the backend gives it
        cands = await dispatch(
            members if members is not None else self.request.pool,
            self.models,
            messages_for,
            params,
            timeout=self.request.member_timeout,
            quorum=self.quorum,
            round_no=round_no,
            emit=self.emit,
        )
        self.critical_path += max((c.latency for c in cands), default=0.0)
        if self.screen is not None and any(c.ok for c in cands):
            started = time.perf_counter()
            cands = await self.screen(cands)
            self.critical_path += time.perf_counter() - started  # checks are real work, not overhead
            for c in cands:
                if c.checks:
                    self.emit(FusionEvent("candidate_checked", member=c.member, round=round_no, candidate=c))
        self.history.append(cands)
        return cands

    def vote_outcome(self, candidates: Sequence[Candidate], *, judge_failed: str | None = None) -> Outcome:
        """The no-judge answer: the most agreed-with candidate (ties: the most confident member)."""
        ok = [c for c in candidates if c.ok]
        result = vote(
            [c.text for c in ok], confidence=[c.logprob for c in ok], weighted=self.request.vote_weighted
        )
        winner = ok[result.winner]
        verdict = Verdict(
            judge=self.request.judge if judge_failed else None,
            choice=winner.member,
            agreement=round(result.agreement, 4),
            judge_failed=judge_failed is not None,
            failure_reason=judge_failed,
            method="vote",
        )
        return Outcome(answer=winner.text, verdict=verdict, tool_calls=winner.tool_calls, chosen=winner)

    async def ask_judge(
        self,
        candidates: Sequence[Candidate],
        kind: JudgeKind,
        *,
        ballot: Ballot | None = None,
        analysis: bool = False,
        pick: str | None = None,
    ) -> ParsedVerdict | str:
        """One judge call plus at most one repair retry. Returns the parsed verdict, or why the judge failed.
        ``pick``: the label already chosen from token probabilities (the writer is told; no scores asked)."""
        judge = self.judge
        if judge is None:
            return "no judge model configured"
        ok = [c for c in candidates if c.ok]
        ballot = ballot or make_ballot(ok, self.rng)
        jp = self.request.judge_params
        answer_chars = max(400, (jp.max_tokens or 1024) * 3)
        # the written answer honours the client's response_format: a JSON value of its schema, not text
        answer_schema = self.request.params.json_schema if kind == "write" else None
        labels = list(ballot.labels)
        schema = verdict_schema(
            labels, kind, answer_chars, answer_schema, analysis=analysis, scored=pick is None
        )
        params = jp.merged(json_schema=schema)
        messages = judge_messages(
            self.request.messages, ballot, kind, answer_schema, analysis=analysis, pick=pick
        )
        stream_answer = kind == "write" and answer_schema is None
        problem = text = ""
        for attempt in (1, 2):
            if attempt == 2:
                messages = repair_messages(messages, text, problem)
            self.emit(FusionEvent("judge_started", model=judge.id, data={"attempt": attempt}))
            try:
                text = await self._judge_call(judge, messages, params, stream_answer=stream_answer)
            except (ProviderError, TimeoutError) as exc:
                reason = str(exc) or f"judge timed out after {self.request.judge_timeout:g}s"
                self._judge_failed_attempt(judge, kind, reason)
                return f"judge call failed: {reason}"
            try:
                parsed = parse_verdict(text, ballot, kind, judge.id, json_answer=answer_schema is not None)
            except VerdictParseError as exc:
                problem = str(exc)
                self._judge_failed_attempt(judge, kind, problem)
                continue
            self.emit(FusionEvent("judge_finished", model=judge.id, data={"ok": True}))
            if parsed.answer is not None and answer_schema is None:
                parsed.answer = cut_at_stop(parsed.answer, self.request.params.stop)
                parsed.streamed = True
            return parsed
        return f"judge output unusable after one repair retry: {problem}"

    async def _judge_call(
        self, judge: ChatModel, messages: Sequence[Message], params: GenerationParams, stream_answer: bool
    ) -> str:
        streamer = FieldStreamer("answer") if stream_answer else None
        cutter = StopCutter(self.request.params.stop)  # the client's stop sequences, on the written answer
        final: Completion | None = None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.request.judge_timeout):
                async for event in judge.stream(messages, params):
                    if isinstance(event, Delta):
                        self.emit(FusionEvent("judge_delta", model=judge.id, text=event.text))
                        if streamer is not None:
                            piece = cutter.feed(streamer.feed(event.text))
                            if streamer.done:
                                piece += cutter.flush()
                            if piece:
                                self.emit(FusionEvent("answer_delta", text=piece))
                    else:
                        final = event
        finally:
            latency = final.latency if final else time.perf_counter() - start
            self.critical_path += latency
            if final is not None:
                self.judge_calls.append(final)
            else:
                self.judge_calls.append(Completion(text="", model=judge.id, latency=latency, cost=0.0))
        assert final is not None
        return final.text

    def _judge_failed_attempt(self, judge: ChatModel, kind: JudgeKind, reason: str) -> None:
        self.emit(FusionEvent("judge_finished", model=judge.id, data={"ok": False, "error": reason}))
        if kind == "write":
            # Whatever answer text streamed from this attempt is withdrawn; a retry or the fallback follows.
            self.emit(FusionEvent("answer_reset", data={"reason": reason}))


def _resolve(
    request: FusionRequest, hub: ProviderHub, needs_judge: bool, adapt: Adapt | None = None
) -> tuple[dict[str, ChatModel], ChatModel | None]:
    models = {spec.id: hub.model(spec.model) for spec in request.pool}
    if adapt is not None:
        models = {spec.id: adapt(spec, models[spec.id]) for spec in request.pool}
    judge = hub.model(request.judge) if needs_judge and request.judge else None
    return models, judge


def _totals(calls: Sequence[Candidate | Completion]) -> tuple[Usage, float, bool]:
    usage, cost, known = Usage(), 0.0, True
    for c in calls:
        usage = usage + c.usage
        if c.cost is None:
            known = False
        else:
            cost += c.cost
    return usage, cost, known


async def fuse(
    request: FusionRequest,
    hub: ProviderHub | None = None,
    *,
    on_event: EventSink | None = None,
    screen: Screen | None = None,
    adapt: Adapt | None = None,
) -> FusionResult:
    """Run one fusion. Creates (and closes) a default hub when none is given. ``screen`` checks each round's
    candidates before the judge; rejected ones never reach it. ``adapt`` wraps each member's model."""
    if hub is None:
        async with ProviderHub() as own_hub:
            return await fuse(request, own_hub, on_event=on_event, screen=screen, adapt=adapt)
    emit = on_event or null_sink
    strategy = get_strategy(request.mode)
    started = time.perf_counter()
    models, judge = _resolve(request, hub, strategy.uses_judge, adapt)
    if request.max_cost is not None:
        check_budget(request, hub, strategy.judge_calls(request), strategy.member_rounds(request))
    ctx = FusionContext(
        request=request,
        models=models,
        judge=judge,
        emit=emit,
        rng=random.Random(request.shuffle_seed),
        screen=screen,
    )
    emit(
        FusionEvent(
            "run_started",
            data={
                "mode": request.mode,
                "judge": request.judge if strategy.uses_judge else None,
                "members": {s.id: s.model for s in request.pool},
            },
        )
    )
    first = await ctx.dispatch(lambda spec: request.messages)
    if not any(c.ok for c in first):
        if any(c.status == "rejected" for c in first):
            raise NoSurvivorsError(first)
        raise AllMembersFailedError({c.member: c.error or c.status for c in first})
    outcome = await _run_strategy(ctx, strategy, first)
    if outcome.verdict.agreement < 0:
        outcome.verdict.agreement = round(vote([c.text for c in outcome.final if c.ok]).agreement, 4)
    emit(FusionEvent("verdict", verdict=outcome.verdict))
    if not outcome.streamed:  # a candidate's text, or a JSON answer: it goes out whole now
        emit(FusionEvent("answer_delta", text=outcome.answer))
    result = _result(ctx, outcome, started)
    emit(FusionEvent("done", result=result))
    return result


async def _run_strategy(ctx: FusionContext, strategy: object, first: list[Candidate]) -> Outcome:
    from .strategies import Strategy

    assert isinstance(strategy, Strategy)
    threshold = ctx.request.skip_judge_on_consensus
    if strategy.uses_judge and threshold is not None:
        ok = [c for c in first if c.ok]
        measured = vote([c.text for c in ok]).agreement
        if measured >= threshold:
            outcome = ctx.vote_outcome(first)
            outcome.verdict.skipped = True
            outcome.final = first
            return outcome
    outcome = await strategy.run(ctx, first)
    return outcome


def _result(ctx: FusionContext, outcome: Outcome, started: float) -> FusionResult:
    wall = time.perf_counter() - started
    every: list[Candidate | Completion] = [c for rnd in ctx.history for c in rnd]
    every += ctx.judge_calls
    usage, cost, known = _totals(every)
    final = outcome.final or ctx.history[-1]
    measured = vote([c.text for c in final if c.ok]).agreement
    failed = [
        FailedModel(member=c.member, model=c.model, status=c.status, reason=c.error or c.status)
        for rnd in ctx.history
        for c in rnd
        if not c.ok
    ]
    return FusionResult(
        answer=outcome.answer,
        mode=ctx.request.mode,
        candidates=list(final),
        verdict=outcome.verdict,
        agreement=round(measured, 4),
        failed_models=failed,
        usage=usage,
        cost=round(cost, 8),
        cost_known=known,
        wall_time=wall,
        critical_path=ctx.critical_path,
        overhead=max(0.0, wall - ctx.critical_path),
        judge_calls=ctx.judge_calls,
        rounds=ctx.history if len(ctx.history) > 1 else [],
        tool_calls=outcome.tool_calls,
    )


async def fuse_events(
    request: FusionRequest,
    hub: ProviderHub | None = None,
    *,
    screen: Screen | None = None,
    adapt: Adapt | None = None,
) -> AsyncIterator[FusionEvent]:
    """Run a fusion and yield its events as they happen; the last one is ``done`` (with the result).

    Errors are raised from the iterator. Closing the iterator early cancels the run and every upstream call.
    """
    queue: asyncio.Queue[FusionEvent | BaseException | None] = asyncio.Queue()

    async def runner() -> None:
        try:
            await fuse(request, hub, on_event=queue.put_nowait, screen=screen, adapt=adapt)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(runner())
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
