"""The evaluation report: metrics per arm, the equal-budget comparison and the recommendation, as data (JSON)
and as a terminal table. The HTML version is in ``html.py``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from .datasets import Dataset
from .metrics import ArmMetrics, Paired, arm_metrics, best_single, sign_test
from .recommend import recommend
from .results import ArmResult
from .runner import SelfConsistencyPlan
from .spec import SC_ARM, EvalSpec

__all__ = ["EvalReport", "EqualBudget", "build_report", "render_table", "render_judge_table", "summary_lines"]


@dataclass
class EqualBudget:
    """The best single model sampled k times and voted, against the best fusion mode, on the same items."""

    model: str
    k: int
    reason: str
    fusion_arm: str
    fusion_accuracy: float
    fusion_tokens_mean: float
    sc_accuracy: float
    sc_tokens_mean: float
    paired: Paired


@dataclass
class EvalReport:
    dataset: dict[str, Any]
    config: dict[str, Any]
    arms: list[ArmMetrics]
    best_single: str | None
    pool_oracle: float | None
    equal_budget: EqualBudget | None
    grader: dict[str, Any] | None
    recommendation: str
    recommended_arm: str | None
    fusion_pays: bool
    complete: bool
    notes: list[str] = field(default_factory=list)
    recommended_judge: str | None = None
    recommended_judge_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arms"] = [m.to_dict() for m in self.arms]
        return data

    def arm(self, name: str) -> ArmMetrics:
        return next(m for m in self.arms if m.arm == name)


def _pool_oracle(results: list[ArmResult]) -> float | None:
    singles = [r for r in results if r.kind == "single"]
    items = {r.item for r in singles}
    if not items:
        return None
    right = {r.item for r in singles if r.correct}
    return len(right) / len(items)


def _equal_budget(
    metrics: list[ArmMetrics], results: list[ArmResult], plan: SelfConsistencyPlan | None
) -> EqualBudget | None:
    sc = next((m for m in metrics if m.arm == SC_ARM), None)
    fused = [m for m in metrics if m.kind == "fusion"]
    if plan is None or sc is None or not fused:
        return None
    top = min(fused, key=lambda m: (-m.accuracy, m.tokens_mean))
    fusion_right = {r.item: r.correct for r in results if r.arm == top.arm}
    pairs = [(r.correct, fusion_right[r.item]) for r in results if r.arm == SC_ARM and r.item in fusion_right]
    wins = sum(a and not b for a, b in pairs)
    losses = sum(b and not a for a, b in pairs)
    return EqualBudget(
        model=plan.member.id,
        k=plan.k,
        reason=plan.reason,
        fusion_arm=top.arm,
        fusion_accuracy=top.accuracy,
        fusion_tokens_mean=top.tokens_mean,
        sc_accuracy=sc.accuracy,
        sc_tokens_mean=sc.tokens_mean,
        paired=Paired(top.arm, len(pairs), wins, losses, sign_test(wins, losses)),
    )


def build_report(
    spec: EvalSpec, dataset: Dataset, results: list[ArmResult], plan: SelfConsistencyPlan | None
) -> EvalReport:
    order = [*spec.first_phase_arms(), SC_ARM]
    metrics = arm_metrics(results, order)
    best = best_single(metrics)
    advice = recommend(metrics)
    expected = len(dataset.items) * len(spec.first_phase_arms()) + (len(dataset.items) if plan else 0)
    grader = None
    notes = []
    if spec.grader:
        grader = {
            "model": spec.grader,
            "tokens": sum(r.grader_tokens for r in results),
            "cost": sum(r.grader_cost for r in results),
        }
        notes.append(
            f"answers were graded by {spec.grader} against a rubric (LLM-as-judge): its verdicts are a model's "
            "opinion, and its tokens and cost are not counted in the arms'"
        )
    inferred = dataset.inferred_scorers
    if inferred:
        counts: dict[str, int] = {}
        for name in inferred.values():
            counts[name] = counts.get(name, 0) + 1
        listed = ", ".join(f"{name} for {n} item(s)" for name, n in sorted(counts.items()))
        notes.append(
            f"scorers inferred per item (no 'scorer' field): {listed}; report.json lists each item's "
            "(dataset.item_scorers)"
        )
    if any(m.latency_median is not None for m in metrics) and any(r.kind == "fusion" for r in results):
        notes.append(
            "fusion latency is the critical path (each round's slowest member plus every judge call) at the "
            "latencies measured when the pool answered; members running on this machine share its cores"
        )
    return EvalReport(
        dataset={
            "name": dataset.name,
            "source": dataset.source,
            "items": len(dataset.items),
            "skipped": [{"line": s.line, "reason": s.reason} for s in dataset.skipped],
            "scorers": dataset.scorers,
            "item_scorers": {i.id: i.scorer for i in dataset.items},
            "inferred_scorers": inferred,
        },
        config={k: v for k, v in spec.header().items() if k not in ("dataset", "version")},
        arms=metrics,
        best_single=best.arm if best else None,
        pool_oracle=_pool_oracle(results),
        equal_budget=_equal_budget(metrics, results, plan),
        grader=grader,
        recommendation=advice.text,
        recommended_arm=advice.arm,
        fusion_pays=advice.fusion_pays,
        complete=len(results) >= expected,
        notes=notes,
        recommended_judge=advice.judge,
        recommended_judge_method=advice.judge_method,
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}s"


def _money(x: float | None, known: bool = True) -> str:
    if x is None:
        return "-"
    return f"${x:.4f}" + ("" if known else "+?")


def render_table(report: EvalReport) -> Table:
    title = f"{report.dataset['name']}: {report.dataset['items']} items"
    table = Table(title=title, box=None, header_style="bold", title_justify="left")
    columns = ("arm", "accuracy [95% CI]", "oracle", "judge acc", "lost", "vs best single", "tokens/item",
               "cost", "cost/correct", "latency p50/p90", "errors")  # fmt: skip
    for col in columns:
        table.add_column(col)
    for m in report.arms:
        p = m.vs_best_single
        versus = (
            "best"
            if m.arm == report.best_single
            else (f"+{p.wins}/-{p.losses} p={p.p_value:.2g}" if p else "-")
        )
        table.add_row(
            m.arm,
            f"{_pct(m.accuracy)} [{_pct(m.ci_low)}-{_pct(m.ci_high)}]",
            _pct(m.oracle),
            _pct(m.judge_accuracy),
            "-" if m.lost is None else str(m.lost),
            versus,
            f"{m.tokens_mean:.0f}",
            _money(m.cost_total, m.cost_known),
            _money(m.cost_per_correct),
            f"{_secs(m.latency_median)}/{_secs(m.latency_p90)}",
            str(m.errors),
        )
    return table


def render_judge_table(report: EvalReport) -> Table | None:
    """The judges side by side (arms that used one): how well each judge and method chose."""
    judged = [m for m in report.arms if m.judge is not None]
    if not judged:
        return None
    table = Table(title="judges", box=None, header_style="bold", title_justify="left")
    for col in ("arm", "judge", "method (used)", "accuracy", "judge acc", "position bias", "brier",
                "judge tokens/item", "writer rejected"):  # fmt: skip
        table.add_column(col)
    for m in judged:
        bias = "-" if m.position_bias is None else f"{_pct(m.position_bias)} ({m.position_probed})"
        table.add_row(
            m.arm,
            m.judge or "-",
            f"{m.judge_method or '-'}"
            + (f" ({m.method})" if m.method and m.method != m.judge_method else ""),
            _pct(m.accuracy),
            _pct(m.judge_accuracy),
            bias,
            "-" if m.brier is None else f"{m.brier:.3f}",
            f"{m.judge_tokens_mean or 0:.0f}",
            str(m.writer_rejected),
        )
    return table


def summary_lines(report: EvalReport) -> list[str]:
    """What follows the table: skipped lines, oracle, equal budget, grader, notes, and the recommendation."""
    lines = []
    skipped = report.dataset["skipped"]
    if skipped:
        first = "; ".join(f"line {s['line']}: {s['reason']}" for s in skipped[:3])
        lines.append(f"skipped {len(skipped)} malformed line(s): {first}{' ...' if len(skipped) > 3 else ''}")
    if report.pool_oracle is not None:
        lines.append(f"pool oracle (some member right): {_pct(report.pool_oracle)}")
    eb = report.equal_budget
    if eb is not None:
        lines.append(
            f"equal budget: {eb.model} x{eb.k} with voting {_pct(eb.sc_accuracy)} at {eb.sc_tokens_mean:.0f} "
            f"tokens/item vs {eb.fusion_arm} {_pct(eb.fusion_accuracy)} at {eb.fusion_tokens_mean:.0f} "
            f"({eb.paired.wins} wins / {eb.paired.losses} losses for self-consistency, p={eb.paired.p_value:.2g}; "
            f"{eb.reason})"
        )
    if report.grader:
        g = report.grader
        lines.append(
            f"grader {g['model']}: {g['tokens']} tokens, ${g['cost']:.4f} (not in the arms' figures)"
        )
    lines.extend(f"note: {n}" for n in report.notes)
    if not report.complete:
        lines.append("incomplete: some items or arms have not run yet; run the same command again to resume")
    lines.append(f"recommendation: {report.recommendation}")
    return lines
