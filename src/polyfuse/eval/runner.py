"""Run an evaluation: every item through every arm, scored, written to the results file as each finishes.

Per item, the pool is called once (the vote run records the calls); each single-model arm is one member's
answer from that round and each fusion mode replays the same round, so every arm is compared on the same
candidates. Then, for the equal-budget comparison, the best single model is sampled k times and voted.
Items run concurrently up to ``spec.concurrency``; anything already in the results file is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import AllMembersFailedError, FusionError
from ..fusion.engine import fuse
from ..fusion.request import FusionRequest
from ..providers.base import MemberSpec, parse_pool
from ..providers.registry import ProviderHub
from ..types import Candidate, FusionResult, Message
from . import replay
from .datasets import EvalItem
from .results import ArmKind, ArmResult, MemberOutcome, ResultsFile
from .scorers import Score, ScoringContext, get_scorer
from .spec import SC_ARM, EvalSpec, single_arm

__all__ = ["Evaluation", "SelfConsistencyPlan", "Progress"]

Progress = Callable[[int, int, str], None]  # (arms done, arms in total, what just finished)


@dataclass(frozen=True)
class SelfConsistencyPlan:
    member: MemberSpec  # the best single model, with its own options
    k: int
    reason: str  # how k was chosen, for the report


class Evaluation:
    def __init__(
        self, spec: EvalSpec, hub: ProviderHub, results: ResultsFile, progress: Progress | None = None
    ) -> None:
        self.spec = spec
        self.hub = hub
        self.results = results
        self.progress = progress
        grader = hub.model(spec.grader) if spec.grader else None
        self.scoring = ScoringContext(grader=grader, sandbox=spec.sandbox)
        self.sc_plan: SelfConsistencyPlan | None = None
        self._done = 0
        replay.install(hub)

    @property
    def total(self) -> int:
        items = len(self.spec.dataset.items)
        return items * len(self.spec.first_phase_arms()) + (items if self.spec.runs_self_consistency else 0)

    async def run(self) -> list[ArmResult]:
        self._done = len(self.results.results)
        self._tick("resumed" if self._done else "started")
        await self._each_item(self._first_phase)
        if self.spec.runs_self_consistency:
            self.sc_plan = plan_self_consistency(self.spec, list(self.results.results.values()))
            if self.sc_plan is not None:
                await self._each_item(self._self_consistency)
        return list(self.results.results.values())

    async def _each_item(self, work: Callable[[EvalItem], Awaitable[None]]) -> None:
        gate = asyncio.Semaphore(self.spec.concurrency)

        async def guarded(item: EvalItem) -> None:
            async with gate:
                await work(item)

        await asyncio.gather(*(guarded(item) for item in self.spec.dataset.items))

    def _tick(self, what: str) -> None:
        if self.progress is not None:
            self.progress(self._done, self.total, what)

    def _add(self, result: ArmResult) -> None:
        if not self.results.done(result.item, result.arm):
            self.results.add(result)
            self._done += 1
            self._tick(f"{result.item} {result.arm}")

    # -- one item through the single arms and the fusion modes --------------------------------------------------
    async def _first_phase(self, item: EvalItem) -> None:
        todo = [a for a in self.spec.first_phase_arms() if not self.results.done(item.id, a)]
        if not todo:
            return
        cache = replay.CallCache(self.results.rounds.get(item.id))
        replay.current_cache.set(cache)  # this task's context only: concurrent items keep their own
        scores = _ScoreCache(self, item)
        first = await self._fuse(item, "vote")
        if item.id not in self.results.rounds:
            self.results.add_round(item.id, cache.entries)
        for arm in self.spec.singles:
            if arm in todo:
                self._add(await self._single(item, arm.removeprefix("single:"), first, scores))
        for mode in self.spec.fusion_modes:
            if mode in todo:
                outcome = first if mode == "vote" else await self._fuse(item, mode)
                self._add(await _fusion_result(item, mode, "fusion", outcome, scores))

    def _request(self, item: EvalItem, mode: str, pool: list[MemberSpec]) -> FusionRequest:
        messages = [Message(role="user", content=item.prompt)]
        if self.spec.system:
            messages.insert(0, Message(role="system", content=self.spec.system))
        return FusionRequest(
            messages=messages,
            pool=pool,
            judge=self.spec.judge,
            mode=mode,
            rounds=self.spec.rounds,
            params=self.spec.params,
            judge_params=self.spec.judge_params,
            member_timeout=self.spec.member_timeout,
            judge_timeout=self.spec.judge_timeout,
            shuffle_seed=_stable_seed(self.spec.seed, item.id, mode),
        )

    async def _fuse(self, item: EvalItem, mode: str) -> FusionResult | FusionError:
        request = self._request(item, mode, replay.replay_pool(self.spec.pool))
        try:
            return await fuse(request, self.hub)
        except FusionError as exc:
            return exc

    async def _single(
        self, item: EvalItem, member: str, first: FusionResult | FusionError, scores: _ScoreCache
    ) -> ArmResult:
        arm = single_arm(member)
        cand = _member_candidate(first, member)
        if cand is None or not cand.ok:
            reason = cand.error if cand is not None else str(first)
            return ArmResult(
                item=item.id, arm=arm, kind="single", error=reason or "failed", detail="no answer"
            )
        score = await scores.get(cand.text)
        grader_tokens, grader_cost = scores.charge(cand.text)
        return ArmResult(
            item=item.id,
            arm=arm,
            kind="single",
            answer=cand.text,
            correct=score.correct,
            detail=score.detail,
            tokens=cand.usage.total_tokens,
            cost=cand.cost or 0.0,
            cost_known=cand.cost is not None,
            latency=round(cand.latency, 6),
            grader_tokens=grader_tokens,
            grader_cost=grader_cost,
        )

    # -- the equal-budget arm ---------------------------------------------------------------------------------
    async def _self_consistency(self, item: EvalItem) -> None:
        plan = self.sc_plan
        if plan is None or self.results.done(item.id, SC_ARM):
            return
        pool = parse_pool([_sample_spec(plan.member, i, self.spec.seed) for i in range(plan.k)])
        request = self._request(item, "vote", pool)
        try:
            outcome: FusionResult | FusionError = await fuse(request, self.hub)
        except FusionError as exc:
            outcome = exc
        self._add(await _fusion_result(item, SC_ARM, "sc", outcome, _ScoreCache(self, item)))


class _ScoreCache:
    """Scores of one item's answer texts: each distinct text is scored once (code runs, grader calls)."""

    def __init__(self, evaluation: Evaluation, item: EvalItem) -> None:
        self.item = item
        self.scoring = evaluation.scoring
        self.scorer = get_scorer(item.scorer)
        self.scores: dict[str, Score] = {}
        self._charged: set[str] = set()

    async def get(self, text: str) -> Score:
        if not text.strip():
            return Score(False, "empty answer")
        if text not in self.scores:
            self.scores[text] = await self.scorer.score(self.item.fields, text, self.scoring)
        return self.scores[text]

    def charge(self, text: str) -> tuple[int, float]:
        """The grader's (tokens, cost) for this text, counted for the first arm that asks only."""
        score = self.scores.get(text)
        if score is None or text in self._charged:
            return 0, 0.0
        self._charged.add(text)
        return score.grader_usage.total_tokens, score.grader_cost


def _member_candidate(first: FusionResult | FusionError, member: str) -> Candidate | None:
    if isinstance(first, FusionResult):
        return next((c for c in first.candidates if c.member == member), None)
    if isinstance(first, AllMembersFailedError) and member in first.reasons:
        return Candidate(member=member, model=member, status="failed", error=first.reasons[member])
    return None


async def _fusion_result(
    item: EvalItem, arm: str, kind: ArmKind, outcome: FusionResult | FusionError, scores: _ScoreCache
) -> ArmResult:
    if not isinstance(outcome, FusionResult):
        return ArmResult(item=item.id, arm=arm, kind=kind, error=str(outcome), detail="no answer")
    seen = [
        MemberOutcome(member=c.member, status=c.status, correct=c.ok and (await scores.get(c.text)).correct)
        for c in outcome.candidates
    ]
    score = await scores.get(outcome.answer)
    grader_tokens, grader_cost = scores.charge(outcome.answer)
    return ArmResult(
        item=item.id,
        arm=arm,
        kind=kind,
        answer=outcome.answer,
        correct=score.correct,
        detail=score.detail,
        tokens=outcome.usage.total_tokens,
        cost=outcome.cost,
        cost_known=outcome.cost_known,
        # Replayed members answer at once, so wall time alone would flatter fusion: the critical path counts
        # each round's slowest member and every judge call at their measured latencies.
        latency=round(max(outcome.wall_time, outcome.critical_path), 6),
        candidates=seen,
        chosen=outcome.verdict.choice,
        judge_failed=outcome.judge_failed,
        grader_tokens=grader_tokens,
        grader_cost=grader_cost,
    )


def _stable_seed(seed: int, *parts: str) -> int:
    """The judge's candidate order per item and mode: shuffled, but the same on every run and resume."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _sample_spec(member: MemberSpec, index: int, seed: int) -> MemberSpec:
    params = dict(member.params)
    params["seed"] = int(params.get("seed", seed)) + 1000 + index  # not the single arm's own sample
    params.setdefault("temperature", 0.7)
    return MemberSpec(model=member.model, id=member.model, params=params)


def plan_self_consistency(spec: EvalSpec, results: list[ArmResult]) -> SelfConsistencyPlan | None:
    """The best single model (accuracy, then fewer tokens) and k: ``spec.sc_k``, or the best fusion mode's
    mean tokens per item over the single model's, rounded, between 2 and 16."""
    from .metrics import arm_metrics  # the figures the report shows decide the plan too

    metrics = {m.arm: m for m in arm_metrics(results)}
    singles = [metrics[a] for a in spec.singles if a in metrics]
    if not singles:
        singles = [m for m in metrics.values() if m.kind == "single"]
    if not singles:
        return None
    best = min(singles, key=lambda m: (-m.accuracy, m.tokens_mean))
    member = next(s for s in spec.pool if single_arm(s.id) == best.arm)
    if spec.sc_k is not None:
        return SelfConsistencyPlan(member, spec.sc_k, f"k = {spec.sc_k} as asked")
    fused = [metrics[m] for m in spec.fusion_modes if m in metrics]
    ref = min(fused, key=lambda m: (-m.accuracy, m.tokens_mean))
    ratio = ref.tokens_mean / best.tokens_mean if best.tokens_mean else 2.0
    k = max(2, min(16, round(ratio)))
    reason = (
        f"k = {k}: {ref.arm} used {ref.tokens_mean:.0f} tokens per item, {best.arm.removeprefix('single:')} "
        f"{best.tokens_mean:.0f}"
    )
    return SelfConsistencyPlan(member, k, reason)
